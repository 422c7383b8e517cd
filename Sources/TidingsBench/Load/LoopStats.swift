import Histogram
import NIOCore

/// The measurement window as two instants on the monotonic clock (`NIODeadline` uptime
/// nanoseconds), fixed before the window opens and shared by every thread of the tool.
///
/// A publish counts when it is *sent* inside the window, and so does every delivery of the event
/// it carries (by the send time embedded in the event), whenever the answer or the delivery
/// arrives: publishers and subscribers count exactly the same events, however late one thread
/// runs after another. The tool waits for the stragglers after the window ends. Events without
/// a send time (not from this tool) count when they arrive.
struct MeasurementWindow: Sendable {
    var start: UInt64
    var end: UInt64

    @inline(__always)
    func contains(_ now: UInt64) -> Bool {
        now >= start && now < end
    }

    static var now: UInt64 { NIODeadline.now().uptimeNanoseconds }
}

/// Counters of one event loop's connections. Touched only on that loop (its pools own it).
final class LoopStats {
    /// Set for a measurement: events received inside it are recorded.
    var bounds: MeasurementWindow?
    var window = LoadCounters()
    var lifetime = LoadCounters()

    /// Streams that received their response head and are open now.
    var openStreams = 0

    @inline(__always)
    func recordEvent(_ event: ScannedEvent, now: UInt64) {
        lifetime.events += 1
        if event.isReset { lifetime.resets += 1 }
        guard let bounds, bounds.contains(event.sentAt ?? now) else { return }
        window.events += 1
        if event.isReset { window.resets += 1 }
        if let sentAt = event.sentAt {
            let micros = now > sentAt ? (now - sentAt) / 1000 : 0
            _ = window.latency.record(min(micros, LoadCounters.latencyLimitMicros))
        } else {
            window.untimed += 1
        }
    }

    func recordFailure(_ kind: Failure) {
        lifetime.record(kind)
        if let bounds, bounds.contains(MeasurementWindow.now) { window.record(kind) }
    }

    enum Failure {
        case connect
        case status(Int)
        case protocolError
        case disconnect
    }

    func beginWindow(_ bounds: MeasurementWindow) {
        window = LoadCounters()
        self.bounds = bounds
    }

    func endWindow() -> LoadCounters {
        bounds = nil
        return window
    }
}

/// What subscribers saw: events, latency (microseconds) and failures.
struct LoadCounters: Sendable {
    static let latencyLimitMicros: UInt64 = 600_000_000

    var events = 0
    var resets = 0
    /// Events without an embedded send time (not from this tool's publisher).
    var untimed = 0
    var latency = Histogram<UInt64>(highestTrackableValue: latencyLimitMicros, numberOfSignificantValueDigits: .three)
    var connectFailures = 0
    var statusFailures: [Int: Int] = [:]
    var protocolErrors = 0
    /// Streams the server ended (or broke) while the tool was still reading.
    var disconnects = 0
    var lastError: String?

    mutating func record(_ failure: LoopStats.Failure) {
        switch failure {
        case .connect: connectFailures += 1
        case .status(let code): statusFailures[code, default: 0] += 1
        case .protocolError: protocolErrors += 1
        case .disconnect: disconnects += 1
        }
    }

    mutating func add(_ other: LoadCounters) {
        events += other.events
        resets += other.resets
        untimed += other.untimed
        latency.add(other.latency)
        connectFailures += other.connectFailures
        for (code, count) in other.statusFailures { statusFailures[code, default: 0] += count }
        protocolErrors += other.protocolErrors
        disconnects += other.disconnects
        lastError = lastError ?? other.lastError
    }

    var failures: Int {
        connectFailures + statusFailures.values.reduce(0, +) + protocolErrors
    }
}
