/// When each open stream is ended during a drain, and what reconnection delay its goodbye
/// carries: the ends are spread evenly over the drain period in a random order, each delay is
/// random within the period, so the clients of a stopping instance reconnect over a stretch of
/// time rather than in the same second.
struct DrainPlan: Equatable, Sendable {
    struct Step: Equatable, Sendable {
        /// Which stream (an index into the streams the plan was made for).
        var stream: Int
        /// From the start of the drain.
        var offset: Duration
        /// The `retry:` of its goodbye.
        var retryMilliseconds: Int
    }

    /// In order of `offset`.
    var steps: [Step]

    /// - Parameters:
    ///   - count: open streams.
    ///   - period: `--drain-period`; zero ends every stream at once.
    init(count: Int, period: Duration, using generator: inout some RandomNumberGenerator) {
        var order = Array(0..<count)
        order.shuffle(using: &generator)
        let periodMilliseconds = max(0, period.milliseconds)
        let (seconds, attoseconds) = period.components
        let periodNanoseconds = max(0, seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
        steps = order.enumerated().map { position, stream in
            Step(
                stream: stream,
                offset: .nanoseconds(periodNanoseconds * Int64(position) / Int64(count)),
                retryMilliseconds: Int(Int64.random(in: 0...periodMilliseconds, using: &generator)))
        }
    }
}
