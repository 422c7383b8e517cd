import Metrics

/// The listener's metrics, created once.
struct ListenerMetrics: Sendable {
    /// `tidings_listener_reconnects_total`: connections re-established after a loss.
    let reconnects: Counter
    /// `tidings_order_wait_expired_total`: holes given up on after `--order-wait`.
    let orderWaitExpired: Counter
    /// `tidings_notify_invalid_total`: plain NOTIFY payloads that were not a valid event.
    let notifyInvalid: Counter
    /// `tidings_commit_to_delivery_seconds`: now − created_at when a stored event reaches the bus.
    let commitToDelivery: Recorder
    /// `tidings_delivery_lag_seconds`: how far live delivery is behind what the database has
    /// committed (grows while the listener is stalled or disconnected).
    let deliveryLag: Gauge
    /// `tidings_database_round_trips_total{connection="listener"}`: the listener's statements
    /// (the pool's count under `connection="pool"`): what one gateway asks of the database.
    let roundTrips: Counter

    init(factory: any MetricsFactory) {
        reconnects = Counter(label: "tidings_listener_reconnects_total", factory: factory)
        orderWaitExpired = Counter(label: "tidings_order_wait_expired_total", factory: factory)
        notifyInvalid = Counter(label: "tidings_notify_invalid_total", factory: factory)
        commitToDelivery = Recorder(label: "tidings_commit_to_delivery_seconds", dimensions: [], aggregate: true, factory: factory)
        deliveryLag = Gauge(label: "tidings_delivery_lag_seconds", factory: factory)
        roundTrips = Counter(label: "tidings_database_round_trips_total", dimensions: [("connection", "listener")], factory: factory)
    }
}
