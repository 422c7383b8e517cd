/// A dependency (the database) cannot be reached; the CLI exits with 69.
public struct DependencyUnavailable: Error, CustomStringConvertible, Sendable {
    public var description: String

    public init(_ description: String) {
        self.description = description
    }
}
