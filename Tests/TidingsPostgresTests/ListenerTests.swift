import MetricsTestKit
import Testing
import TidingsCore

@testable import TidingsPostgres

/// Publishing from SQL and delivery through the listener, against a real PostgreSQL.
@Suite(.enabled(if: TestDatabase.isConfigured, "TIDINGS_TEST_DATABASE_URL is not set"))
struct ListenerTests {
    @Test(arguments: [PostgresConfiguration.Wakeup.notify, .poll])
    func committedPublishIsDeliveredRolledBackNever(wakeup: PostgresConfiguration.Wakeup) async throws {
        try await TestDatabase.with { (url: String) async throws in
            try await withBackend(url, configure: { $0.wakeup = wakeup; $0.pollInterval = .milliseconds(20) }) { backend, bus in
                let probe = try await readyProbe(backend, bus, ["user:42"])
                defer { probe.close() }
                try await SQL.run(url, "BEGIN; SELECT tidings.publish('user:42', 'never', '{\"n\": 0}'); ROLLBACK")
                let id = try await SQL.value(url, "SELECT tidings.publish('user:42', 'greeting', '{\"hello\": [1, 2]}')")
                let events = try await probe.waitFor(count: 1)
                #expect(events == [Received(id: EventID(id!), type: "greeting", data: #"{"hello":[1,2]}"#)])
                // The rolled-back id is a hole the listener passed.
                #expect(events[0].id == 2)
                #expect(bus.lastDelivered == 2)
            }
        }
    }

    @Test func triggerPublishesRowEventsForInsertUpdateDelete() async throws {
        try await TestDatabase.with { (url: String) async throws in
            try await SQL.run(
                url,
                """
                CREATE TABLE orders (id serial PRIMARY KEY, user_id int, status text, total numeric(10,2));
                CREATE TRIGGER orders_tidings AFTER INSERT OR UPDATE OR DELETE ON orders
                    FOR EACH ROW EXECUTE FUNCTION tidings.row_event('user_id', 'order');
                """)
            try await withBackend(url) { backend, bus in
                let probe = try await readyProbe(backend, bus, ["user:7", "user:8"])
                defer { probe.close() }
                try await SQL.run(url, "INSERT INTO orders (user_id, status, total) VALUES (7, 'new', 12.50)")
                try await SQL.run(url, "UPDATE orders SET status = 'paid' WHERE user_id = 7")
                try await SQL.run(url, "DELETE FROM orders WHERE user_id = 7")
                try await SQL.run(url, "INSERT INTO orders (user_id, status, total) VALUES (NULL, 'orphan', 1)")
                try await SQL.run(url, "INSERT INTO orders (user_id, status, total) VALUES (8, 'new', 3)")
                let events = try await probe.waitFor(count: 4)
                #expect(events.map(\.type) == ["order.created", "order.updated", "order.deleted", "order.created"])
                #expect(events[0].data == #"{"id":1,"user_id":7,"status":"new","total":12.50}"#)
                #expect(events[1].data == #"{"id":1,"user_id":7,"status":"paid","total":12.50}"#)
                #expect(events[2].data == #"{"id":1,"user_id":7,"status":"paid","total":12.50}"#)
                #expect(events.map(\.id) == [1, 2, 3, 4])
            }
        }
    }

