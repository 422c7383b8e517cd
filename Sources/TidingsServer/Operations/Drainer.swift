import Logging
import ServiceLifecycle
import TidingsCore

/// Drains the gateway on graceful shutdown (SIGTERM, SIGINT), before the HTTP server stops:
/// `/readyz` answers `503` (`draining`) at once so the balancer stops sending, new streams are
/// refused with `503` and `Retry-After`, requests keep being served (publishes in flight finish),
/// and the open streams are ended spread over `--drain-period` (``DrainPlan``), each SSE stream
/// with a `retry:` of its own, each WebSocket with close code 1001, each waiting long poll
/// answered. It returns once every stream has left, and the server then shuts down.
///
/// It must run after the application in the service group (services stop in reverse order).
struct Drainer<C: Clock>: Service where C.Duration == Duration {
    let gateway: Gateway
    let period: Duration
    let clock: C
    /// How long to wait, after the last end, for streams to close (their goodbyes written).
    var settle: Duration = .seconds(5)

    func run() async throws {
        do {
            try await gracefulShutdown()
        } catch {
            return  // cancelled: no drain
        }
        await drain()
    }

    func drain() async {
        let start = clock.now
        let streams = gateway.beginDrain()
        var generator = SystemRandomNumberGenerator()
        let plan = DrainPlan(count: streams.count, period: period, using: &generator)
        gateway.logger.notice(
            "draining", metadata: ["tidings.streams": "\(streams.count)", "tidings.drain_period_ms": "\(period.milliseconds)"])
        var next = 0
        while next < plan.steps.count {
            let now = clock.now
            // Every end that is due now (a sleep wakes late under load: catch up at once).
            while next < plan.steps.count, start.advanced(by: plan.steps[next].offset) <= now {
                let step = plan.steps[next]
                streams[step.stream].finishDraining(retryMilliseconds: step.retryMilliseconds)
                next += 1
            }
            guard next < plan.steps.count else { break }
            do {
                try await clock.sleep(until: start.advanced(by: plan.steps[next].offset), tolerance: nil)
            } catch {
                break  // cancelled (the shutdown timeout passed): end the rest at once
            }
        }
        gateway.bus.shutdown()
        let deadline = clock.now.advanced(by: settle)
        while gateway.bus.subscriptionCount > 0, clock.now < deadline, !Task.isCancelled {
            try? await clock.sleep(until: clock.now.advanced(by: .milliseconds(10)), tolerance: nil)
        }
        gateway.logger.notice("drained", metadata: ["tidings.streams_left": "\(gateway.bus.subscriptionCount)"])
    }
}
