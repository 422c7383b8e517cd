import Glibc
import NIOCore

/// One `send`/`sendmsg` of pre-encoded chunks to a connection's socket, bypassing NIO's write
/// path. Only valid on the channel's event loop while NIO holds no unsent bytes for it (see
/// ``StreamSink``); never blocks (`MSG_DONTWAIT`), never raises SIGPIPE (`MSG_NOSIGNAL`).
/// Linux only, like the rest of the gateway.
enum DirectWrite {
    enum Outcome {
        /// This many bytes went to the socket (0 when it would block): the caller queues the
        /// rest through NIO.
        case sent(Int)
        /// The socket is closed or broken.
        case closed
    }

    /// Chunks beyond this many per call are left to NIO (a client this far behind is being
    /// written through NIO anyway).
    static let maxChunks = 64

    /// The descriptor of `context`'s channel, if it exposes one (on the channel's event loop).
    static func descriptor(of context: ChannelHandlerContext) -> CInt? {
        try? context.pipeline.syncOperations.withUnsafeTransportIfAvailable(of: NIOBSDSocket.Handle.self) { $0 }
    }

    /// Sends `chunks` (`count` of them) on `fd`: `send` for one, `sendmsg` for several.
    static func send<Chunks: Collection<ByteBuffer>>(_ chunks: Chunks, count: Int, on fd: CInt) -> Outcome {
        if count == 1, let chunk = chunks.first {
            return chunk.withUnsafeReadableBytes { bytes in
                outcome(of: Glibc.send(fd, bytes.baseAddress, bytes.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)))
            }
        }
        return gather(chunks.prefix(maxChunks), fd: fd)
    }

    private static func gather<Chunks: Collection<ByteBuffer>>(_ chunks: Chunks, fd: CInt) -> Outcome {
        var storages: [Unmanaged<AnyObject>] = []
        storages.reserveCapacity(chunks.count)
        var vectors: [iovec] = []
        vectors.reserveCapacity(chunks.count)
        defer { for storage in storages { storage.release() } }
        for chunk in chunks {
            chunk.withUnsafeReadableBytesWithStorageManagement { bytes, storage in
                storages.append(storage.retain())
                vectors.append(iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress), iov_len: bytes.count))
            }
        }
        var message = msghdr()
        return vectors.withUnsafeMutableBufferPointer { vectors in
            message.msg_iov = vectors.baseAddress
            message.msg_iovlen = vectors.count
            return outcome(of: sendmsg(fd, &message, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)))
        }
    }

    private static func outcome(of result: Int) -> Outcome {
        if result >= 0 { return .sent(result) }
        switch errno {
        case EAGAIN, EWOULDBLOCK, EINTR, ENOBUFS: return .sent(0)
        default: return .closed
        }
    }
}
