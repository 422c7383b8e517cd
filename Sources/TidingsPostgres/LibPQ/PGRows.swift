import CLibPQ

/// The rows of one result, copied out of libpq (text format), so they outlive the result.
struct PGRows: Sendable {
    /// Each row's values; `nil` is SQL NULL.
    let rows: [PGRow]
    /// Rows affected by an INSERT, UPDATE or DELETE.
    let affected: Int

    init(_ result: OpaquePointer) {
        let rowCount = Int(PQntuples(result))
        let columnCount = Int(PQnfields(result))
        var rows: [PGRow] = []
        rows.reserveCapacity(rowCount)
        for row in 0..<rowCount {
            var values: [String?] = []
            values.reserveCapacity(columnCount)
            for column in 0..<columnCount {
                if PQgetisnull(result, Int32(row), Int32(column)) != 0 {
                    values.append(nil)
                } else {
                    let length = Int(PQgetlength(result, Int32(row), Int32(column)))
                    let pointer = PQgetvalue(result, Int32(row), Int32(column))!
                    let bytes = UnsafeRawBufferPointer(start: pointer, count: length)
                    values.append(String(decoding: bytes, as: UTF8.self))
                }
            }
            rows.append(PGRow(values: values))
        }
        self.rows = rows
        self.affected = Int(String(cString: PQcmdTuples(result))) ?? 0
    }

    var count: Int { rows.count }
    var isEmpty: Bool { rows.isEmpty }
    var first: PGRow? { rows.first }

    /// The only row of a result that must have exactly one.
    func single() throws(PostgresError) -> PGRow {
        guard rows.count == 1 else { throw PostgresError(.unexpectedResult) }
        return rows[0]
    }
}

/// One row in text format, with typed access by column index.
struct PGRow: Sendable {
    let values: [String?]

    func isNull(_ column: Int) -> Bool {
        values[column] == nil
    }

    func string(_ column: Int) throws(PostgresError) -> String {
        guard column < values.count, let value = values[column] else { throw PostgresError(.unexpectedResult) }
        return value
    }

    func optionalString(_ column: Int) -> String? {
        column < values.count ? values[column] : nil
    }

    func int64(_ column: Int) throws(PostgresError) -> Int64 {
        guard let value = Int64(try string(column)) else { throw PostgresError(.unexpectedResult) }
        return value
    }

    func optionalInt64(_ column: Int) throws(PostgresError) -> Int64? {
        guard let text = optionalString(column) else { return nil }
        guard let value = Int64(text) else { throw PostgresError(.unexpectedResult) }
        return value
    }

    func uint64(_ column: Int) throws(PostgresError) -> UInt64 {
        guard let value = UInt64(try string(column)) else { throw PostgresError(.unexpectedResult) }
        return value
    }

    func double(_ column: Int) throws(PostgresError) -> Double {
        guard let value = Double(try string(column)) else { throw PostgresError(.unexpectedResult) }
        return value
    }

    func optionalDouble(_ column: Int) throws(PostgresError) -> Double? {
        guard let text = optionalString(column) else { return nil }
        guard let value = Double(text) else { throw PostgresError(.unexpectedResult) }
        return value
    }

    func bool(_ column: Int) throws(PostgresError) -> Bool {
        switch try string(column) {
        case "t": return true
        case "f": return false
        default: throw PostgresError(.unexpectedResult)
        }
    }
}

/// Text-format array literals for parameters (`$1::text[]`).
enum PGArray {
    /// `{"a","b\"c"}`: every element quoted, `"` and `\` escaped.
    static func text<S: Sequence<String>>(_ elements: S) -> String {
        var literal = "{"
        var first = true
        for element in elements {
            if !first { literal.append(",") }
            first = false
            literal.append("\"")
            for character in element.unicodeScalars {
                if character == "\"" || character == "\\" { literal.unicodeScalars.append("\\") }
                literal.unicodeScalars.append(character)
            }
            literal.append("\"")
        }
        literal.append("}")
        return literal
    }

    /// `{1,2,3}`
    static func int64<S: Sequence<Int64>>(_ elements: S) -> String {
        "{" + elements.map(String.init).joined(separator: ",") + "}"
    }
}
