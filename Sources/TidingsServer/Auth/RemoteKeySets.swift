import AsyncHTTPClient
import Foundation
import JWTKit
import Logging
import Metrics
import NIOCore
import NIOHTTP1
import ServiceLifecycle
import TidingsCore

/// The key sets of `--jwks-url`: fetched at start, again every `--jwks-refresh` (or the
/// provider's `Cache-Control: max-age`), and at once when a token names an unknown `kid` — at
/// most once per `minimumInterval`, so tokens with made-up `kid`s cannot make Tidings hammer
/// the provider. A failed fetch keeps the last good sets.
actor RemoteKeySets {
    let urls: [String]
    private let keys: TokenKeys
    private let refreshInterval: Duration
    /// The shortest time between two fetches asked for by unknown `kid`s, and the shortest
    /// refresh interval a `Cache-Control` header can ask for.
    let minimumInterval: Duration
    private let clock: any WallClock
    private let logger: Logger
    private let fetchesOK: Counter
    private let fetchesFailed: Counter

    /// The last good set of each URL.
    private var sets: [JWKS?]
    /// The same, encoded, to tell a changed set from the same one fetched again.
    private var encoded: [Data?]
    private var inFlight: Task<Void, Never>?
    private var lastFetch: Date?
    private var failures = 0
    /// When the background refresh is due next.
    private(set) var nextRefresh: Date

    static let maximumBodyBytes = 1 << 20
    static let fetchTimeout: TimeAmount = .seconds(10)

    init(
        urls: [String], keys: TokenKeys, refreshInterval: Duration, minimumInterval: Duration, clock: any WallClock,
        logger: Logger, metricsFactory: any MetricsFactory
    ) {
        self.urls = urls
        self.keys = keys
        self.refreshInterval = refreshInterval
        self.minimumInterval = minimumInterval
        self.clock = clock
        self.logger = logger
        self.sets = Array(repeating: nil, count: urls.count)
        self.encoded = Array(repeating: nil, count: urls.count)
        self.nextRefresh = clock.now()
        self.fetchesOK = Counter(label: "tidings_jwks_fetches_total", dimensions: [("result", "ok")], factory: metricsFactory)
        self.fetchesFailed = Counter(label: "tidings_jwks_fetches_total", dimensions: [("result", "error")], factory: metricsFactory)
    }

    /// The first fetch: every URL must answer with a usable key set.
    ///
    /// - Throws: `DependencyUnavailable` naming the URL that failed.
    func start() async throws(DependencyUnavailable) {
        for index in urls.indices {
            do {
                try await fetch(index)
            } catch {
                fetchesFailed.increment()
                throw DependencyUnavailable("--jwks-url \(urls[index]): \(error.description)")
            }
        }
        do {
            try await install()
        } catch {
            throw DependencyUnavailable("--jwks-url: a key cannot be used: \(error)")
        }
        let now = clock.now()
        lastFetch = now
        nextRefresh = now.addingTimeInterval(nextInterval.timeInterval)
    }

    /// A token named a `kid` that no key has: fetch again unless that was done less than
    /// `minimumInterval` ago; a fetch already under way is waited for.
    func refreshForUnknownKey() async {
        if let inFlight {
            await inFlight.value
            return
        }
        if let lastFetch, clock.now() < lastFetch.addingTimeInterval(minimumInterval.timeInterval) { return }
        await refresh(reason: "unknown kid")
    }

    /// The background refresh, when it is due.
    func refreshIfDue() async {
        guard clock.now() >= nextRefresh else { return }
        if let inFlight {
            await inFlight.value
            return
        }
        await refresh(reason: "schedule")
    }

    private func refresh(reason: String) async {
        let task = Task { await self.fetchAll(reason: reason) }
        inFlight = task
        await task.value
        inFlight = nil
    }

    private func fetchAll(reason: String) async {
        lastFetch = clock.now()
        var failed = false
        for index in urls.indices {
            do {
                try await fetch(index)
            } catch {
                failed = true
                fetchesFailed.increment()
                logger.warning(
                    "cannot fetch the JWKS; the last good keys stay in use",
                    metadata: ["tidings.jwks_url": "\(urls[index])", "tidings.reason": "\(reason)", "error": "\(error.description)"])
            }
        }
        do {
            try await install()
        } catch {
            failed = true
            logger.warning("a fetched JWKS cannot be used; the last good keys stay in use", metadata: ["error": "\(error)"])
        }
        failures = failed ? failures + 1 : 0
        nextRefresh = clock.now().addingTimeInterval(nextInterval.timeInterval)
    }

    /// After a failure: the minimum interval, doubled for each further failure, at most the
    /// refresh interval.
    private var nextInterval: Duration {
        guard failures > 0 else { return interval }
        let backoff = minimumInterval * (1 << min(failures - 1, 16))
        return min(backoff, interval)
    }

    /// `--jwks-refresh`, or the provider's `max-age` (never below `minimumInterval`).
    private var interval: Duration { maxAge.map { max($0, minimumInterval) } ?? refreshInterval }
    private var maxAge: Duration?

    /// Installs the sets in `TokenKeys` when one of them changed.
    private var changed = false

    private func install() async throws {
        guard changed else { return }
        try await keys.install(fetched: sets.compactMap { $0 })
        changed = false
    }

    private func fetch(_ index: Int) async throws(FetchError) {
        var request = HTTPClientRequest(url: urls[index])
        request.headers.add(name: "Accept", value: "application/jwk-set+json, application/json")
        let body: ByteBuffer
        let headers: HTTPHeaders
        do {
            let response = try await HTTPClient.shared.execute(request, timeout: Self.fetchTimeout)
            guard response.status == .ok else {
                throw FetchError("the provider answered \(response.status.code)")
            }
            headers = response.headers
            body = try await response.body.collect(upTo: Self.maximumBodyBytes)
        } catch let error as FetchError {
            throw error
        } catch is NIOTooManyBytesError {
            throw FetchError("the key set is larger than \(Self.maximumBodyBytes) bytes")
        } catch {
            throw FetchError("it cannot be reached (\(error))")
        }
        let set = try Self.keySet(Data(body.readableBytesView))
        fetchesOK.increment()
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let data = try? encoder.encode(set)
        if data == nil || data != encoded[index] {
            sets[index] = set
            encoded[index] = data
            changed = true
        }
        maxAge = Self.maxAge(headers["Cache-Control"])
    }

    /// The usable keys of a JWKS document. Keys Tidings cannot verify with (encryption keys,
    /// unknown types, keys without `kid`) are left out; a set without any usable key is an error.
    static func keySet(_ data: Data) throws(FetchError) -> JWKS {
        struct Document: Decodable {
            struct Entry: Decodable {
                var key: JWK?
                init(from decoder: any Decoder) throws {
                    struct Use: Decodable { var use: String? }
                    let use = try? Use(from: decoder).use
                    key = use == "enc" ? nil : try? JWK(from: decoder)
                }
            }
            var keys: [Entry]
        }
        let document: Document
        do {
            document = try JSONDecoder().decode(Document.self, from: data)
        } catch {
            throw FetchError("the answer is not a JWKS (a JSON object with \"keys\")")
        }
        let keys = document.keys.compactMap(\.key).filter { $0.keyIdentifier != nil }
        guard !keys.isEmpty else { throw FetchError("the key set has no signing key with a kid") }
        return JWKS(keys: keys)
    }

    /// `max-age` of a `Cache-Control` header; zero for `no-cache` and `no-store`.
    static func maxAge(_ values: [String]) -> Duration? {
        var result: Duration?
        for directive in values.joined(separator: ",").split(separator: ",") {
            let parts = directive.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
            switch parts.first {
            case "no-cache", "no-store": return .zero
            case "max-age":
                if parts.count == 2, let seconds = Int64(parts[1].trimmingCharacters(in: CharacterSet(charactersIn: "\""))), seconds >= 0 {
                    result = .seconds(seconds)
                }
            default: break
            }
        }
        return result
    }

    struct FetchError: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }
}

/// Refreshes `RemoteKeySets` in the background until graceful shutdown.
struct JWKSRefresher: Service {
    let keySets: RemoteKeySets
    let clock: any WallClock

    func run() async throws {
        try? await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                let wait = await keySets.nextRefresh.timeIntervalSince(clock.now())
                try await clock.sleep(for: .milliseconds(Int64(max(0, wait) * 1000)))
                await keySets.refreshIfDue()
            }
        }
    }
}
