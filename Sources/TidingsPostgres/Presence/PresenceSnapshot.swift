import TidingsCore

/// One instance's open streams as the rows of `tidings.presence`: (target, user) → streams.
///
/// The reporter keeps the snapshot it last wrote and sends only the difference to the next one.
struct PresenceSnapshot: Sendable, Equatable {
    struct Key: Hashable, Sendable, Comparable {
        /// `user:<id>` or `topic:<name>`.
        var target: String
        var user: String

        static func < (lhs: Key, rhs: Key) -> Bool {
            (lhs.target, lhs.user) < (rhs.target, rhs.user)
        }
    }

    /// What changed between two snapshots, in key order.
    struct Changes: Sendable, Equatable {
        /// Rows to insert or whose count changed.
        var upserts: [(key: Key, connections: Int)] = []
        /// Rows whose streams all closed.
        var removals: [Key] = []

        var isEmpty: Bool { upserts.isEmpty && removals.isEmpty }
        /// Rows written.
        var count: Int { upserts.count + removals.count }

        static func == (lhs: Changes, rhs: Changes) -> Bool {
            lhs.removals == rhs.removals && lhs.upserts.elementsEqual(rhs.upserts) { $0.key == $1.key && $0.connections == $1.connections }
        }
    }

    var rows: [Key: Int]

    init(rows: [Key: Int] = [:]) {
        self.rows = rows
    }

    /// The rows of `EventBus.presenceCounts()`; targets or users without a stream have none.
    init(_ counts: [Target: [String: Int]]) {
        var rows: [Key: Int] = [:]
        rows.reserveCapacity(counts.reduce(0) { $0 + $1.value.count })
        for (target, users) in counts {
            let name = target.description
            for (user, connections) in users where connections > 0 {
                rows[Key(target: name, user: user)] = connections
            }
        }
        self.rows = rows
    }

    /// What turns `previous` into this snapshot.
    func changes(since previous: PresenceSnapshot) -> Changes {
        var changes = Changes()
        for (key, connections) in rows where previous.rows[key] != connections {
            changes.upserts.append((key, connections))
        }
        for key in previous.rows.keys where rows[key] == nil {
            changes.removals.append(key)
        }
        changes.upserts.sort { $0.key < $1.key }
        changes.removals.sort()
        return changes
    }

    /// Every row, as changes from nothing.
    var all: Changes {
        changes(since: PresenceSnapshot())
    }
}
