import Logging

/// The metadata keys TidingsPostgres logs with.
enum PostgresLogKey {
    static let error: Logger.Metadata.Key = "tidings.error"
    static let errorDetail: Logger.Metadata.Key = "tidings.error.detail"
    static let severity: Logger.Metadata.Key = "postgres.severity"
    static let sqlState: Logger.Metadata.Key = "postgres.sqlstate"
    static let serverMessage: Logger.Metadata.Key = "postgres.message"
    static let migration: Logger.Metadata.Key = "tidings.migration"
    static let eventID: Logger.Metadata.Key = "tidings.event.id"
    static let holeFrom: Logger.Metadata.Key = "tidings.hole.from"
    static let holeThrough: Logger.Metadata.Key = "tidings.hole.through"
    static let waited: Logger.Metadata.Key = "tidings.wait.seconds"
    static let attempt: Logger.Metadata.Key = "tidings.reconnect.attempt"
    static let delay: Logger.Metadata.Key = "tidings.reconnect.delay_seconds"
    static let payloadPrefix: Logger.Metadata.Key = "tidings.notify.payload_prefix"
    static let payloadBytes: Logger.Metadata.Key = "tidings.notify.payload_bytes"
    static let lastDelivered: Logger.Metadata.Key = "tidings.last_delivered"
    static let count: Logger.Metadata.Key = "tidings.count"
    static let horizon: Logger.Metadata.Key = "tidings.horizon"
    static let backendPID: Logger.Metadata.Key = "postgres.backend_pid"
    static let instance: Logger.Metadata.Key = "tidings.instance"
    static let interval: Logger.Metadata.Key = "tidings.interval_seconds"
}
