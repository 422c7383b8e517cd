import Foundation
import TidingsCore

/// One-time tickets in `tidings.tickets`: issued on one gateway, redeemable once on any.
///
/// Only a SHA-256 digest of each ticket is stored. Redeeming deletes the row
/// (`DELETE … RETURNING`), so two gateways racing on one ticket cannot both win. Expiry uses the
/// database's clock; the pruner removes expired rows.
public final class PostgresTicketStore: TicketStore {
    private let pool: ConnectionPool

    init(pool: ConnectionPool) {
        self.pool = pool
    }

    public func issue(_ grant: TicketGrant, ttl: Duration) async throws -> String {
        let ticket = TicketID.make()
        let topics = PGArray.text(grant.topics)
        let tokenExpiry = grant.tokenExpiresAt.map { String($0.timeIntervalSince1970) }
        let ttlSeconds = String(ttl.seconds)
        let user = grant.user
        _ = try await pool.withConnection { connection in
            try connection.query(
                """
                INSERT INTO tidings.tickets (digest, subject, topics, token_expires_at, expires_at)
                VALUES (sha256(convert_to($1, 'UTF8')), $2, $3::text[], to_timestamp($4::float8),
                        clock_timestamp() + $5::float8 * interval '1 second')
                """,
                [ticket, user, topics, tokenExpiry, ttlSeconds])
        }
        return ticket
    }

    public func redeem(_ ticket: String) async throws -> TicketGrant? {
        try await pool.withConnection { connection in
            let result = try connection.query(
                """
                DELETE FROM tidings.tickets
                WHERE digest = sha256(convert_to($1, 'UTF8')) AND expires_at > clock_timestamp()
                RETURNING subject, to_json(topics)::text, extract(epoch FROM token_expires_at)::float8
                """,
                [ticket])
            guard let row = result.first else { return nil }
            let topicsJSON = try row.string(1)
            guard case .array(let items) = try? JSONParser.parse(Array(topicsJSON.utf8)) else {
                throw PostgresError(.unexpectedResult)
            }
            let topics = items.compactMap(\.stringValue)
            let expiry = try row.optionalDouble(2).map { Date(timeIntervalSince1970: $0) }
            return TicketGrant(user: try row.string(0), topics: topics, tokenExpiresAt: expiry)
        }
    }
}
