import Foundation
import Hummingbird
import NIOHTTP1
import Testing
import TidingsServer
import Yams

/// The API description the gateway serves (`openapi/tidings.yaml`, compiled into the binary).
/// That every answer matches it is checked by `scripts/api-tests.sh` over the answers all the
/// tests record; here: that it is served, and that its two forms say the same thing.
@Suite struct OpenAPITests {
    static let source = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appending(path: "openapi/tidings.yaml")

    @Test func theDocumentIsServedAsYAMLAndAsJSONWithTheSameContent() async throws {
        try await TestServer.run { server in
            let yaml = try await server.request(.GET, "/openapi.yaml")
            #expect(yaml.status == 200)
            #expect(yaml.headers["Content-Type"].first == "application/yaml")
            #expect(yaml.headers["Access-Control-Allow-Origin"].first == "*")
            #expect(yaml.body == (try String(contentsOf: Self.source, encoding: .utf8)), "the binary carries openapi/tidings.yaml as it is")

            let json = try await server.request(.GET, "/openapi.json")
            #expect(json.status == 200)
            #expect(json.headers["Content-Type"].first == "application/json")
            let fromJSON = try JSONSerialization.jsonObject(with: Data(json.body.utf8)) as? NSDictionary
            let fromYAML = try Yams.load(yaml: yaml.body) as? [String: Any]
            #expect(fromJSON != nil)
            #expect(fromJSON == fromYAML.map { NSDictionary(dictionary: $0) })
            #expect((fromJSON?["openapi"] as? String)?.hasPrefix("3.1") == true)

            let etag = try #require(json.headers["ETag"].first)
            #expect(try await server.request(.GET, "/openapi.json", headers: [("If-None-Match", etag)]).status == 304)
        }
    }

    /// Every route the router serves is in the document with its method, and nothing else is:
    /// what the fuzzing and the check of recorded answers reach is the whole API.
    @Test func everyRouteIsDescribedAndNothingElse() async throws {
        let document = try Yams.load(yaml: String(contentsOf: Self.source, encoding: .utf8)) as? [String: Any]
        let methods = ["get", "head", "post", "put", "patch", "delete", "options", "trace"]
        var described: Set<String> = []
        for (path, item) in document?["paths"] as? [String: Any] ?? [:] {
            for key in (item as? [String: Any] ?? [:]).keys where methods.contains(key) { described.insert("\(key.uppercased()) \(path)") }
        }
        let expected = described
        try await TestServer.run { server in
            var served = Set(buildRouter(gateway: server.gateway).routes.map { "\($0.method) \($0.path)" })
            // Served outside the router: the WebSocket upgrade, and CORS preflights (by the CORS middleware).
            served.formUnion(["OPTIONS /events", "OPTIONS /tickets", "OPTIONS /poll"])
            #expect(expected == served)
        }
    }
}
