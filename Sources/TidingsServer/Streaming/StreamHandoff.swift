#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import NIOPosix

/// Moves a stream's socket from Hummingbird's channel to a bare NIO channel on the same loop.
///
/// Hummingbird keeps a task, an async channel and an HTTP pipeline per connection for as long as
/// it is open (about 11 KiB before a request, more after); a stream needs none of them once its
/// head is written. So, once everything Hummingbird wrote reached the socket, the socket is
/// duplicated (`dup`), the copy is adopted by a new channel whose only handler is the stream's,
/// and Hummingbird's channel is closed: closing one descriptor of two sends nothing to the
/// client (NIO's full close is a plain `close`), and Hummingbird's handler sees its connection
/// closed and ends, freeing all of it.
enum StreamHandoff {
    /// Thrown to Hummingbird's handler once the stream lives on its own channel.
    struct HandedOver: Error, CustomStringConvertible {
        var description: String { "the stream's socket was handed to its own channel" }
    }

    struct Failed: Error, CustomStringConvertible {
        var description: String
    }

    /// On `channel`'s event loop. `setUp` installs the stream's handler on the new channel.
    static func hand(
        _ channel: any Channel, setUp: @escaping @Sendable (any Channel) throws -> Void
    ) -> EventLoopFuture<Void> {
        let loop = channel.eventLoop
        let quiet = QuietHandler()
        do {
            try channel.pipeline.syncOperations.addHandler(quiet, position: .first)
        } catch {
            return loop.makeFailedFuture(error)
        }
        let bound = NIOLoopBound(quiet, eventLoop: loop)
        return quiet.flushed.futureResult.flatMapThrowing { () -> CInt in
            let copy = try channel.pipeline.syncOperations.withUnsafeTransportIfAvailable(of: NIOBSDSocket.Handle.self) {
                fcntl($0, F_DUPFD_CLOEXEC, 0)
            }
            guard let copy else { throw Failed(description: "the channel does not expose its socket") }
            guard copy >= 0 else { throw Failed(description: "dup failed: errno \(errno)") }
            return copy
        }.flatMap { copy in
            ClientBootstrap(group: loop)
                .channelInitializer { stream in
                    loop.makeCompletedFuture { try setUp(stream) }
                }
                .withConnectedSocket(copy)
        }.flatMap { _ in
            bound.value.closeForReal()
        }.flatMapError { error in
            // Half handed over is no state to serve from: the client reconnects and resumes.
            bound.value.closeForReal().flatMapThrowing { throw error }
        }
    }
}

/// Keeps Hummingbird's side of a stream's channel quiet during and after the handoff: its
/// remaining writes (the end of the response it thinks it wrote) and its closes are dropped,
/// bytes from the client are discarded; it tells when everything written before it reached the
/// socket, and closes the channel when told to.
private final class QuietHandler: ChannelDuplexHandler {
    typealias InboundIn = NIOAny
    typealias OutboundIn = NIOAny
    typealias OutboundOut = ByteBuffer
    private var context: ChannelHandlerContext?
    /// Succeeds once everything written before this handler was added reached the socket.
    private(set) var flushed: EventLoopPromise<Void>!

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        let flushed = context.eventLoop.makePromise(of: Void.self)
        self.flushed = flushed
        // NIO completes writes in order: an empty one completes after all earlier ones.
        context.writeAndFlush(NIOAny(ByteBuffer()), promise: flushed)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func closeForReal() -> EventLoopFuture<Void> {
        guard let context else { return flushed.futureResult.eventLoop.makeSucceededVoidFuture() }
        let closed = context.eventLoop.makePromise(of: Void.self)
        context.close(mode: .all, promise: closed)
        return closed.futureResult
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        promise?.succeed(())
    }

    func flush(context: ChannelHandlerContext) {}

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        promise?.succeed(())
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
}
