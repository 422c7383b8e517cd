import TidingsCore

/// The events of one publish request and who sent them.
struct PublishEntry: Sendable {
    var events: [NewEvent]
    var publisher: String

    /// The request's size for ``GroupCommitQueue``'s byte limit: its data and targets.
    var dataBytes: Int {
        events.reduce(0) { total, event in
            total + event.data.utf8.count + event.targets.reduce(0) { $0 + $1.description.utf8.count + 1 }
        }
    }
}

extension PostgresEventStore {
    /// What a group transaction stored: each request's ids, in request order, and how many
    /// events it stored.
    struct GroupResult: Sendable {
        var ids: [[EventID]]
        var stored: Int

        /// The highest id the group stored or repeated (0 for none).
        var highestID: EventID { ids.reduce(0) { max($0, $1.max() ?? 0) } }
    }

    /// A transaction begun ahead of its work on a pool connection (`BEGIN`, then its
    /// transaction id taken: `pg_current_xact_id()`), so that the group that uses it is one round
    /// trip: its ids, INSERT and COMMIT pipelined. Its id is known before COMMIT is sent, as with
    /// a transaction begun in the group's own first round trip.
    ///
    /// It holds a transaction id but no lock (not the order lock: it has taken no event id), so
    /// no listener waits for it. The store rolls it back when no publish comes within its linger.
    struct OpenTransaction: Sendable, Equatable {
        var transactionID: String
        /// Every id the transaction will take is above it: the highest id known when it began.
        /// Bounds the search for its rows if its COMMIT is lost with the answer.
        var floor: EventID
    }

    /// `BEGIN` and the transaction id: the statements that open an ``OpenTransaction``.
    private static let openStatements = [
        PGConnection.Statement(sql: "BEGIN"),
        PGConnection.Statement(sql: "SELECT pg_current_xact_id()::text", prepared: true),
    ]

    /// Opens a transaction ahead of its work (one round trip).
    static func open(on connection: PGConnection, floor: EventID) throws(PostgresError) -> OpenTransaction {
        do throws(PostgresError) {
            let answers = try connection.pipeline(openStatements)
            guard answers.count == 2 else { throw PostgresError(.unexpectedResult) }
            return OpenTransaction(transactionID: try answers[1].single().string(0), floor: floor)
        } catch {
            if !connection.isBroken, connection.isInTransaction { _ = try? connection.execute("ROLLBACK") }
            throw error
        }
    }

    /// An idempotency key: a publisher's own.
    private struct Key: Hashable, Comparable {
        var publisher: String
        var key: String

        static func < (a: Key, b: Key) -> Bool {
            (a.publisher, a.key) < (b.publisher, b.key)
        }
    }

    /// Where an event is in a group: its request and its place in that request.
    private struct Position: Hashable {
        var request: Int
        var event: Int
    }

    /// `BEGIN` (the pool's sessions commit synchronously: see PostgresBackend), taking the
    /// transaction id before any event id (see DeliveryOrder), in one round trip (a pipeline;
    /// the SELECT prepared on the session). With `takingIDs` above zero the same statement takes
    /// that many event ids (`take_event_ids` takes the order lock first). Returns the
    /// transaction id, to ask for the outcome if COMMIT is lost, and the ids.
    private static func begin(on connection: PGConnection, takingIDs count: Int) throws -> (transactionID: String, ids: [EventID]) {
        let failure: PostgresError
        do throws(PostgresError) {
            let select = count > 0
                ? PGConnection.Statement(sql: Self.beginTakingIDsSQL, parameters: [String(count)], prepared: true)
                : PGConnection.Statement(sql: "SELECT pg_current_xact_id()::text", prepared: true)
            let answers = try connection.pipeline([PGConnection.Statement(sql: "BEGIN"), select])
            guard answers.count == 2 else { throw PostgresError(.unexpectedResult) }
            let row = try answers[1].single()
            return (try row.string(0), count > 0 ? try Self.ids(fromArray: try row.string(1), count: count) : [])
        } catch {
            failure = error
        }
        if failure.isConnectionError { throw LostBeforeTransaction(underlying: failure) }
        if !connection.isBroken, connection.isInTransaction { _ = try? connection.execute("ROLLBACK") }
        throw failure
    }

    private static let beginTakingIDsSQL = "SELECT pg_current_xact_id()::text, tidings.take_event_ids($1::int)::text"

