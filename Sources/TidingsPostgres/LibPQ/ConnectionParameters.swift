/// What `PQconnectdbParams` gets: the configured URL or conninfo (optional: without it libpq's
/// `PG*` environment variables and defaults apply), preceded by Tidings' defaults so that
/// anything the URL says wins, and followed by overrides that win over the URL.
struct ConnectionParameters: Sendable {
    /// A `postgresql://` URI, a `key=value` conninfo string or a database name; `nil` for
    /// libpq's defaults (`PGHOST`, `PGDATABASE`, …).
    var url: String?
    /// Applied before the URL: the URL can change them.
    var defaults: [(String, String)]
    /// Applied after the URL: they replace what the URL says (tests use it to pick a database).
    var overrides: [(String, String)]

    init(url: String?, defaults: [(String, String)] = ConnectionParameters.standardDefaults, overrides: [(String, String)] = []) {
        self.url = url
        self.defaults = defaults
        self.overrides = overrides
    }

    /// Always applied last: Tidings reads and writes UTF-8 (event data, targets, keys),
    /// whatever the URL, `PGCLIENTENCODING` or the server's default say.
    static let fixed: [(String, String)] = [("client_encoding", "UTF8")]

    /// TCP keepalives so a silent peer is noticed, a connect timeout, and a name for
    /// `pg_stat_activity`.
    static let standardDefaults: [(String, String)] = [
        ("fallback_application_name", "tidings"),
        ("connect_timeout", "10"),
        ("keepalives", "1"),
        ("keepalives_idle", "10"),
        ("keepalives_interval", "5"),
        ("keepalives_count", "3"),
        ("tcp_user_timeout", "20000"),
    ]

    /// The same parameters with a different application name (shows which part of the gateway
    /// a backend serves).
    func named(_ applicationName: String) -> ConnectionParameters {
        var copy = self
        copy.defaults.removeAll { $0.0 == "fallback_application_name" }
        copy.defaults.insert(("fallback_application_name", applicationName), at: 0)
        return copy
    }

    /// Keyword and value lists in the order libpq processes them (the last value wins).
    var pairs: [(String, String)] {
        var pairs = defaults
        if let url, !url.isEmpty { pairs.append(("dbname", url)) }
        pairs.append(contentsOf: overrides)
        pairs.append(contentsOf: Self.fixed)
        return pairs
    }
}
