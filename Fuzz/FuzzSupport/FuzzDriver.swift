import CFuzzer
import Foundation
import Synchronization

/// The target's check, set once by `runFuzzer` before libFuzzer starts and only read after:
/// libFuzzer calls back on the thread that started it, one input at a time.
nonisolated(unsafe) private var target: ([UInt8]) -> Void = { _ in }

/// libFuzzer's callback: one input.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    target(data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? [])
    return 0
}

/// Runs libFuzzer with the process's arguments, `check` called on every input, and exits with
/// its status. A target's `main.swift` is this one call.
public func runFuzzer(_ check: @escaping ([UInt8]) -> Void) -> Never {
    target = check
    var argc = CommandLine.argc
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
    exit(LLVMFuzzerRunDriver(&argc, &argv, fuzzOneInput))
}

/// Traps with `message` when `condition` is false, so that libFuzzer saves the input as a crash.
public func fuzzCheck(
    _ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String,
    file: StaticString = #fileID, line: UInt = #line
) {
    if !condition() {
        FileHandle.standardError.write(Data("property failed at \(file):\(line): \(message())\n".utf8))
        fatalError("fuzz property failed", file: file, line: line)
    }
}

/// Runs async `body` to its end from the fuzzer's thread (not one of Swift's pool).
public func blocking<T: Sendable>(_ body: @escaping @Sendable () async -> T) -> T {
    let done = DispatchSemaphore(value: 0)
    let result = Mutex<T?>(nil)
    Task {
        let value = await body()
        result.withLock { $0 = value }
        done.signal()
    }
    done.wait()
    return result.withLock { $0! }
}