    /// The ids of a `bigint[]` in text form (`{41,42}`), in increasing order.
    static func ids(fromArray text: String, count: Int) throws(PostgresError) -> [EventID] {
        guard text.first == "{", text.last == "}" else { throw PostgresError(.unexpectedResult) }
        var ids: [EventID] = []
        ids.reserveCapacity(count)
        for part in text.dropFirst().dropLast().split(separator: ",") {
            guard let id = EventID(part) else { throw PostgresError(.unexpectedResult) }
            ids.append(id)
        }
        guard ids.count == count else { throw PostgresError(.unexpectedResult) }
        return ids.sorted()
    }

    /// The transaction of a group of publish requests, taken in order as if each ran after the
    /// one before: one claim of their idempotency keys, one `take_event_ids`, one INSERT, one
    /// COMMIT. Returns each request's ids and how many events were stored.
    ///
    /// Round trips: a group without idempotency keys in an ``OpenTransaction`` takes one — its
    /// ids and INSERT in one statement, then COMMIT, pipelined; without one, two — `BEGIN` with
    /// its ids, then the INSERT and COMMIT pipelined. Either way the transaction id is known
    /// before COMMIT is sent, so a connection lost in the last round trip can still be asked
    /// about. Keys add one or two (the claim, and the look-up of keys used before) and one for
    /// the ids.
    ///
    /// With `openNext`, the next transaction is opened in the round trip of this one's COMMIT
    /// (a pipeline segment of its own: its failure never touches this one's outcome) and
    /// returned, with `floor` (at least) as its floor.
    static func publish(
        _ requests: [PublishEntry],
        retentionSeconds: String,
        on connection: PGConnection,
        in open: OpenTransaction? = nil,
        openNext: Bool = false,
        floor: EventID = 0
    ) throws -> (result: GroupResult, next: OpenTransaction?) {
        // The first occurrence of each key in the group; later ones repeat its id.
        var firstOfKey: [Key: Position] = [:]
        var keys: [Key] = []
        for (request, entry) in requests.enumerated() {
            for (index, event) in entry.events.enumerated() {
                guard let key = event.idempotencyKey.map({ Key(publisher: entry.publisher, key: $0) }), firstOfKey[key] == nil else {
                    continue
                }
                firstOfKey[key] = Position(request: request, event: index)
                keys.append(key)
            }
        }
        keys.sort()  // one lock order for every transaction: no deadlock between them
        // Without keys every event is stored, so its ids can come with BEGIN.
        let eventCount = requests.reduce(0) { $0 + $1.events.count }
        if let open, keys.isEmpty {
            return try publishInOneRoundTrip(requests, eventCount: eventCount, on: connection, in: open, openNext: openNext, floor: floor)
        }
        let (transactionID, takenIDs) = try open.map { ($0.transactionID, []) }
            ?? Self.begin(on: connection, takingIDs: keys.isEmpty ? eventCount : 0)
        let (result, writes) = try connection.inTransaction(commit: false) { () throws -> (GroupResult, [PGConnection.Statement]) in
            var writes: [PGConnection.Statement] = []
            var existing: [Key: EventID] = [:]
            if !keys.isEmpty {
                let claimed = try connection.queryPrepared(
                    """
                    INSERT INTO tidings.idempotency_keys AS k (publisher, key)
                    SELECT * FROM unnest($1::text[], $2::text[])
                    ON CONFLICT (publisher, key) DO UPDATE SET event_id = NULL, created_at = now()
                        WHERE k.created_at < now() - $3::float8 * interval '1 second'
                    RETURNING publisher, key
                    """,
                    [PGArray.text(keys.map(\.publisher)), PGArray.text(keys.map(\.key)), retentionSeconds])
                let claimedKeys = Set(try claimed.rows.map { Key(publisher: try $0.string(0), key: try $0.string(1)) })
                let taken = keys.filter { !claimedKeys.contains($0) }
                if !taken.isEmpty {
                    let rows = try connection.queryPrepared(
                        """
                        SELECT k.publisher, k.key, k.event_id
                        FROM tidings.idempotency_keys AS k
                        JOIN unnest($1::text[], $2::text[]) AS u(publisher, key) ON k.publisher = u.publisher AND k.key = u.key
                        """,
                        [PGArray.text(taken.map(\.publisher)), PGArray.text(taken.map(\.key))])
                    for row in rows.rows {
                        guard let id = try row.optionalInt64(2) else { throw PostgresError(.unexpectedResult) }
                        existing[Key(publisher: try row.string(0), key: try row.string(1))] = id
                    }
                    guard existing.count == taken.count else { throw PostgresError(.unexpectedResult) }
                }
            }
            // Which events are stored: not a repeat of a key used before or earlier in the group.
            var toStore: [Position] = []
            for (request, entry) in requests.enumerated() {
                for (index, event) in entry.events.enumerated() {
                    let position = Position(request: request, event: index)
                    if let key = event.idempotencyKey.map({ Key(publisher: entry.publisher, key: $0) }),
                       existing[key] != nil || firstOfKey[key] != position {
                        continue
                    }
                    toStore.append(position)
                }
            }
            var ids = requests.map { [EventID](repeating: 0, count: $0.events.count) }
            if !toStore.isEmpty {
                // The order lock, then the ids (see OrderLock).
                var newIDs = takenIDs
                if newIDs.isEmpty {
                    let taken = try connection.queryPrepared("SELECT tidings.take_event_ids($1::int)::text", [String(toStore.count)])
                    newIDs = try Self.ids(fromArray: try taken.single().string(0), count: toStore.count)
                }
                guard newIDs.count == toStore.count else { throw PostgresError(.unexpectedResult) }
                for (offset, position) in toStore.enumerated() { ids[position.request][position.event] = newIDs[offset] }
                let events = toStore.map { requests[$0.request].events[$0.event] }
                writes.append(PGConnection.Statement(
                    sql: """
                    INSERT INTO tidings.events (id, targets, event, data)
                    SELECT u.id, string_to_array(u.targets, ' '), u.event, u.data::json
                    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[]) AS u(id, targets, event, data)
                    """,
                    parameters: [
                        PGArray.int64(newIDs),
                        PGArray.text(events.map { $0.targets.map(\.description).joined(separator: " ") }),
                        PGArray.text(events.map(\.type.rawValue)),
                        PGArray.text(events.map(\.data)),
                    ],
                    prepared: true))
            }
            for (request, entry) in requests.enumerated() {
                for (index, event) in entry.events.enumerated() where ids[request][index] == 0 {
                    let key = Key(publisher: entry.publisher, key: event.idempotencyKey!)
                    if let id = existing[key] {
                        ids[request][index] = id
                    } else {
                        let first = firstOfKey[key]!
                        ids[request][index] = ids[first.request][first.event]
                    }
                }
            }
            let claimedKeys = keys.filter { existing[$0] == nil }
            if !claimedKeys.isEmpty {
                writes.append(PGConnection.Statement(
                    sql: """
                    UPDATE tidings.idempotency_keys AS k SET event_id = u.id
                    FROM unnest($1::text[], $2::text[], $3::bigint[]) AS u(publisher, key, id)
                    WHERE k.publisher = u.publisher AND k.key = u.key
                    """,
                    parameters: [
                        PGArray.text(claimedKeys.map(\.publisher)),
                        PGArray.text(claimedKeys.map(\.key)),
                        PGArray.int64(claimedKeys.map { ids[firstOfKey[$0]!.request][firstOfKey[$0]!.event] }),
                    ],
                    prepared: true))
            }
            return (GroupResult(ids: ids, stored: toStore.count), writes)
        }
        // The writes and COMMIT in one round trip. A connection lost on the way may have
        // committed: the server is asked (LostAtCommit). A write the server refused leaves the
        // block aborted, COMMIT unrun: roll back.
        let next = try commit(
            writes, transactionID: transactionID, on: connection, openNext: openNext,
            floor: max(floor, result.highestID), ifLost: .known(result))
        return (result, next.open)
    }

