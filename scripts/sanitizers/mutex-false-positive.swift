// Why ThreadSanitizer reports races at every `Mutex.withLock` on Linux (Swift 6.3.1): the lock
// of the standard library's Synchronization module is a futex driven by atomics inside
// libswiftSynchronization.so, which is not built with TSan, so TSan never sees the lock taken
// and calls the accesses it guards a race. Two threads append under one Mutex; the count is
// right, and TSan still reports:
//
//   swiftc -sanitize=thread -g scripts/sanitizers/mutex-false-positive.swift -o /tmp/mutex-tsan
//   /tmp/mutex-tsan   # WARNING: ThreadSanitizer: Swift access race … count 20000
//
// scripts/tsan-triage.py sets such reports apart (both accesses inside a withLock closure) and
// fails the run on any other.
import Synchronization
import Foundation

final class Box: Sendable {
    let state = Mutex<[Int]>([])
}
let box = Box()
let threads = (0..<2).map { n in
    Thread {
        for i in 0..<10_000 { box.state.withLock { $0.append(i + n) } }
    }
}
threads.forEach { $0.start() }
while box.state.withLock({ $0.count }) < 20_000 { usleep(1000) }
print("count", box.state.withLock { $0.count })
