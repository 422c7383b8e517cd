/// One schema migration: a numbered file from `migrations/`, embedded at build time by the
/// EmbedMigrations plugin.
struct Migration: Sendable, Equatable {
    /// The file name, such as `0001_initial.sql`; migrations apply in name order.
    var name: String
    /// The file's text, applied as one transaction.
    var sql: String
}