    /// The ids and the INSERT of a group without keys in an open transaction: the steps of
    /// `tidings.take_event_ids` written into the statement (migration 0006), in its order — the
    /// order lock, then the ids (`lock` is joined in, so it is taken before the first `nextval`),
    /// then the wake-up test (after every id: it counts `taken`; the outer SELECT reads it, so
    /// it runs) — without a function call's statements through SPI. The transaction id was
    /// taken when the transaction opened. The ids are drawn in the events' order, so event `n`
    /// gets the `n`th lowest. No `generate_series($1)`: its row count, unknown to a generic
    /// plan, made every execution plan anew.
    static let takeAndInsertSQL = """
        WITH lock AS MATERIALIZED (SELECT pg_advisory_xact_lock_shared(\(OrderLock.key))),
        taken AS MATERIALIZED (
            SELECT u.n, nextval('tidings.events_id_seq') AS id, u.targets, u.event, u.data
            FROM lock, unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS u(targets, event, data, n)
        ),
        woken AS MATERIALIZED (
            SELECT CASE WHEN pg_try_advisory_lock(\(SleepLock.key)) THEN pg_advisory_unlock(\(SleepLock.key))
                        ELSE pg_notify('\(SleepLock.channel)', '') IS NULL END
            FROM (SELECT count(*) FROM taken) AS all_taken
        ),
        inserted AS (
            INSERT INTO tidings.events (id, targets, event, data)
            SELECT id, string_to_array(targets, ' '), event, data::json FROM taken
        )
        SELECT array_agg(id ORDER BY n)::text FROM taken, woken
        """

