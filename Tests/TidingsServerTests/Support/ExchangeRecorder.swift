import Foundation
import NIOHTTP1
import Synchronization
import Testing

/// Records every HTTP exchange the test clients make, so that `scripts/openapi-check.py` can
/// check each answer against `openapi/tidings.yaml` (status, headers and body): the document
/// cannot drift from what the gateway answers.
///
/// Off unless `TIDINGS_TEST_EXCHANGES` names a file; each exchange is appended to it as one JSON
/// line: `test`, `method`, `target` (path and query), `requestHeaders`, `status`, `headers` and
/// `body` (absent for a stream's body and for bytes that are not text); and the messages streams
/// carried (`kind: message`).
enum ExchangeRecorder {
    private static let file: Mutex<FileHandle?> = Mutex(
        ProcessInfo.processInfo.environment["TIDINGS_TEST_EXCHANGES"].flatMap { path in
            if !FileManager.default.fileExists(atPath: path) {
                _ = FileManager.default.createFile(atPath: path, contents: nil)
            }
            let handle = FileHandle(forWritingAtPath: path)
            _ = try? handle?.seekToEnd()
            return handle
        })

    static var isOn: Bool { file.withLock { $0 != nil } }

    static func record(
        method: String, target: String, requestHeaders: [(String, String)], status: Int, headers: HTTPHeaders, body: String?
    ) {
        guard isOn else { return }
        var exchange: [String: Any] = [
            "test": Test.current.map { "\($0.id)" } ?? "unknown",
            "method": method,
            "target": target,
            "requestHeaders": requestHeaders.map { [$0.0, $0.1] },
            "status": status,
            "headers": headers.map { [$0.name, $0.value] },
        ]
        if let body { exchange["body"] = body }
        write(exchange)
    }

    /// A message a stream carried, checked against the document's schemas: each WebSocket frame
    /// (`WebSocketServerMessage`) and each SSE `tidings.reset` event's data (`ResetData`).
    static func recordMessage(transport: String, _ json: String) {
        guard isOn else { return }
        write(["test": Test.current.map { "\($0.id)" } ?? "unknown", "kind": "message", "transport": transport, "message": json])
    }

    private static func write(_ object: [String: Any]) {
        guard var line = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]) else {
            return
        }
        line.append(UInt8(ascii: "\n"))
        file.withLock { handle in
            _ = try? handle?.seekToEnd()
            try? handle?.write(contentsOf: line)
        }
    }

    /// The path and query of `url`.
    static func target(of url: String) -> String {
        guard let components = URLComponents(string: url) else { return url }
        return components.percentEncodedPath + (components.percentEncodedQuery.map { "?" + $0 } ?? "")
    }
}
