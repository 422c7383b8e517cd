import CTidingsEpoll
import Glibc
import NIOCore
import NIOPosix
import Synchronization

/// How one subscriber connects: its request path (below the gateway's base path), token and
/// transport.
struct SubscriberSpec: Sendable {
    /// `/events…`, `/ws…` or `/poll…`; the base path of the gateway the stream goes to is put in front.
    var path: String
    var token: String?
    var transport: Transport = .sse
}

/// A gateway the streams go to, with its address resolved once.
struct StreamTarget: Sendable {
    var endpoint: Endpoint
    var address: SocketAddress
}

/// Why a stream could not be opened.
struct StreamOpenError: Error, CustomStringConvertible {
    var description: String
}

/// The streams of one load-generator thread (SSE, WebSocket or long-poll), read with `epoll`
/// and `read` directly.
///
/// A load tool must cost less per received event than the server does per sent one, or its
/// latency figures measure the tool. Through NIO each received event cost about 8.5 µs here, 40%
/// of it channel pipeline and reference counting; this loop reads each ready socket once into
/// one shared buffer and scans it in place, with per-stream state in flat arrays indexed by
/// descriptor: no allocation, task or reference count per event.
///
/// Streams are opened, closed and inspected from other threads with ``execute(_:)`` and
/// ``submit(_:)``, whose closures run on the loop's thread; everything else here is confined to
/// that thread. A stream the server ends is reopened after `reconnectDelay` with
/// `Last-Event-ID` (`last_event_id` for WebSockets and polls), as a browser would, while the
/// loop is active.
///
/// A WebSocket stream opens with `101`, its server pings are answered with masked pongs, and a
/// close frame ends it like a dropped connection. A long-poll stream opens with the first `200`
/// answer; each answer's events are counted when it is complete and the next poll, with the
/// answer's `last_event_id`, goes out at once on the same connection.
final class StreamLoop: @unchecked Sendable {
    /// What one stream is doing; its reader and scanner live in arrays of their own.
    private struct Slot {
        var inUse = false
        var connecting = false
        var isOpen = false
        var failed = false
        var index = 0
        var status = 0
        var transport = Transport.sse
        /// Bytes to send (the request, then pongs or the next poll) and how many went out.
        var request: [UInt8] = []
        var requestSent = 0
        /// EPOLLOUT is registered (while connecting and while `request` is not all sent).
        var writing = true
        /// Long poll: the parts of the next request, and the answer's last body part so far,
        /// still in the read buffer.
        var poll: RequestWriter.PollRequest?
        var spec: SubscriberSpec?
        var resumedFrom: Int64?
        var errorBody: [UInt8] = []
        var onOpen: ((Result<Void, StreamOpenError>) -> Void)?
    }

    let stats = LoopStats()
    /// Reopen streams the server ends (with Last-Event-ID).
    let reconnect: Bool
    /// Called for every event of every stream of this loop (the replay scenario uses it).
    var observer: ((Int, ScannedEvent) -> Void)?
    private(set) var active = true

    private static let headTimeoutNanos: UInt64 = 30_000_000_000
    private static let reconnectDelayNanos: UInt64 = 1_000_000_000
    private static let readSize = 64 * 1024
    private static let maxEvents: Int32 = 1024

    /// The gateways, each with its resolved address: stream `index` goes to
    /// `targets[index % targets.count]` (reopened streams too).
    private let targets: [StreamTarget]
    private let epoll: CInt
    private let wakeRead: CInt
    private let wakeWrite: CInt
    private let inbox = Mutex<[@Sendable (StreamLoop) -> Void]>([])
    private let thread = NIOThreadPool(numberOfThreads: 1)
    private var running = true

