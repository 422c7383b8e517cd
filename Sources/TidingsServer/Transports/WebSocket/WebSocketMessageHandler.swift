import Foundation
import NIOCore
import NIOWebSocket
import TidingsCore

/// What a WebSocket stream knows about its client, for answering its messages.
struct WebSocketSession: Sendable {
    let gateway: Gateway
    let sink: StreamSink
    let subscriber: Subscriber
    /// Most topics one stream may hold at once.
    static let maxTopics = 1_000
}

/// Reads what a WebSocket client sends (after NIO decoded and unmasked its frames and the
/// aggregator joined fragments): pings are answered, pongs count as answers to the stream's
/// keep-alive, a close is answered and ends the stream, text frames are messages
/// (``WebSocketMessage``). A binary frame closes with 1003, text that is not UTF-8 JSON with
/// 1007, a message over `--max-body` with 1009.
final class WebSocketMessageHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    private let session: WebSocketSession

    init(session: WebSocketSession) {
        self.session = session
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        let sink = session.sink
        switch frame.opcode {
        case .ping:
            sink.writeOwn(WebSocketWire.pong(frame.unmaskedData))
        case .pong:
            sink.keepAliveAnswered()
        case .connectionClose:
            sink.endByClient(goodbye: WebSocketWire.close(WebSocketWire.CloseCode.normal))
        case .text:
            let payload = frame.unmaskedData
            let bytes = Array(payload.readableBytesView)
            guard String(validating: bytes, as: UTF8.self) != nil else {
                sink.endByClient(goodbye: WebSocketWire.close(WebSocketWire.CloseCode.invalidPayload), reason: .protocolError)
                return
            }
            let document: JSONValue
            do {
                document = try JSONParser.parse(bytes)
            } catch {
                sink.endByClient(goodbye: WebSocketWire.close(WebSocketWire.CloseCode.invalidPayload), reason: .protocolError)
                return
            }
            WebSocketMessage(bytes: bytes, document: document).handle(in: session, loop: context.eventLoop)
        case .binary:
            sink.endByClient(goodbye: WebSocketWire.close(WebSocketWire.CloseCode.unsupportedData), reason: .protocolError)
        default:
            break
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // NIO's protocol error handler answers the decoder's errors before they get here; what
        // arrives is the aggregator's: a fragmented message over --max-body, or bad fragments.
        let code: UInt16 = switch error {
        case NIOWebSocketFrameAggregator.Error.accumulatedFrameSizeIsTooLarge, NIOWebSocketError.invalidFrameLength:
            WebSocketWire.CloseCode.messageTooBig
        default:
            WebSocketWire.CloseCode.protocolError
        }
        session.sink.endByClient(goodbye: WebSocketWire.close(code), reason: .protocolError)
    }
}
