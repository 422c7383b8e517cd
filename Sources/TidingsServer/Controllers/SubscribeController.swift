public import Hummingbird
import Logging
import Foundation
import HTTPTypes
import NIOCore
import Metrics
import TidingsCore

/// `GET /events`: one Server-Sent Events stream per request.
public struct SubscribeController: Sendable {
    public typealias Context = TidingsRequestContext
    let gateway: Gateway

    public init(gateway: Gateway) {
        self.gateway = gateway
    }

    public func addRoutes(to router: Router<Context>) {
        router.get("/events", use: subscribe)
    }

    /// Opens the stream in a child task (see ``inChildTask(_:)``): the connection's task only
    /// keeps the frames of the routing.
    @Sendable func subscribe(_ request: Request, context: Context) async throws -> Response {
        let channel = context.channel
        return try await inChildTask { try await open(request, channel: channel) }
    }

    private func open(_ request: Request, channel: any Channel) async throws -> Response {
        let parsed = try await StreamRequest.parse(request, gateway: gateway)
        let targets = parsed.targets
        let resumePoint = parsed.resumePoint
        let subscriber = parsed.subscriber
        let (subscription, horizon) = try parsed.subscribe(
            on: gateway, hold: resumePoint != nil, transport: .sse,
            // Weak: once the stream has its own channel, Hummingbird's is closed and must not be
            // kept alive by the subscription.
            interrupt: { [weak channel] in channel?.close(promise: nil) })
        gateway.logger.debug(
            "stream opened",
            metadata: [
                "tidings.user": .string(subscriber.user),
                "tidings.topics": .stringConvertible(targets.count - 1),
                "tidings.resume": resumePoint.map { .stringConvertible($0) } ?? "none",
            ])
        let stream = EventStream(
            gateway: gateway, channel: channel, subscription: subscription, targets: Set(targets),
            resumePoint: resumePoint, horizon: horizon)
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream; charset=utf-8"
        headers[.cacheControl] = "no-cache"
        headers[HTTPField.Name("X-Accel-Buffering")!] = "no"
        // The stream's connection serves nothing else and closes when the stream ends.
        headers[.connection] = "close"
        return Response(
            status: .ok, headers: headers,
            body: ResponseBody { writer in
                // Returns once the stream is handed to the connection's event loop (see
                // StreamSink), which notices the client leaving; a client that leaves during
                // the replay fails its writes. The replay runs in a child task too.
                let moved = MovedToChildTask(value: writer)
                writer = try await inChildTask {
                    var writer = moved.value
                    try await stream.run(writer: &writer)
                    return MovedToChildTask(value: writer)
                }.value
            })
    }
}
