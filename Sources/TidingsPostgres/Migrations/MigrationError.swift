/// Why migrating, or starting on a database, was refused.
public struct MigrationError: Error, Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    private enum Kind: Sendable {
        case changed(name: String)
        case notMigrated(pending: [String])
        case failed(name: String, underlying: PostgresError)
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

    /// The migration concerned, or the first pending one.
    public var migration: String? {
        switch kind {
        case .changed(let name), .failed(let name, _): name
        case .notMigrated(let pending): pending.first
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
        }
    }

    public var debugDescription: String {
        if case .failed(let name, let underlying) = kind {
            return "migration \(name) failed and was rolled back: \(underlying.debugDescription)"
        }
        return description
    }
}