    // Per descriptor: `capacity` initialised entries each.
    private var capacity = 0
    private var slots: UnsafeMutablePointer<Slot>
    private var readers: UnsafeMutablePointer<HTTPResponseReader>
    private var scanners: UnsafeMutablePointer<SSEScanner>
    private var webSockets: UnsafeMutablePointer<WebSocketScanner>
    private var polls: UnsafeMutablePointer<PollScanner>
    private let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: readSize, alignment: 16)

    /// Open streams by index.
    private var live: [Int: CInt] = [:]
    /// Streams without their response head yet, with their deadline.
    private var awaitingHead: [CInt: UInt64] = [:]
    private var sweepScheduled = false
    private var timers: [(deadline: UInt64, action: () -> Void)] = []
    private var nextDeadline = UInt64.max

    init(targets: [StreamTarget], reconnect: Bool = true) throws {
        precondition(!targets.isEmpty, "a stream loop needs a gateway")
        self.targets = targets
        self.reconnect = reconnect
        epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard epoll >= 0 else { throw BenchError("epoll_create1: \(String(cString: strerror(errno)))") }
        var pipeEnds: [CInt] = [-1, -1]
        guard pipe(&pipeEnds) == 0 else { throw BenchError("pipe: \(String(cString: strerror(errno)))") }
        for end in pipeEnds {
            _ = fcntl(end, F_SETFL, fcntl(end, F_GETFL) | O_NONBLOCK)
            _ = fcntl(end, F_SETFD, FD_CLOEXEC)
        }
        wakeRead = pipeEnds[0]
        wakeWrite = pipeEnds[1]
        slots = .allocate(capacity: 0)
        readers = .allocate(capacity: 0)
        scanners = .allocate(capacity: 0)
        webSockets = .allocate(capacity: 0)
        polls = .allocate(capacity: 0)
        var event = epoll_event()
        event.events = EPOLLIN.rawValue
        event.data.fd = wakeRead
        _ = epoll_ctl(epoll, EPOLL_CTL_ADD, wakeRead, &event)
        thread.start()
        thread.submit { [self] _ in run() }
    }

    // MARK: - From any thread

    /// Runs `work` on the loop's thread.
    func execute(_ work: @escaping @Sendable (StreamLoop) -> Void) {
        inbox.withLock { $0.append(work) }
        var byte: UInt8 = 1
        _ = write(wakeWrite, &byte, 1)
    }

    /// Runs `work` on the loop's thread and returns its result.
    func submit<T: Sendable>(_ work: @escaping @Sendable (StreamLoop) -> T) async -> T {
        await withCheckedContinuation { continuation in
            execute { loop in continuation.resume(returning: work(loop)) }
        }
    }

    /// Opens `streams` (spec and index); returns how many got their `200` head and how many failed.
    func open(_ streams: [(SubscriberSpec, Int)], lastEventID: Int64?) async -> (opened: Int, failed: Int) {
        guard !streams.isEmpty else { return (0, 0) }
        return await withCheckedContinuation { continuation in
            execute { loop in
                var pending = streams.count
                var opened = 0
                for (spec, index) in streams {
                    loop.open(spec, index: index, lastEventID: lastEventID) { result in
                        if case .success = result { opened += 1 }
                        pending -= 1
                        if pending == 0 { continuation.resume(returning: (opened, streams.count - opened)) }
                    }
                }
            }
        }
    }

    /// Closes every stream and ends the thread.
    func shutdown() async {
        await submit { loop in
            loop.closeAll()
            loop.running = false
        }
        try? await thread.shutdownGracefully()
    }

    // MARK: - On the loop's thread

    /// Opens one stream; `done` is called once, when its `200` (`101`) head arrives or it fails.
    func open(
        _ spec: SubscriberSpec, index: Int, lastEventID: Int64? = nil,
        done: @escaping (Result<Void, StreamOpenError>) -> Void = { _ in }
    ) {
        let target = targets[index % targets.count]
        let family = target.address.protocol == .inet6 ? AF_INET6 : AF_INET
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else {
            let message = "connect: socket: \(String(cString: strerror(errno)))"
            stats.recordFailure(.connect)
            stats.lifetime.lastError = message
            done(.failure(StreamOpenError(description: message)))
            return
        }
        var one: CInt = 1
        _ = setsockopt(fd, CInt(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<CInt>.size))
        reserve(Int(fd) + 1)
        let path = target.endpoint.basePath + spec.path
        let request = RequestWriter.subscribe(
            path: path, host: target.endpoint.hostHeader, token: spec.token, lastEventID: lastEventID,
            transport: spec.transport, allocator: ByteBufferAllocator())
        slots[Int(fd)] = Slot(
            inUse: true, connecting: true, index: index, transport: spec.transport, request: Array(request.readableBytesView),
            poll: spec.transport == .poll ? RequestWriter.pollRequest(path: path, host: target.endpoint.hostHeader, token: spec.token) : nil,
            spec: spec, resumedFrom: lastEventID, onOpen: done)
        readers[Int(fd)] = HTTPResponseReader()
        switch spec.transport {
        case .sse: scanners[Int(fd)] = SSEScanner()
        case .ws: webSockets[Int(fd)] = WebSocketScanner()
        case .poll: polls[Int(fd)] = PollScanner()
        }
        live[index] = fd
        awaitingHead[fd] = MeasurementWindow.now + Self.headTimeoutNanos
        scheduleSweep()
        var event = epoll_event()
        event.events = EPOLLIN.rawValue | EPOLLOUT.rawValue | EPOLLRDHUP.rawValue
        event.data.fd = fd
        _ = epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event)
        let result = target.address.withSockAddr { connect(fd, $0, socklen_t($1)) }
        if result != 0, errno != EINPROGRESS {
            failConnect(fd, errno)
        }
    }

    /// Stops reconnecting and closes every stream.
    func closeAll() {
        active = false
        let descriptors = Array(live.values)
        live.removeAll()
        for fd in descriptors { teardown(fd) }
    }

    /// Closes stream `index` without reopening it.
    func close(index: Int) {
        guard let fd = live.removeValue(forKey: index) else { return }
        teardown(fd)
    }

    /// True while stream `index` is open (its response head came and it has not ended).
    func isOpen(index: Int) -> Bool {
        guard let fd = live[index] else { return false }
        return slots[Int(fd)].isOpen
    }

    /// Runs `action` on this thread after `nanoseconds`.
    func schedule(in nanoseconds: UInt64, _ action: @escaping () -> Void) {
        let deadline = MeasurementWindow.now + nanoseconds
        timers.append((deadline, action))
        nextDeadline = min(nextDeadline, deadline)
    }

    private func run() {
        let events = UnsafeMutablePointer<epoll_event>.allocate(capacity: Int(Self.maxEvents))
        defer { events.deallocate() }
        while running {
            let count = epoll_wait(epoll, events, Self.maxEvents, waitMilliseconds())
            if count < 0, errno != EINTR { fatalError("epoll_wait: \(String(cString: strerror(errno)))") }
            var woken = false
            for item in 0..<Int(max(0, count)) {
                let fd = events[item].data.fd
                if fd == wakeRead {
                    woken = true
                } else {
                    handle(fd, events[item].events)
                }
            }
            // Sockets are opened only after the batch: a descriptor closed in it and reused by a
            // new stream must not receive the rest of the batch's events for the old one.
            if woken { runInbox() }
            if nextDeadline != .max { runTimers() }
        }
        cleanUp()
    }

    private func waitMilliseconds() -> Int32 {
        guard nextDeadline != .max else { return -1 }
        let now = MeasurementWindow.now
        guard nextDeadline > now else { return 0 }
        return Int32(min(60_000, (nextDeadline - now + 999_999) / 1_000_000))
    }

    private func runInbox() {
        var byte: UInt8 = 0
        while read(wakeRead, &byte, 1) > 0 {}
        let work = inbox.withLock { queued in
            let work = queued
            queued.removeAll()
            return work
        }
        for item in work { item(self) }
    }

    private func runTimers() {
        let now = MeasurementWindow.now
        guard now >= nextDeadline else { return }
        var due: [() -> Void] = []
        var next = UInt64.max
        timers.removeAll { timer in
            if timer.deadline <= now {
                due.append(timer.action)
                return true
            }
            next = min(next, timer.deadline)
            return false
        }
        nextDeadline = next
        for action in due { action() }
    }

    private func scheduleSweep() {
        guard !sweepScheduled else { return }
        sweepScheduled = true
        schedule(in: 1_000_000_000) { [self] in
            sweepScheduled = false
            let now = MeasurementWindow.now
            for (fd, deadline) in awaitingHead where deadline <= now {
                if slots[Int(fd)].connecting {
                    failConnect(fd, ETIMEDOUT)
                } else {
                    fail(fd, .protocolError, "no response head within 30 s")
                }
            }
            if !awaitingHead.isEmpty { scheduleSweep() }
        }
    }

    // MARK: - Per stream

    @inline(__always)
    private func handle(_ fd: CInt, _ flags: UInt32) {
        let slot = slots + Int(fd)
        guard slot.pointee.inUse else { return }
        if slot.pointee.connecting {
            // The connect finished one way or the other (a refused one may report only ERR/HUP).
            guard flags & (EPOLLOUT.rawValue | EPOLLERR.rawValue | EPOLLHUP.rawValue) != 0 else { return }
            var error: CInt = 0
            var length = socklen_t(MemoryLayout<CInt>.size)
            _ = getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length)
            if error != 0 || flags & EPOLLOUT.rawValue == 0 {
                failConnect(fd, error != 0 ? error : ECONNREFUSED)
                return
            }
            slot.pointee.connecting = false
        }
        if flags & EPOLLOUT.rawValue != 0, slot.pointee.requestSent < slot.pointee.request.count {
            flush(fd)
            guard slot.pointee.inUse else { return }
        }
        if flags & (EPOLLIN.rawValue | EPOLLRDHUP.rawValue | EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0 {
            readAvailable(fd)
        }
    }

    /// Sends what `request` holds; waits for EPOLLOUT while some of it cannot go yet.
    private func flush(_ fd: CInt) {
        let slot = slots + Int(fd)
        guard slot.pointee.requestSent < slot.pointee.request.count else { return }
        let sent = slot.pointee.request.withUnsafeBytes { bytes in
            Glibc.send(fd, bytes.baseAddress! + slot.pointee.requestSent, bytes.count - slot.pointee.requestSent, Int32(MSG_NOSIGNAL))
        }
        if sent < 0, errno != EAGAIN, errno != EINTR {
            fail(fd, .protocolError, "send: \(String(cString: strerror(errno)))")
            return
        }
        slot.pointee.requestSent += max(0, sent)
        let done = slot.pointee.requestSent == slot.pointee.request.count
        if done {
            slot.pointee.requestSent = 0
            if slot.pointee.transport == .poll {
                slot.pointee.request.removeAll(keepingCapacity: true)  // the next poll reuses it
            } else {
                slot.pointee.request = []
            }
        }
        guard done == slot.pointee.writing else { return }
        slot.pointee.writing = !done
        var event = epoll_event()
        event.events = EPOLLIN.rawValue | EPOLLRDHUP.rawValue | (done ? 0 : EPOLLOUT.rawValue)
        event.data.fd = fd
        _ = epoll_ctl(epoll, EPOLL_CTL_MOD, fd, &event)
    }

    /// One `read` per readiness (epoll is level-triggered: what is left wakes it again).
    @inline(__always)
    private func readAvailable(_ fd: CInt) {
        let count = read(fd, buffer.baseAddress, Self.readSize)
        if count > 0 {
            received(fd, UnsafeRawBufferPointer(start: buffer.baseAddress, count: count))
        } else if count == 0 {
            teardown(fd)
        } else if errno != EAGAIN, errno != EINTR {
            let message = "read: \(String(cString: strerror(errno)))"
            if slots[Int(fd)].isOpen {
                teardown(fd)
            } else {
                fail(fd, .protocolError, message)
            }
        }
    }

    @inline(__always)
    private func received(_ fd: CInt, _ bytes: UnsafeRawBufferPointer) {
        let slot = slots + Int(fd)
        let stats = self.stats
        let observer = self.observer
        let index = slot.pointee.index
        let transport = slot.pointee.transport
        let openStatus = transport.openStatus
        var now: UInt64 = 0
        // A local function, not a closure value: it is never escaping, so `now` stays on the stack.
        func record(_ event: ScannedEvent) {
            if now == 0 { now = MeasurementWindow.now }
            stats.recordEvent(event, now: now)
            observer?(index, event)
        }
        /// Long poll: the answer's last body part seen, still in `bytes`.
        var pollPart: UnsafeRawBufferPointer?
        var broken: String?
        var closedWith: UInt16??
        var answerPing = false
        do {
            try readers[Int(fd)].feed(bytes) { part in
                switch part {
                case .head(let code):
                    slot.pointee.status = code
                    if code == openStatus, !slot.pointee.isOpen {
                        slot.pointee.isOpen = true
                        stats.openStreams += 1
                        awaitingHead[fd] = nil
                        complete(slot, .success(()))
                    }
                case .body(let body):
                    if slot.pointee.isOpen, slot.pointee.status == openStatus {
                        switch transport {
                        case .sse:
                            scanners[Int(fd)].scan(body, record)
                        case .ws:
                            guard broken == nil, closedWith == nil else { return }
                            do {
                                try webSockets[Int(fd)].scan(body) { output in
                                    switch output {
                                    case .event(let event):
                                        record(event)
                                    case .ping(let payload):
                                        WebSocketFrameWriter.appendPong(echoing: payload, mask: .random(in: .min ... .max), to: &slot.pointee.request)
                                        answerPing = true
                                    case .close(let code):
                                        closedWith = .some(code)
                                    }
                                }
                            } catch {
                                broken = "\(error)"
                            }
                        case .poll:
                            if let earlier = pollPart { polls[Int(fd)].append(earlier) }
                            pollPart = body
                        }
                    } else if slot.pointee.errorBody.count < 300 {
                        slot.pointee.errorBody.append(contentsOf: body.prefix(300 - slot.pointee.errorBody.count))
                    }
                case .end:
                    guard transport == .poll, slot.pointee.isOpen, slot.pointee.status == 200 else { return }
                    do {
                        try polls[Int(fd)].finish(tail: pollPart ?? UnsafeRawBufferPointer(start: nil, count: 0), record)
                    } catch {
                        broken = "\(error)"
                    }
                    pollPart = nil
                }
            }
        } catch {
            fail(fd, .protocolError, "\(error)")
            return
        }
        if let pollPart { polls[Int(fd)].append(pollPart) }  // the rest of the answer comes later
        if let broken {
            fail(fd, .protocolError, broken)
            return
        }
        if let closedWith {
            // Answer the close (best effort) and go: like a dropped stream, reopened with the last id.
            WebSocketFrameWriter.appendClose(code: closedWith, mask: .random(in: .min ... .max), to: &slot.pointee.request)
            flush(fd)
            stats.lifetime.lastError = "the server closed the WebSocket" + (closedWith.map { " with \($0)" } ?? "")
            teardown(fd)
            return
        }
        if answerPing {
            flush(fd)
            guard slot.pointee.inUse else { return }
        }
        guard readers[Int(fd)].isDone else { return }
        if transport == .poll, slot.pointee.isOpen {
            if slot.pointee.status == 200 {
                // Poll again at once from the answer's position.
                readers[Int(fd)].reset()
                if let poll = slot.pointee.poll {
                    RequestWriter.appendPoll(poll, lastEventID: polls[Int(fd)].lastID, to: &slot.pointee.request)
                    flush(fd)
                }
            } else {
                stats.recordFailure(.status(slot.pointee.status))
                stats.lifetime.lastError = statusMessage(slot)
                teardown(fd)  // reopened after the delay, like an ended stream
            }
        } else if slot.pointee.isOpen {
            teardown(fd)  // the server ended the stream: reopen it
        } else {
            fail(fd, .status(slot.pointee.status), statusMessage(slot))
        }
    }

    private func statusMessage(_ slot: UnsafeMutablePointer<Slot>) -> String {
        "HTTP \(slot.pointee.status): \(String(decoding: slot.pointee.errorBody, as: UTF8.self))"
    }

    private func complete(_ slot: UnsafeMutablePointer<Slot>, _ result: Result<Void, StreamOpenError>) {
        guard let done = slot.pointee.onOpen else { return }
        slot.pointee.onOpen = nil
        done(result)
    }

    private func failConnect(_ fd: CInt, _ error: CInt) {
        let slot = slots + Int(fd)
        guard slot.pointee.inUse, !slot.pointee.failed else { return }
        slot.pointee.failed = true
        let message = "connect: \(String(cString: strerror(error)))"
        stats.recordFailure(.connect)
        stats.lifetime.lastError = message
        complete(slot, .failure(StreamOpenError(description: message)))
        teardown(fd)
    }

    private func fail(_ fd: CInt, _ failure: LoopStats.Failure, _ message: String) {
        let slot = slots + Int(fd)
        guard slot.pointee.inUse, !slot.pointee.failed else { return }
        slot.pointee.failed = true
        stats.recordFailure(failure)
        stats.lifetime.lastError = message
        complete(slot, .failure(StreamOpenError(description: message)))
        teardown(fd)
    }

    /// Closes the socket and settles the stream: a failure if it never opened, a reconnect if
    /// it was open and not closed on purpose.
    private func teardown(_ fd: CInt) {
        let slot = slots + Int(fd)
        guard slot.pointee.inUse else { return }
        Glibc.close(fd)
        awaitingHead[fd] = nil
        let index = slot.pointee.index
        var unexpected = false
        if live[index] == fd {
            live[index] = nil
            unexpected = true
        }
        if slot.pointee.isOpen {
            stats.openStreams -= 1
            if unexpected, let spec = slot.pointee.spec {
                ended(spec, index: index, lastEventID: lastID(fd) ?? slot.pointee.resumedFrom)
            }
        } else if !slot.pointee.failed {
            slot.pointee.failed = true
            let message = slot.pointee.status != 0 ? statusMessage(slot) : "the connection closed before a response"
            stats.recordFailure(slot.pointee.status != 0 ? .status(slot.pointee.status) : .protocolError)
            stats.lifetime.lastError = message
            complete(slot, .failure(StreamOpenError(description: message)))
        }
        slot.pointee = Slot()
    }

    /// The last event id stream `fd` received.
    private func lastID(_ fd: CInt) -> Int64? {
        switch slots[Int(fd)].transport {
        case .sse: scanners[Int(fd)].lastID
        case .ws: webSockets[Int(fd)].lastID
        case .poll: polls[Int(fd)].lastID
        }
    }

    /// A stream that was open ended while the loop is active: count it and reopen it.
    private func ended(_ spec: SubscriberSpec, index: Int, lastEventID: Int64?) {
        guard active else { return }
        stats.recordFailure(.disconnect)
        guard reconnect else { return }
        schedule(in: Self.reconnectDelayNanos) { [self] in
            guard active else { return }
            open(spec, index: index, lastEventID: lastEventID)
        }
    }

    /// Makes room for descriptors below `count`.
    private func reserve(_ count: Int) {
        guard count > capacity else { return }
        let grown = max(count, capacity * 2, 1024)
        slots = Self.grow(slots, from: capacity, to: grown, filler: Slot())
        readers = Self.grow(readers, from: capacity, to: grown, filler: HTTPResponseReader())
        scanners = Self.grow(scanners, from: capacity, to: grown, filler: SSEScanner())
        webSockets = Self.grow(webSockets, from: capacity, to: grown, filler: WebSocketScanner())
        polls = Self.grow(polls, from: capacity, to: grown, filler: PollScanner())
        capacity = grown
    }

    private static func grow<T>(_ old: UnsafeMutablePointer<T>, from: Int, to: Int, filler: T) -> UnsafeMutablePointer<T> {
        let new = UnsafeMutablePointer<T>.allocate(capacity: to)
        new.moveInitialize(from: old, count: from)
        (new + from).initialize(repeating: filler, count: to - from)
        old.deallocate()
        return new
    }

    /// The thread is ending: close what is still open (``shutdown()`` closed the rest).
    private func cleanUp() {
        for fd in live.values { Glibc.close(fd) }
        live.removeAll()
    }

    deinit {
        slots.deinitialize(count: capacity).deallocate()
        readers.deinitialize(count: capacity).deallocate()
        scanners.deinitialize(count: capacity).deallocate()
        webSockets.deinitialize(count: capacity).deallocate()
        polls.deinitialize(count: capacity).deallocate()
        buffer.deallocate()
        Glibc.close(epoll)
        Glibc.close(wakeRead)
        Glibc.close(wakeWrite)
    }
}