    /// A group without keys in an open transaction: its ids taken and its events inserted by one
    /// statement (``takeAndInsertSQL``), pipelined with COMMIT.
    private static func publishInOneRoundTrip(
        _ requests: [PublishEntry], eventCount: Int, on connection: PGConnection, in open: OpenTransaction,
        openNext: Bool, floor: EventID
    ) throws -> (result: GroupResult, next: OpenTransaction?) {
        let events = requests.flatMap(\.events)
        let insert = PGConnection.Statement(
            sql: takeAndInsertSQL,
            parameters: [
                PGArray.text(events.map { $0.targets.map(\.description).joined(separator: " ") }),
                PGArray.text(events.map(\.type.rawValue)),
                PGArray.text(events.map(\.data)),
            ],
            prepared: true)
        let counts = requests.map(\.events.count)
        let committed = try commit(
            [insert], transactionID: open.transactionID, on: connection, openNext: openNext, floor: floor,
            ifLost: .search(after: open.floor, counts: counts))
        let ids = try Self.ids(fromArray: try committed.answers[0].single().string(0), count: eventCount)
        let result = GroupResult(ids: split(ids, counts: counts), stored: eventCount)
        var next = committed.open
        next?.floor = max(floor, result.highestID)
        return (result, next)
    }

    /// `ids` cut into runs of `counts`, in order.
    static func split(_ ids: [EventID], counts: [Int]) -> [[EventID]] {
        var start = 0
        return counts.map { count in
            defer { start += count }
            return Array(ids[start..<(start + count)])
        }
    }

    /// The writes and COMMIT in one round trip, with the next transaction opened in a segment
    /// of its own when asked. A connection lost on the way may have committed: the server is
    /// asked (``LostAtCommit``). A write the server refused leaves the block aborted, COMMIT
    /// unrun: roll back and throw.
    private static func commit(
        _ writes: [PGConnection.Statement], transactionID: String, on connection: PGConnection,
        openNext: Bool, floor: EventID, ifLost: LostAtCommit.Recovery
    ) throws -> (answers: [PGRows], open: OpenTransaction?) {
        let outcomes: [Result<[PGRows], PostgresError>]
        do {
            outcomes = try connection.pipeline(
                segments: [writes + [PGConnection.Statement(sql: "COMMIT")]] + (openNext ? [openStatements] : []))
        } catch where error.isConnectionError {
            throw LostAtCommit(underlying: error, transactionID: transactionID, recovery: ifLost)
        } catch {
            if !connection.isBroken, connection.isInTransaction { _ = try? connection.execute("ROLLBACK") }
            throw error
        }
        let answers: [PGRows]
        do {
            answers = try outcomes[0].get()
        } catch {
            if !connection.isBroken, connection.isInTransaction { _ = try? connection.execute("ROLLBACK") }
            throw error
        }
        guard openNext else { return (answers, nil) }
        if case .success(let opened) = outcomes[1], opened.count == 2, let id = try? opened[1].single().string(0) {
            return (answers, OpenTransaction(transactionID: id, floor: floor))
        }
        // Committed; only the next transaction failed to open.
        if !connection.isBroken, connection.isInTransaction { _ = try? connection.execute("ROLLBACK") }
        return (answers, nil)
    }
}
