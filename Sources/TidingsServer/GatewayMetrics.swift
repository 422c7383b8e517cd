import Metrics

/// Metrics of the HTTP layer.
struct GatewayMetrics: Sendable {
    let replayed: Counter
    let publishRequests: Counter
    let publishRejected: Counter
    let subscribeRejected: Counter
    /// `tidings_publish_request_duration_seconds`: from a publish request's handling to its answer.
    let publishDuration: Recorder

    init(factory: any MetricsFactory) {
        replayed = Counter(label: "tidings_events_replayed_total", factory: factory)
        publishRequests = Counter(label: "tidings_publish_requests_total", factory: factory)
        publishRejected = Counter(label: "tidings_publish_rejected_total", factory: factory)
        subscribeRejected = Counter(label: "tidings_subscribe_rejected_total", factory: factory)
        publishDuration = Recorder(label: "tidings_publish_request_duration_seconds", dimensions: [], aggregate: true, factory: factory)
        let build = Gauge(label: "tidings_build_info", dimensions: [("version", TidingsVersion.current)], factory: factory)
        build.record(1)
    }

    /// Buckets of the gateway's histograms (in seconds; the default buckets start at 5 ms and end
    /// at 10 s: too coarse for a publish, too short for a stream).
    static let histogramBuckets: [String: [Double]] = [
        "tidings_publish_request_duration_seconds": [
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
        ],
        "tidings_stream_duration_seconds": [1, 10, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 24 * 3600],
    ]

    func recordPublishDuration(since started: ContinuousClock.Instant) {
        let elapsed = ContinuousClock.now - started
        publishDuration.record(Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
    }
}
