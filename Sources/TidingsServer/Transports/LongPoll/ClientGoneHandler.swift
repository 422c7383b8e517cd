import NIOCore

/// Tells a waiting long poll that its client has gone: the peer closed its side of the
/// connection (`inputClosed`: the server allows half-closure, so a client's close arrives as
/// that, not as the channel's end) or the connection ended.
///
/// Without it a poll whose client left held its subscription and its connection slot until its
/// `timeout` (up to 60 s): a user who reloads a page a few times could be refused by
/// `--max-connections-per-user` while nobody was there. The poll answers at once instead, as at
/// its timeout: a client that only half-closed still reads the answer; a gone one costs one
/// failed write.
final class ClientGoneHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    private var gone = false
    private var onGone: (() -> Void)?

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed { markGone() }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        markGone()
        context.fireChannelInactive()
    }

    /// On the channel's event loop: runs `action` once the client has gone (at once if it has).
    func whenGone(_ action: @escaping () -> Void) {
        if gone {
            action()
        } else {
            onGone = action
        }
    }

    /// On the channel's event loop: forgets the action (the poll answered).
    func clear() {
        onGone = nil
    }

    private func markGone() {
        gone = true
        let action = onGone
        onGone = nil
        action?()
    }
}

extension ClientGoneHandler {
    /// Calls `action` once the client of `channel` has gone, from the channel's event loop.
    /// A channel without the handler (or already closed) is not watched.
    static func watch(_ channel: any Channel, _ action: @escaping @Sendable () -> Void) async {
        try? await channel.eventLoop.submit {
            try channel.pipeline.syncOperations.handler(type: ClientGoneHandler.self).whenGone(action)
        }.get()
    }

    /// Stops watching `channel`.
    static func unwatch(_ channel: any Channel) {
        channel.eventLoop.execute {
            (try? channel.pipeline.syncOperations.handler(type: ClientGoneHandler.self))?.clear()
        }
    }
}
