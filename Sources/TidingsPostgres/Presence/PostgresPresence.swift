import TidingsCore

/// Presence over every gateway sharing the database: the sums of the rows that live instances
/// reported (`PresenceReporter`), so at most one report interval old. An instance is live while
/// its last report is younger than three of its intervals.
public struct PostgresPresence: PresenceSource {
    let pool: ConnectionPool

    init(pool: ConnectionPool) {
        self.pool = pool
    }

    public func user(_ id: String) async throws -> UserPresence {
        UserPresence(connections: try await counts(Target.user(id)).connections)
    }

    public func topic(_ name: String) async throws -> TopicPresence {
        try await counts(Target.topic(name))
    }

    private func counts(_ target: Target) async throws -> TopicPresence {
        let target = target.description
        return try await pool.withConnection { connection in
            let row = try connection.query(
                """
                SELECT coalesce(sum(p.connections), 0), count(DISTINCT p.user_id)
                FROM tidings.presence AS p JOIN tidings.instances AS i ON i.instance = p.instance
                WHERE p.target = $1 AND i.reported_at > clock_timestamp() - 3 * i.report_interval
                """,
                [target]
            ).single()
            return TopicPresence(connections: Int(try row.int64(0)), users: Int(try row.int64(1)))
        }
    }
}
