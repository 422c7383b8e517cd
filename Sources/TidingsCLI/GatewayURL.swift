import Foundation

/// The gateway address given with `--url`: a base URL (`http://127.0.0.1:8080`) or the full
/// `…/events` URL.
enum GatewayURL {
    static func events(_ url: String) -> String {
        var base = url
        while base.hasSuffix("/") { base.removeLast() }
        return base.hasSuffix("/events") ? base : base + "/events"
    }
}
