/// The server's memory and descriptors before and after the soak's load, each taken with the
/// load stopped and the server settled, and whether they came back.
public struct ResourceCheck: Sendable, Encodable, Equatable {
    /// One sample of the server process.
    public struct Sample: Sendable, Codable, Equatable {
        /// VmRSS from /proc/PID/status.
        public var rssBytes: Int
        /// Entries of /proc/PID/fd.
        public var descriptors: Int
        /// Streams the load tool had open to the server (each holds one descriptor there).
        public var streams: Int

        public init(rssBytes: Int, descriptors: Int, streams: Int) {
            self.rssBytes = rssBytes
            self.descriptors = descriptors
            self.streams = streams
        }

        /// Descriptors not explained by open streams.
        public var baseDescriptors: Int { descriptors - streams }
    }

    /// After the warm-up (the working set has grown to its size), with the load stopped.
    public var warmedUp: Sample
    /// After the load stopped at the end.
    public var end: Sample
    /// The largest RSS seen while the load ran.
    public var peakRSSBytes: Int
    /// How far above `warmedUp` the end RSS may be: the larger of these two.
    public var rssSlackBytes: Int
    public var rssSlackFraction: Double

    public init(warmedUp: Sample, end: Sample, peakRSSBytes: Int, rssSlackBytes: Int = 16 << 20, rssSlackFraction: Double = 0.10) {
        self.warmedUp = warmedUp
        self.end = end
        self.peakRSSBytes = peakRSSBytes
        self.rssSlackBytes = rssSlackBytes
        self.rssSlackFraction = rssSlackFraction
    }

    /// The end RSS allowed.
    public var rssLimitBytes: Int {
        warmedUp.rssBytes + max(rssSlackBytes, Int(Double(warmedUp.rssBytes) * rssSlackFraction))
    }

    public var rssBack: Bool { end.rssBytes <= rssLimitBytes }

    /// Descriptors the server holds at the end beyond those it held after the warm-up, streams
    /// discounted (a stream that ended or was reopened changes both sides alike).
    public var leakedDescriptors: Int { max(0, end.baseDescriptors - warmedUp.baseDescriptors) }

    public var isClean: Bool { rssBack && leakedDescriptors == 0 }

    private enum CodingKeys: String, CodingKey {
        case warmedUp, end, peakRSSBytes, rssSlackBytes, rssSlackFraction, rssLimitBytes, rssBack, leakedDescriptors
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(warmedUp, forKey: .warmedUp)
        try container.encode(end, forKey: .end)
        try container.encode(peakRSSBytes, forKey: .peakRSSBytes)
        try container.encode(rssSlackBytes, forKey: .rssSlackBytes)
        try container.encode(rssSlackFraction, forKey: .rssSlackFraction)
        try container.encode(rssLimitBytes, forKey: .rssLimitBytes)
        try container.encode(rssBack, forKey: .rssBack)
        try container.encode(leakedDescriptors, forKey: .leakedDescriptors)
    }
}
