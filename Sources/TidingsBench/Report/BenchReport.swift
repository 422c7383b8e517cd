import Foundation
import Histogram

/// Latency percentiles in milliseconds.
public struct Percentiles: Codable, Sendable {
    public var count: UInt64
    public var p50: Double
    public var p90: Double
    public var p99: Double
    public var p999: Double
    public var max: Double
    public var mean: Double

    /// From a histogram of microseconds; `nil` when it is empty.
    init?(micros histogram: Histogram<UInt64>) {
        guard histogram.totalCount > 0 else { return nil }
        count = histogram.totalCount
        p50 = Double(histogram.valueAtPercentile(50)) / 1000
        p90 = Double(histogram.valueAtPercentile(90)) / 1000
        p99 = Double(histogram.valueAtPercentile(99)) / 1000
        p999 = Double(histogram.valueAtPercentile(99.9)) / 1000
        max = Double(histogram.max) / 1000
        mean = histogram.mean / 1000
    }
}

/// Everything one run of `tidings bench` measured; `--json` prints it as is.
public struct BenchReport: Codable, Sendable {
    public struct Settings: Codable, Sendable {
        public var subscribers: Int
        /// How the streams connected.
        public var transport: Transport
        public var rate: Double?
        public var publishConnections: Int
        public var pipeline: Int
        public var batch: Int
        public var payloadBytes: Int
        public var durationSeconds: Double
        public var warmupSeconds: Double
        public var loadThreads: Int
        public var serverCPU: String?
        public var loadCPU: String?
    }

    public struct Connections: Codable, Sendable {
        public var requested: Int
        public var opened: Int
        public var failed: Int
        public var seconds: Double
        /// Failures by kind: `connect`, `protocol`, `http_<status>`.
        public var errors: [String: Int]
        /// Streams the server ended during the window (reopened with Last-Event-ID).
        public var disconnects: Int
        public var lastError: String?
    }

    public struct Publishing: Codable, Sendable {
        public var requests: Int
        public var acceptedEvents: Int
        public var acceptedPerSecond: Double
        /// The rate asked for; `nil` for flat out.
        public var offeredPerSecond: Double?
        public var rejected: [String: Int]
        public var connectionErrors: Int
        /// Most requests the rate wanted that no idle connection could send.
        public var behind: Int
        public var roundTripMs: Percentiles?
        public var lastError: String?
    }

    public struct Delivery: Codable, Sendable {
        public var events: Int
        public var perSecond: Double
        /// Accepted events × open streams that should receive each (fan-out); `nil` when unknown.
        public var expected: Int?
        public var resets: Int
        /// Events without this tool's send time (not counted in latency).
        public var untimed: Int
        public var latencyMs: Percentiles?
    }

    public struct Server: Codable, Sendable {
        public var pid: Int32
        public var cpuSeconds: Double
        /// Share of one core during the window.
        public var cpuPercent: Double
        public var cpuSecondsPerMillionDelivered: Double?
        public var rssBytes: Int
        public var baselineRSSBytes: Int?
        public var memoryPerConnectionBytes: Double?
        public var threads: Int
    }

    public struct Load: Codable, Sendable {
        public var cpuSeconds: Double
        public var cpuPercent: Double
        public var rssBytes: Int
    }

    public struct Replay: Codable, Sendable {
        public var missed: Int
        public var iterations: Int
        public var completed: Int
        /// Reconnect (TCP connect) to the last missed event received.
        public var timeMs: Percentiles?
        public var background: Int
    }

    public var scenario: Scenario
    public var label: String
    public var target: String
    public var date: String
    public var settings: Settings
    public var connections: Connections
    public var publishing: Publishing?
    public var delivery: Delivery?
    public var server: Server?
    public var load: Load?
    public var replay: Replay?
    public var notes: [String] = []

    public func json() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        guard let data = try? encoder.encode(self) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }
}

