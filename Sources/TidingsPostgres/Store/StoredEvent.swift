import Foundation
import TidingsCore

/// Turns a `tidings.events` row into an `Event`.
///
/// Columns, in order: id, targets joined by spaces, event type, data as text, created_at as
/// epoch seconds. `data` is compacted (SQL-published jsonb comes back with spaces); a REST body's
/// compact JSON is kept byte for byte.
enum StoredEvent {
    /// The columns to select, from a row source aliased `e`.
    static let columns = "e.id, array_to_string(e.targets, ' '), e.event, e.data::text, extract(epoch FROM e.created_at)::float8"

    /// The event of columns `offset…offset+4` of `row`, or `nil` when the row holds something
    /// no event can carry (written to the table by hand).
    static func decode(_ row: PGRow, at offset: Int = 0) throws(PostgresError) -> (id: EventID, event: Event?) {
        let id = try row.int64(offset)
        let targetText = try row.string(offset + 1)
        let typeText = try row.string(offset + 2)
        let data = try row.string(offset + 3)
        let createdAt = try row.double(offset + 4)
        var targets: [Target] = []
        for text in targetText.split(separator: " ") {
            guard let target = Target(String(text)) else { return (id, nil) }
            targets.append(target)
        }
        guard !targets.isEmpty, let type = EventType(typeText) else { return (id, nil) }
        let compact = JSONParser.compact(ArraySlice(data.utf8))
        return (id, Event(id: id, targets: targets, type: type, data: compact, createdAt: Date(timeIntervalSince1970: createdAt)))
    }
}
