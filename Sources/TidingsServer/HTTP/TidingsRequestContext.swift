public import Hummingbird
public import NIOCore

/// The request context: Hummingbird's core context plus the connection's channel, so a stream
/// can close its connection when the client stops reading.
public struct TidingsRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.channel = source.channel
    }
}
