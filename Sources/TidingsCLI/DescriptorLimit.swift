import Logging
import TidingsBench

/// The open-file limit against the connections the gateway may hold: every stream is a socket,
/// and running out of descriptors fails accepts and database connections alike, not with a 503.
enum DescriptorLimit {
    /// Descriptors kept for everything but streams: listeners, database connections, files.
    static let reserve = 64

    /// Raises the soft limit to the hard one, then warns when `maxConnections` (or, unset, a
    /// typical production load) would not fit.
    static func check(maxConnections: Int?, logger: Logger) {
        let limit = BenchRunner.raiseFileLimit()
        let usable = max(0, limit - reserve)
        if let maxConnections, maxConnections > usable {
            logger.warning(
                "--max-connections exceeds the open-file limit",
                metadata: [
                    "tidings.max_connections": "\(maxConnections)", "tidings.nofile_limit": "\(limit)",
                    "tidings.hint": "raise LimitNOFILE (systemd) or ulimit -n, or lower --max-connections",
                ])
        } else if maxConnections == nil, limit < 65_536 {
            logger.notice(
                "no --max-connections: streams beyond the open-file limit fail instead of getting 503",
                metadata: ["tidings.nofile_limit": "\(limit)", "tidings.usable_streams": "\(usable)"])
        }
    }
}
