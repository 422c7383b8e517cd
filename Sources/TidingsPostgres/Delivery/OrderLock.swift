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
}
