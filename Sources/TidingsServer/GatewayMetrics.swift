import Metrics

/// Metrics of the HTTP layer.
struct GatewayMetrics: Sendable {
    let replayed: Counter
    let publishRequests: Counter
    let publishRejected: Counter
    let subscribeRejected: Counter

    init(factory: any MetricsFactory) {
        replayed = Counter(label: "tidings_events_replayed_total", factory: factory)
        publishRequests = Counter(label: "tidings_publish_requests_total", factory: factory)
        publishRejected = Counter(label: "tidings_publish_rejected_total", factory: factory)
        subscribeRejected = Counter(label: "tidings_subscribe_rejected_total", factory: factory)
    }
}
