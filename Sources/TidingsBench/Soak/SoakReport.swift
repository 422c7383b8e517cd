import Foundation

/// What `tidings bench soak` did and found; `passed` when every check held.
public struct SoakReport: Encodable, Sendable {
    public struct Settings: Codable, Sendable {
        public var durationSeconds: Double
        public var warmupSeconds: Double
        public var trackedStreams: Int
        public var churnPerSecond: Int
        public var slowClients: Int
        public var resumesPerSecond: Double
        public var publishPerSecond: Double
        public var topics: Int
        public var payloadBytes: Int
    }

    public struct Connections: Codable, Sendable {
        /// Short-lived streams (SSE, WebSocket, long poll) opened and closed again.
        public var churnOpened = 0
        public var churnFailed = 0
        public var churnPerSecond = 0.0
        public var trackedOpened = 0
        public var trackedFailed = 0
        /// Tracked streams still open at the end.
        public var trackedOpenAtEnd = 0
        /// Tracked streams closed and reopened with their last id.
        public var resumes = 0
        public var slowClientsStarted = 0
        /// Slow clients the gateway disconnected (the rest were closed by the tool at the end).
        public var slowClientsDisconnected = 0
        public var slowClientsResumed = 0
        public var errors: [String: Int] = [:]
        public var lastError: String?
    }

    public struct Publishing: Codable, Sendable {
        public var accepted = 0
        public var rejected = 0
        public var lastError: String?
    }

    public struct Delivery: Codable, Sendable {
        /// Tracked streams (slow clients included) whose logs were checked.
        public var streams = 0
        public var totals = DeliveryCheck.Verdict()
        /// Streams whose log was not clean, with the first few described.
        public var failedStreams = 0
        public var failures: [String] = []
        /// Open streams that had not received their topic's last event when the wait ended.
        public var behindAtEnd = 0
    }

    public var label: String
    public var date: String
    public var pid: Int32?
    public var settings: Settings
    public var connections = Connections()
    public var publishing = Publishing()
    public var delivery = Delivery()
    public var resources: ResourceCheck?
    public var problems: [String] = []
    public var passed: Bool { problems.isEmpty }

    enum CodingKeys: String, CodingKey {
        case label, date, pid, settings, connections, publishing, delivery, resources, problems, passed
    }

    public init(label: String, date: String, pid: Int32?, settings: Settings) {
        self.label = label
        self.date = date
        self.pid = pid
        self.settings = settings
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(label, forKey: .label)
        try container.encode(date, forKey: .date)
        try container.encodeIfPresent(pid, forKey: .pid)
        try container.encode(settings, forKey: .settings)
        try container.encode(connections, forKey: .connections)
        try container.encode(publishing, forKey: .publishing)
        try container.encode(delivery, forKey: .delivery)
        try container.encodeIfPresent(resources, forKey: .resources)
        try container.encode(problems, forKey: .problems)
        try container.encode(passed, forKey: .passed)
    }

    /// Fills `problems` from what was measured.
    mutating func judge() {
        problems = []
        if delivery.failedStreams > 0 {
            problems.append("\(delivery.failedStreams) of \(delivery.streams) streams did not get every event once, in order")
        }
        if delivery.behindAtEnd > 0 {
            problems.append("\(delivery.behindAtEnd) open streams had not received their topic's last event")
        }
        if publishing.accepted == 0 { problems.append("no event was published") }
        if connections.churnOpened == 0 { problems.append("no short-lived connection was opened") }
        if let resources {
            if !resources.rssBack {
                problems.append(
                    "server memory did not come back: \(Self.megabytes(resources.end.rssBytes)) at the end, "
                        + "\(Self.megabytes(resources.warmedUp.rssBytes)) after the warm-up, limit \(Self.megabytes(resources.rssLimitBytes))")
            }
            if resources.leakedDescriptors > 0 {
                problems.append("the server holds \(resources.leakedDescriptors) more file descriptors than after the warm-up (open streams discounted)")
            }
        } else {
            problems.append("the server process could not be sampled (give --spawn or --server-pid)")
        }
    }

    public func json() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        guard let data = try? encoder.encode(self) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }

    public func humanReadable() -> String {
        var lines: [String] = []
        lines.append(
            "soak \(label): \(Int(settings.durationSeconds)) s after a \(Int(settings.warmupSeconds)) s warm-up — "
                + (passed ? "PASSED" : "FAILED"))
        lines.append(
            "  connections: \(connections.churnOpened) short-lived opened and closed (\(String(format: "%.0f", connections.churnPerSecond))/s, "
                + "\(connections.churnFailed) failed); \(connections.trackedOpened) tracked streams, \(connections.resumes) resumes, "
                + "\(connections.trackedOpenAtEnd) open at the end")
        lines.append(
            "  slow clients: \(connections.slowClientsStarted) started, \(connections.slowClientsDisconnected) disconnected by the gateway, "
                + "\(connections.slowClientsResumed) resumed")
        lines.append("  publishing: \(publishing.accepted) events accepted, \(publishing.rejected) rejected")
        let totals = delivery.totals
        lines.append(
            "  delivery: \(delivery.streams) streams checked, \(totals.events) events; missing \(totals.missing), duplicates \(totals.duplicates), "
                + "out of order \(totals.outOfOrder), unknown \(totals.unknown), missing at the end \(totals.missingAtEnd); "
                + "\(totals.resets) resets excusing \(totals.excused)")
        if let resources {
            lines.append(
                "  server RSS: \(Self.megabytes(resources.warmedUp.rssBytes)) after the warm-up, peak \(Self.megabytes(resources.peakRSSBytes)), "
                    + "\(Self.megabytes(resources.end.rssBytes)) at the end (limit \(Self.megabytes(resources.rssLimitBytes)))")
            lines.append(
                "  server descriptors: \(resources.warmedUp.descriptors) with \(resources.warmedUp.streams) streams after the warm-up, "
                    + "\(resources.end.descriptors) with \(resources.end.streams) streams at the end; leaked \(resources.leakedDescriptors)")
        }
        for failure in delivery.failures { lines.append("  stream: \(failure)") }
        for problem in problems { lines.append("  problem: \(problem)") }
        return lines.joined(separator: "\n")
    }

    static func megabytes(_ bytes: Int) -> String {
        String(format: "%.1f MB", Double(bytes) / 1_048_576)
    }
}
