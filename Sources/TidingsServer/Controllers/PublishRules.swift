import HTTPTypes
import NIOCore
import TidingsCore

/// What `POST /events` checks, in order, for both of its front ends: the router's
/// ``PublishController`` and, in memory mode, the inline path on the event loop
/// (``InlinePublisher``). Both call these functions in the same order, so they cannot drift:
///
/// 1. ``credential(_:)``: `401` without a bearer credential (the publisher it names is found by
///    `Authenticator`: `401` unknown, `403` a token without a `publish` claim);
/// 2. ``checkHead(_:)``: `415` not JSON, `413` a `Content-Length` over `--max-body`;
/// 3. ``decide(body:publisher:)``: `413` a body over `--max-body`, `400` malformed JSON, `413` an
///    event's `data` over `--max-event-bytes`, `422` invalid fields, `403` a target the
///    publisher may not publish to.
///
/// The inline path answers only what passes every step; a request any step refuses goes to the
/// router as it came, so every error answer is the router's.
struct PublishRules: Sendable {
    /// `--max-body`.
    let maxBody: Int
    private let limits: PublishRequest.Limits

    init(maxBody: Int, maxEventBytes: Int) {
        self.maxBody = maxBody
        self.limits = .init(maxEventBytes: maxEventBytes)
    }

    init(_ configuration: TidingsConfiguration) {
        self.init(maxBody: configuration.maxBody, maxEventBytes: configuration.maxEventBytes)
    }

    /// The fields of a request head the rules read, taken in one pass with no copies (the inline
    /// path reads every publish's head). A field given more than once is joined with `, `, as
    /// `HTTPFields` joins it.
    struct Head {
        var contentType: String?
        var authorization: String?
        var contentLength: String?
        /// `Connection` or `Expect` is present: how the connection goes on is the router's.
        var hasConnectionOrExpect = false
        /// `Origin` is present: a CORS request.
        var hasOrigin = false

        init(_ fields: HTTPFields) {
            for field in fields {
                switch field.name {
                case .contentType: Self.add(field.value, to: &contentType)
                case .authorization: Self.add(field.value, to: &authorization)
                case .contentLength: Self.add(field.value, to: &contentLength)
                case .connection, .expect: hasConnectionOrExpect = true
                case .origin: hasOrigin = true
                default: continue
                }
            }
        }

        private static func add(_ value: String, to slot: inout String?) {
            slot = slot.map { $0 + ", " + value } ?? value
        }
    }

    /// The publisher credential of `Authorization: Bearer …`.
    /// - Throws: `401` without the header or with another scheme.
    static func credential(_ head: Head) throws(Problem) -> String {
        guard let credential = HTTPFields.bearerCredential(head.authorization) else {
            throw Problem.unauthorized("this needs a publisher credential: Authorization: Bearer <token or publish key>")
        }
        guard !credential.isEmpty else {
            throw Problem.unauthorized("the Authorization header must be \"Bearer <token or publish key>\"")
        }
        return credential
    }

    /// The head's own checks, once the publisher is known.
    /// - Throws: `415` when the body is not JSON, `413` when `Content-Length` is over `--max-body`.
    func checkHead(_ head: Head) throws(Problem) {
        guard PublishController.isJSON(head.contentType) else {
            throw Problem(.unsupportedMediaType, type: "unsupported-media-type", title: "Unsupported Media Type",
                          detail: "the body must be application/json")
        }
        if let length = head.contentLength.flatMap(Int.init), length > maxBody {
            throw PublishController.bodyTooLarge(maxBody)
        }
    }

    /// The events of `body`, all of which `publisher` may publish.
    /// - Throws: `413` over `--max-body` or `--max-event-bytes`, `400` malformed JSON, `422`
    ///   invalid fields, `403` a target `publisher` may not publish to.
    func decide(body: ByteBuffer?, publisher: Publisher) throws(Problem) -> PublishRequest {
        if let body, body.readableBytes > maxBody { throw PublishController.bodyTooLarge(maxBody) }
        let decoded: PublishRequest
        do {
            decoded = try PublishRequest.decode(body.map { Array($0.readableBytesView) } ?? [], limits: limits)
        } catch {
            throw Problem.publish(error)
        }
        try Self.authorize(decoded, publisher: publisher)
        return decoded
    }

    /// - Throws: `403` when `publisher` may not publish to every target of `decoded`.
    static func authorize(_ decoded: PublishRequest, publisher: Publisher) throws(Problem) {
        var denied: [PublishError.FieldError] = []
        for (index, event) in decoded.events.enumerated() {
            for target in event.targets where !publisher.mayPublish(to: target) {
                let pointer = decoded.isBatch ? "/\(index)" : ""
                denied.append(.init(pointer: pointer, detail: "this publisher may not publish to \(target)"))
            }
        }
        if !denied.isEmpty {
            throw Problem.forbidden("the credential may not publish to every target; nothing was stored", errors: denied)
        }
    }
}
