/// A PostgreSQL snapshot (`pg_current_snapshot()`): which transactions had ended when it was
/// taken.
struct PGSnapshot: Sendable, Equatable {
    /// Every transaction below it had ended.
    var xmin: UInt64
    /// Every transaction at or above it had not ended.
    var xmax: UInt64
    /// Transactions between `xmin` and `xmax` still in progress.
    var inProgress: Set<UInt64>

    init(xmin: UInt64, xmax: UInt64, inProgress: Set<UInt64>) {
        self.xmin = xmin
        self.xmax = xmax
        self.inProgress = inProgress
    }

    /// Parses the text form `xmin:xmax:xip,xip,…`.
    init?(_ text: String) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 3, let xmin = UInt64(parts[0]), let xmax = UInt64(parts[1]) else { return nil }
        var inProgress = Set<UInt64>()
        for item in parts[2].split(separator: ",") {
            guard let xid = UInt64(item) else { return nil }
            inProgress.insert(xid)
        }
        self.init(xmin: xmin, xmax: xmax, inProgress: inProgress)
    }

    /// The 64-bit form of a 32-bit transaction id (`pg_locks`, `xid`) of a transaction that was
    /// in progress near this snapshot: the one within 2³¹ of `xmax`.
    func widen(_ xid: UInt32) -> UInt64 {
        let epochBase = xmax & ~UInt64(0xFFFF_FFFF)
        var candidate = epochBase | UInt64(xid)
        if candidate > xmax, candidate - xmax > 1 << 31, candidate >= 1 << 32 {
            candidate -= 1 << 32
        } else if candidate < xmax, xmax - candidate > 1 << 31 {
            candidate += 1 << 32
        }
        return candidate
    }

    /// True when `xid` had ended (committed or rolled back) as this snapshot sees it.
    func hasEnded(_ xid: UInt64) -> Bool {
        xid < xmax && !inProgress.contains(xid)
    }
}