extension BenchReport {
    /// The report for people.
    public func humanReadable() -> String {
        var lines: [String] = []
        let window = Self.number(settings.durationSeconds, digits: 1)
        let over = settings.transport == .sse ? "" : " over \(settings.transport == .ws ? "WebSockets" : "long polls")"
        switch scenario {
        case .fanout:
            let rate = settings.rate.map { "\(Self.number($0, digits: 0)) events/s" } ?? "flat out"
            lines.append("fanout — \(settings.subscribers) subscribers\(over) on one topic, publisher at \(rate) over \(settings.publishConnections) connection(s), \(window) s window")
        case .users:
            let rate = settings.rate.map { "\(Self.number($0, digits: 0)) events/s" } ?? "flat out"
            lines.append("users — \(settings.subscribers) users, one stream each\(over); publishers \(rate) over \(settings.publishConnections) connections × \(settings.pipeline) in flight, batch \(settings.batch), \(window) s window")
        case .idle:
            lines.append("idle — \(settings.subscribers) idle streams\(over)")
        case .replay:
            lines.append("replay\(over) — reconnect with the last id after \(replay?.missed ?? 0) missed events")
        case .soak:
            lines.append("soak (see SoakReport)")
        }
        lines.append("  target      \(label) at \(target)\(settings.serverCPU.map { ", server on CPU \($0)" } ?? "")\(settings.loadCPU.map { ", load on CPU \($0)" } ?? "")")
        var connected =
            scenario == .replay
            ? "  streams     \(connections.opened) opened (a live one and a resumed one per reconnect)"
            : "  streams     \(connections.opened)/\(connections.requested) open in \(Self.number(connections.seconds, digits: 2)) s"
        if connections.failed > 0 || !connections.errors.isEmpty {
            connected += ", \(connections.failed) failed (" + connections.errors.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ") + ")"
        } else {
            connected += ", no errors"
        }
        if connections.disconnects > 0 { connected += "; \(connections.disconnects) ended by the server (reconnected)" }
        lines.append(connected)
        if let error = connections.lastError, connections.failed > 0 || connections.disconnects > 0 {
            lines.append("              last error: \(error.prefix(200))")
        }
        if let publishing {
            var line = "  published   \(Self.count(publishing.acceptedEvents)) events accepted = \(Self.rate(publishing.acceptedPerSecond))/s"
            if let offered = publishing.offeredPerSecond { line += " (offered \(Self.rate(offered))/s)" }
            if !publishing.rejected.isEmpty {
                line += "; rejected " + publishing.rejected.sorted { $0.key < $1.key }.map { "\($0.key) × \($0.value)" }.joined(separator: ", ")
            }
            if publishing.connectionErrors > 0 { line += "; \(publishing.connectionErrors) connection errors" }
            lines.append(line)
            if let roundTrip = publishing.roundTripMs {
                lines.append("  publish RTT p50 \(Self.ms(roundTrip.p50))  p99 \(Self.ms(roundTrip.p99))  max \(Self.ms(roundTrip.max))")
            }
            if publishing.behind > 0 {
                lines.append("              the publishers fell behind the rate by up to \(publishing.behind) request(s): add --publish-connections")
            }
            if let error = publishing.lastError { lines.append("              last publish error: \(error.prefix(200))") }
        }
        if let delivery {
            var line = "  delivered   \(Self.count(delivery.events)) events = \(Self.rate(delivery.perSecond))/s"
            if let expected = delivery.expected, expected > 0 {
                line += " (\(Self.number(100 * Double(delivery.events) / Double(expected), digits: 1))% of \(Self.count(expected)) expected)"
            }
            if delivery.resets > 0 { line += "; \(delivery.resets) tidings.reset" }
            lines.append(line)
            if let latency = delivery.latencyMs {
                lines.append("  latency     p50 \(Self.ms(latency.p50))  p90 \(Self.ms(latency.p90))  p99 \(Self.ms(latency.p99))  p99.9 \(Self.ms(latency.p999))  max \(Self.ms(latency.max))  (publish → receive)")
            }
        }
        if let replay {
            var line = "  replay      \(replay.completed)/\(replay.iterations) reconnects received all \(replay.missed) missed events"
            if replay.background > 0 { line += " (store pre-filled with \(Self.count(replay.background)) other events)" }
            lines.append(line)
            if let time = replay.timeMs {
                lines.append("  time        p50 \(Self.ms(time.p50))  p90 \(Self.ms(time.p90))  max \(Self.ms(time.max))  mean \(Self.ms(time.mean))  (connect → last missed event)")
            }
        }
        if let server {
            var line = "  server      pid \(server.pid): CPU \(Self.number(server.cpuSeconds, digits: 2)) s (\(Self.number(server.cpuPercent, digits: 0))% of a core)"
            if let perMillion = server.cpuSecondsPerMillionDelivered {
                line += " = \(Self.number(perMillion, digits: 2)) CPU s per 1M delivered"
            }
            lines.append(line)
            var memory = "              RSS \(Self.bytes(server.rssBytes)), \(server.threads) threads"
            if let baseline = server.baselineRSSBytes { memory += " (baseline \(Self.bytes(baseline)))" }
            if let perConnection = server.memoryPerConnectionBytes {
                memory += "; \(Self.number(perConnection / 1024, digits: 2)) KiB per connection"
            }
            lines.append(memory)
        }
        if let load {
            lines.append("  load        CPU \(Self.number(load.cpuSeconds, digits: 2)) s (\(Self.number(load.cpuPercent, digits: 0))% of a core), RSS \(Self.bytes(load.rssBytes))")
        }
        for note in notes { lines.append("  note        \(note)") }
        return lines.joined(separator: "\n")
    }

    static func number(_ value: Double, digits: Int) -> String {
        String(format: "%.\(digits)f", value)
    }

    static func ms(_ value: Double) -> String {
        value < 10 ? String(format: "%.2f ms", value) : String(format: "%.1f ms", value)
    }

    static func rate(_ value: Double) -> String {
        if value >= 10_000 { return String(format: "%.1fk", value / 1000) }
        return String(format: "%.0f", value)
    }

    static func count(_ value: Int) -> String {
        let digits = String(value)
        var out = ""
        for (offset, character) in digits.enumerated() {
            if offset > 0, (digits.count - offset) % 3 == 0 { out.append(",") }
            out.append(character)
        }
        return out
    }

    static func bytes(_ value: Int) -> String {
        if value >= 1 << 20 { return String(format: "%.1f MiB", Double(value) / Double(1 << 20)) }
        return String(format: "%.1f KiB", Double(value) / 1024)
    }
}
