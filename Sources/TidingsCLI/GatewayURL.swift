import Foundation

/// The gateway address given with `--url`: a base URL (`http://127.0.0.1:8080`) or the full
/// `…/events` URL.
enum GatewayURL {
    static func events(_ url: String) -> String {
        endpoint(url, "events")
    }

    /// The base URL followed by `/<path>` (`poll`, `ws`).
    static func endpoint(_ url: String, _ path: String) -> String {
        var base = url
        while base.hasSuffix("/") { base.removeLast() }
        if base.hasSuffix("/events") { base.removeLast("/events".count) }
        return base + "/" + path
    }

    /// `ws://…/ws` (`wss://` for an `https://` gateway).
    static func webSocket(_ url: String) -> String {
        let http = endpoint(url, "ws")
        if http.hasPrefix("https://") { return "wss://" + http.dropFirst("https://".count) }
        if http.hasPrefix("http://") { return "ws://" + http.dropFirst("http://".count) }
        return http
    }
}
