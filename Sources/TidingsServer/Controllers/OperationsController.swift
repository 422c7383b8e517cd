import Foundation
public import Hummingbird
import NIOCore
import Prometheus
import TidingsCore

/// `GET /healthz`, `GET /readyz` and `GET /metrics` (the dashboard `GET /` is `WebController`).
public struct OperationsController: Sendable {
    public typealias Context = TidingsRequestContext
    let gateway: Gateway

    public init(gateway: Gateway) {
        self.gateway = gateway
    }

    public func addRoutes(to router: Router<Context>) {
        router.get("/healthz") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: #"{"status":"ok"}"#)))
        }
        router.get("/readyz") { _, _ in
            let readiness = gateway.readiness()
            if readiness.isReady {
                return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: #"{"status":"ready"}"#)))
            }
            let reason = readiness.reason ?? "not_ready"
            return Response(
                status: .serviceUnavailable, headers: [.contentType: "application/json", .retryAfter: "1"],
                body: .init(byteBuffer: ByteBuffer(string: #"{"status":"not_ready","reason":"\#(reason)"}"#)))
        }
        router.get("/metrics") { _, _ in
            var bytes: [UInt8] = []
            gateway.registry.emit(into: &bytes)
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
        }
    }
}