    @Test func triggerTellsBothUsersOfAMoveAndRefusesWhatItCannotPublish() async throws {
        try await TestDatabase.with { (url: String) async throws in
            try await SQL.run(
                url,
                """
                CREATE TABLE orders (id serial PRIMARY KEY, user_id text, status text);
                CREATE TRIGGER orders_tidings AFTER INSERT OR UPDATE OR DELETE ON orders
                    FOR EACH ROW EXECUTE FUNCTION tidings.row_event('user_id', 'order');
                INSERT INTO orders (user_id, status) VALUES ('a', 'new'), (NULL, 'orphan');
                UPDATE orders SET user_id = 'b' WHERE user_id = 'a';
                UPDATE orders SET status = 'still' WHERE user_id IS NULL;
                DELETE FROM orders WHERE user_id IS NULL;
                """)
            let rows = try await SQL.run(url, "SELECT id, event, array_to_string(targets, ' ') FROM tidings.events ORDER BY id")
                .rows.map { "\(try $0.int64(0)) \(try $0.string(1)) \(try $0.string(2))" }
            // The move tells the new user and the old one; rows without a user publish nothing.
            #expect(rows == ["1 order.created user:a", "2 order.updated user:b user:a"])

            // A user id that cannot be a target fails the statement; nothing of it is kept.
            let badUser = await #expect(throws: PostgresError.self) {
                try await SQL.run(url, "INSERT INTO orders (user_id, status) VALUES ('no spaces', 'x')")
            }
            #expect(badUser?.serverMessage?.contains(#"invalid target "user:no spaces""#) == true)
            // A trigger naming a column the table lacks, or the wrong kind of trigger: clear errors.
            try await SQL.run(
                url,
                """
                CREATE TABLE misnamed (id int);
                CREATE TRIGGER misnamed_tidings AFTER INSERT ON misnamed
                    FOR EACH ROW EXECUTE FUNCTION tidings.row_event('user_id', 'thing');
                CREATE TABLE statement_level (user_id int);
                CREATE TRIGGER statement_tidings AFTER INSERT ON statement_level
                    FOR EACH STATEMENT EXECUTE FUNCTION tidings.row_event('user_id', 'thing');
                CREATE TABLE one_argument (user_id int);
                CREATE TRIGGER one_argument_tidings AFTER INSERT ON one_argument
                    FOR EACH ROW EXECUTE FUNCTION tidings.row_event('user_id');
                """)
            let missing = await #expect(throws: PostgresError.self) { try await SQL.run(url, "INSERT INTO misnamed VALUES (1)") }
            #expect(missing?.serverMessage?.contains(#"table public.misnamed has no column "user_id""#) == true)
            let level = await #expect(throws: PostgresError.self) { try await SQL.run(url, "INSERT INTO statement_level VALUES (1)") }
            #expect(level?.serverMessage?.contains("must be an AFTER … FOR EACH ROW trigger") == true)
            let arguments = await #expect(throws: PostgresError.self) { try await SQL.run(url, "INSERT INTO one_argument VALUES (1)") }
            #expect(arguments?.serverMessage?.contains("takes two arguments, 1 given") == true)
            #expect(try await SQL.value(url, "SELECT count(*) FROM tidings.events") == "2")
        }
    }

    @Test func plainNotifyIsDeliveredLiveWithoutAnIdAndInvalidOnesAreCounted() async throws {
        try await TestDatabase.with { (url: String) async throws in
            let metrics = TestMetrics()
            try await withBackend(url, metrics: metrics) { backend, bus in
                let probe = try await readyProbe(backend, bus, ["user:42", "topic:ops"])
                defer { probe.close() }
                try await SQL.run(url, #"NOTIFY tidings, 'not json at all'"#)
                try await SQL.run(url, #"NOTIFY tidings, '{"user":"42"}'"#)
                try await SQL.run(url, #"NOTIFY tidings, '{"users":["42"],"topics":["ops"],"event":"maintenance","data":{"in": "5m"}}'"#)
                let events = try await probe.waitFor(count: 1)
                #expect(events == [Received(id: nil, type: "maintenance", data: #"{"in":"5m"}"#)])
                try await eventually { metrics.counterTotal(label: "tidings_notify_invalid_total") == 2 }
                // The listener is still serving.
                try await SQL.run(url, "SELECT tidings.publish('topic:ops', 'after', 'true')")
                let all = try await probe.waitFor(count: 2)
                #expect(all[1] == Received(id: 1, type: "after", data: "true"))
            }
        }
    }

    @Test func invalidTargetOrTypeRaisesAClearSQLError() async throws {
        try await TestDatabase.with { (url: String) async throws in
            let error = await #expect(throws: PostgresError.self) {
                try await SQL.run(url, "SELECT tidings.publish('x', 'ok', '{}')")
            }
            #expect(error?.sqlState == "22023")
            #expect(error?.serverMessage?.contains(#"invalid target "x": must be user:<id> or topic:<name>"#) == true)
            let arrayError = await #expect(throws: PostgresError.self) {
                try await SQL.run(url, "SELECT tidings.publish(ARRAY['user:1', 'topic:bad name'], 'ok', '{}')")
            }
            #expect(arrayError?.serverMessage?.contains(#"invalid target "topic:bad name""#) == true)
            let typeError = await #expect(throws: PostgresError.self) {
                try await SQL.run(url, "SELECT tidings.publish('user:1', 'bad type!', '{}')")
            }
            #expect(typeError?.serverMessage?.contains(#"invalid event type "bad type!""#) == true)
            await #expect(throws: PostgresError.self) {
                try await SQL.run(url, "SELECT tidings.publish(ARRAY[]::text[], 'ok', '{}')")
            }
            #expect(try await SQL.value(url, "SELECT count(*) FROM tidings.events") == "0")
            // The description never carries the server's message.
            #expect(error.map { "\($0)" } == "PostgreSQL query failed (SQLSTATE 22023)")
        }
    }

    @Test func largeDataIsDeliveredIntact() async throws {
        try await TestDatabase.with { (url: String) async throws in
            try await withBackend(url) { backend, bus in
                let probe = try await readyProbe(backend, bus, ["topic:big"])
                defer { probe.close() }
                let text = String((0..<100_000).map { _ in "abcdefghijklmnopqrstuvwxyz0123456789".randomElement()! })
                let data = #"{"blob":""# + text + #""}"#
                try await SQL.run(url, "SELECT tidings.publish('topic:big', 'big', $1::jsonb)", [data])
                let events = try await probe.waitFor(count: 1)
                #expect(events[0].data == data)
                #expect(events[0].data.utf8.count > 100_000)
            }
        }
    }

    @Test func outOfOrderCommitsAreDeliveredInIdOrder() async throws {
        try await TestDatabase.with { (url: String) async throws in
            try await withBackend(url) { backend, bus in
                let probe = try await readyProbe(backend, bus, ["user:1"])
                defer { probe.close() }
                let t1 = try await TestConnection.open(url)
                let t2 = try await TestConnection.open(url)
                defer { Task { await t1.close(); await t2.close() } }
                try await t1.execute("BEGIN")
                let id1 = try await t1.query("SELECT tidings.publish('user:1', 'first', '1')").single().int64(0)
                try await t2.execute("BEGIN")
                let id2 = try await t2.query("SELECT tidings.publish('user:1', 'second', '2')").single().int64(0)
                #expect(id1 < id2)
                let readsBefore = backend.listener.status.reads
                try await t2.execute("COMMIT")
                // The listener has seen 11 and is waiting on 10's transaction: nothing delivered.
                try await eventually("the listener to wait on the hole") {
                    let status = backend.listener.status
                    return status.waitingOnHole && status.reads > readsBefore
                }
                #expect(probe.events.isEmpty)
                #expect(bus.lastDelivered == 0)
                try await t1.execute("COMMIT")
                let events = try await probe.waitFor(count: 2)
                #expect(events.map(\.id) == [id1, id2])
                #expect(events.map(\.type) == ["first", "second"])
            }
        }
    }

    @Test func aRolledBackHoleSettlesAndLaterEventsAreDelivered() async throws {
        try await TestDatabase.with { (url: String) async throws in
            let metrics = TestMetrics()
            try await withBackend(url, metrics: metrics) { backend, bus in
                let probe = try await readyProbe(backend, bus, ["user:1"])
                defer { probe.close() }
                let t1 = try await TestConnection.open(url)
                defer { Task { await t1.close() } }
                try await t1.execute("BEGIN")
                let id1 = try await t1.query("SELECT tidings.publish('user:1', 'doomed', '1')").single().int64(0)
                let id2 = try #require(EventID(try await SQL.value(url, "SELECT tidings.publish('user:1', 'kept', '2')") ?? ""))
                #expect(id1 < id2)
                try await eventually("the listener to wait on the hole") { backend.listener.status.waitingOnHole }
                #expect(probe.events.isEmpty)
                try await t1.execute("ROLLBACK")
                let events = try await probe.waitFor(count: 1)
                #expect(events.map(\.id) == [id2])
                #expect(bus.lastDelivered == id2)
                #expect(metrics.counterTotal(label: "tidings_order_wait_expired_total") == 0)
            }
        }
    }

    @Test func orderWaitExpiresAndALateCommitIsReplayableButNotLive() async throws {
        try await TestDatabase.with { (url: String) async throws in
            let metrics = TestMetrics()
            try await withBackend(url, metrics: metrics, configure: { $0.orderWait = .milliseconds(300) }) { backend, bus in
                let probe = try await readyProbe(backend, bus, ["user:1"])
                defer { probe.close() }
                let t1 = try await TestConnection.open(url)
                defer { Task { await t1.close() } }
                try await t1.execute("BEGIN")
                let id1 = try await t1.query("SELECT tidings.publish('user:1', 'slow', '1')").single().int64(0)
                let id2 = try #require(EventID(try await SQL.value(url, "SELECT tidings.publish('user:1', 'fast', '2')") ?? ""))
                let events = try await probe.waitFor(count: 1)
                #expect(events.map(\.id) == [id2])
                #expect(metrics.counterTotal(label: "tidings_order_wait_expired_total") == 1)
                try await t1.execute("COMMIT")
                let id3 = try #require(EventID(try await SQL.value(url, "SELECT tidings.publish('user:1', 'next', '3')") ?? ""))
                let all = try await probe.waitFor(count: 2)
                #expect(all.map(\.id) == [id2, id3])
                let page = try await backend.store.replay(targets: [.user("1")], after: 0, through: id3, limit: 10)
                #expect(page.events.map(\.id) == [id1, id2, id3])
            }
        }
    }

    @Test func twoListenersSeeTheSameIdsInTheSameOrder() async throws {
        try await TestDatabase.with { (url: String) async throws in
            try await withBackend(url) { backendA, busA in
                try await withBackend(url, configure: { $0.wakeup = .notify }) { backendB, busB in
                    let probeA = try await readyProbe(backendA, busA, ["topic:t"])
                    let probeB = try await readyProbe(backendB, busB, ["topic:t"])
                    defer { probeA.close(); probeB.close() }
                    // Concurrent publishers, some rolling back.
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        for worker in 0..<4 {
                            group.addTask {
                                for n in 0..<25 {
                                    let end = (n + worker) % 5 == 0 ? "ROLLBACK" : "COMMIT"
                                    try await SQL.run(url, "BEGIN; SELECT tidings.publish('topic:t', 'n', '\(n)'); \(end)")
                                }
                            }
                        }
                        try await group.waitForAll()
                    }
                    let committed = try await SQL.run(url, "SELECT id FROM tidings.events ORDER BY id").rows.map { try $0.int64(0) }
                    try await probeA.waitFor(count: committed.count)
                    try await probeB.waitFor(count: committed.count)
                    #expect(probeA.ids == committed)
                    #expect(probeB.ids == committed)
                }
            }
        }
    }

    @Test func aRestartedGatewayStartsWhereDeliveryWasSettled() async throws {
        try await TestDatabase.with { (url: String) async throws in
            try await withBackend(url) { backend, bus in
                #expect(backend.startHorizon == 0)
                let probe = try await readyProbe(backend, bus, ["user:1"])
                defer { probe.close() }
                _ = try await backend.store.publish((0..<10).map { _ in newEvent("user:1") }, publisher: "p")
                try await probe.waitFor(count: 10)
            }
            // The listener recorded how far delivery is settled when it stopped.
            #expect(try await SQL.value(url, "SELECT value FROM tidings.state WHERE name = 'settled_through'") == "10")
            let bus = EventBus()
            try await withBackend(url, bus: bus) { backend, bus in
                #expect(backend.startHorizon == 10)
                #expect(bus.lastDelivered == 10)
                let probe = try await readyProbe(backend, bus, ["user:1"])
                defer { probe.close() }
                _ = try await backend.store.publish([newEvent("user:1")], publisher: "p")
                try await probe.waitFor(count: 1)
                #expect(probe.ids == [11])
            }
        }
    }
}
