import Foundation
public import HTTPTypes
public import Hummingbird
public import TidingsCore

/// An RFC 9457 problem (`application/problem+json`): every error Tidings answers with.
public struct Problem: HTTPResponseError, Encodable, Sendable {
    public var status: HTTPResponse.Status
    public var type: String
    public var title: String
    public var detail: String
    public var errors: [PublishError.FieldError]?
    /// Extra response headers (`Retry-After`, `WWW-Authenticate`).
    public var headers: HTTPFields = [:]

    public init(
        _ status: HTTPResponse.Status, type: String, title: String, detail: String,
        errors: [PublishError.FieldError]? = nil, headers: HTTPFields = [:]
    ) {
        self.status = status
        self.type = "https://tidings.dev/problems/\(type)"
        self.title = title
        self.detail = detail
        self.errors = errors
        self.headers = headers
    }

    private enum CodingKeys: String, CodingKey {
        case type, title, status, detail, errors
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(type, forKey: .type)
        try container.encode(title, forKey: .title)
        try container.encode(Int(status.code), forKey: .status)
        try container.encode(detail, forKey: .detail)
        try container.encodeIfPresent(errors, forKey: .errors)
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        Response(status: status, headers: responseHeaders, body: .init(byteBuffer: try body()))
    }

    /// The headers of the problem's response: its own and the content type.
    var responseHeaders: HTTPFields {
        var headers = self.headers
        headers[.contentType] = "application/problem+json"
        return headers
    }

    /// The problem as its JSON document.
    func body() throws -> ByteBuffer {
        ByteBuffer(bytes: try Self.encoder.encode(self))
    }

    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }()
}

extension Problem {
    static func unauthorized(_ detail: String) -> Problem {
        Problem(.unauthorized, type: "unauthorized", title: "Unauthorized", detail: detail,
                headers: [.wwwAuthenticate: "Bearer"])
    }

    static func forbidden(_ detail: String, errors: [PublishError.FieldError]? = nil) -> Problem {
        Problem(.forbidden, type: "forbidden", title: "Forbidden", detail: detail, errors: errors)
    }

    static func badRequest(_ detail: String, type: String = "bad-request") -> Problem {
        Problem(.badRequest, type: type, title: "Bad Request", detail: detail)
    }

    static func unavailable(_ detail: String, retryAfter: Int) -> Problem {
        Problem(.serviceUnavailable, type: "unavailable", title: "Service Unavailable", detail: detail,
                headers: [.retryAfter: String(retryAfter)])
    }

    /// The database connection was lost during COMMIT and the server could not tell whether the
    /// transaction committed.
    static let outcomeUnknown = Problem(
        .serviceUnavailable, type: "outcome-unknown", title: "Publish Outcome Unknown",
        detail: "the database connection was lost during COMMIT and whether the events were stored cannot be known; "
            + "retrying with the same idempotency_key on every event is safe; without idempotency keys a retry may store the events twice, "
            + "so give every event an idempotency_key to make publishes safe to retry",
        headers: [.retryAfter: "2"])

    static func publish(_ error: PublishError) -> Problem {
        switch error {
        case .malformed(let reason):
            Problem(.badRequest, type: "malformed-json", title: "Malformed JSON", detail: "the body is not valid JSON: \(reason)")
        case .tooLarge(let errors):
            Problem(.contentTooLarge, type: "event-too-large", title: "Event Too Large",
                    detail: "an event's data is larger than --max-event-bytes", errors: errors)
        case .invalid(let errors):
            Problem(.unprocessableContent, type: "invalid-event", title: "Invalid Event",
                    detail: "the request has invalid fields; nothing was stored", errors: errors)
        }
    }
}
