/// The shared transaction-level advisory lock every publisher holds from before it takes an
/// event id until its transaction ends (`migrations/0002_order_lock_and_privileges.sql`). At a
/// hole the listener waits for its holders only.
enum OrderLock {
    /// The lock's `bigint` key: "tidings" in ASCII, then 2.
    static let key: Int64 = 0x7469_6469_6e67_7302
    /// `pg_locks.classid` of the lock: the key's high 32 bits.
    static let classID = UInt32(truncatingIfNeeded: key >> 32)
    /// `pg_locks.objid` of the lock: the key's low 32 bits (`objsubid` is 1 for a `bigint` key).
    static let objectID = UInt32(truncatingIfNeeded: key)

    /// `true` when some transaction of this database holds the order lock: a publisher that may
    /// still store events (pg_locks, read once).
    static let heldSQL = """
        SELECT EXISTS (
            SELECT FROM pg_locks
            WHERE locktype = 'advisory' AND granted
                AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                AND classid = \(classID) AND objid = \(objectID) AND objsubid = 1)
        """
}

/// The session-level advisory lock a listener holds (shared) while it sleeps
/// (`migrations/0003_cheap_trigger_and_wakeup.sql`): a publisher sends `NOTIFY tidings_wakeup`
/// only when it cannot take this lock exclusively, so under load, with every listener awake and
/// reading, nobody notifies and commits are not serialised on PostgreSQL's notification lock.
enum SleepLock {
    /// The lock's `bigint` key: "tidings" in ASCII, then 3.
    static let key: Int64 = 0x7469_6469_6e67_7303
    /// What a publisher notifies when the lock is held.
    static let channel = "tidings_wakeup"
    static let takeSQL = "SELECT pg_advisory_lock_shared(\(key))"
    static let releaseSQL = "SELECT pg_advisory_unlock_shared(\(key))"
}
