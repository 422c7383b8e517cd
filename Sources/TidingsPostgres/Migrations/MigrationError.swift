/// Why migrating, or starting on a database, was refused.
public struct MigrationError: Error, Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    private enum Kind: Sendable {
        case changed(name: String)
        case notMigrated(pending: [String])
        case failed(name: String, underlying: PostgresError)
        case newer(unknown: [String])
        case badSequence(increment: Int64, cache: Int64)
    }

    private let kind: Kind

    /// An applied migration's file differs from the one in this build.
    static func changed(_ name: String) -> MigrationError { MigrationError(kind: .changed(name: name)) }
    /// Migrations are pending: the database needs `tidings migrate`.
    static func notMigrated(_ pending: [String]) -> MigrationError { MigrationError(kind: .notMigrated(pending: pending)) }
    /// Applying a migration failed; nothing of it was kept.
    static func failed(_ name: String, _ underlying: PostgresError) -> MigrationError {
        MigrationError(kind: .failed(name: name, underlying: underlying))
    }

    /// The database was migrated by a newer Tidings: it records migrations this build lacks.
    static func newer(_ unknown: [String]) -> MigrationError { MigrationError(kind: .newer(unknown: unknown)) }
    /// `tidings.events_id_seq` was altered: ids would not be handed out in the order asked for.
    static func badSequence(increment: Int64, cache: Int64) -> MigrationError {
        MigrationError(kind: .badSequence(increment: increment, cache: cache))
    }

    /// The migration concerned, or the first pending one.
    public var migration: String? {
        switch kind {
        case .changed(let name), .failed(let name, _): name
        case .notMigrated(let pending): pending.first
        case .newer(let unknown): unknown.first
        case .badSequence: nil
        }
    }

    /// Pending migrations, for `notMigrated`.
    public var pending: [String] {
        if case .notMigrated(let pending) = kind { return pending }
        return []
    }

    /// True when the schema is not migrated (as opposed to a changed or failing migration).
    public var isNotMigrated: Bool {
        if case .notMigrated = kind { return true }
        return false
    }

    public var description: String {
        switch kind {
        case .changed(let name):
            "migration \(name) was changed after it was applied (its checksum differs from the recorded one); "
                + "restore the applied version and put the change in a new migration file"
        case .notMigrated(let pending):
            "the database schema is not migrated: \(pending.count) migration(s) pending (\(pending.joined(separator: ", "))); "
                + "run `tidings migrate`"
        case .failed(let name, let underlying):
            "migration \(name) failed and was rolled back: \(underlying)"
        case .newer(let unknown):
            "the database was migrated by a newer Tidings: it has migration(s) this binary does not know "
                + "(\(unknown.joined(separator: ", "))); run a Tidings version that has them"
        case .badSequence(let increment, let cache):
            "tidings.events_id_seq has INCREMENT \(increment) and CACHE \(cache); delivery order needs both to be 1: "
                + "run `ALTER SEQUENCE tidings.events_id_seq INCREMENT 1 CACHE 1` as its owner"
        }
    }

    public var debugDescription: String {
        if case .failed(let name, let underlying) = kind {
            return "migration \(name) failed and was rolled back: \(underlying.debugDescription)"
        }
        return description
    }
}
