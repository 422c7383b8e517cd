#!/usr/bin/env python3
"""Turns the JSON reports of `tidings bench` runs into the Markdown table of issue 4.

Usage: report.py RAW_DIR [RAW_DIR…] [--micro TEXT] [--runs N] [--duration D] [--pinning TEXT] [--loadavg TEXT]

RAW_DIR holds <scenario>-<server>-<run>.json files written by scripts/bench.sh. Each figure is
the median of its runs with the range in brackets; "×" columns compare Tidings with the
reference of its row measured in the same run on the same machine: the C floor (memory mode),
pgbench storing the same row (durable1/16/64), pgbench without a trigger (trigger), one gateway
(multi). The WebSocket and long-poll scenarios (wslight, wsoverload, wsidle, polllight) are
compared with Tidings' SSE runs of the same scenario in their own section.
"""
import argparse
import glob
import json
import os
import platform
import statistics
import subprocess
import sys
from datetime import datetime, timezone


def load(raws):
    """Runs by (scenario, server); a later folder replaces an earlier one's runs of a scenario."""
    runs = {}
    for raw in raws:
        found = {}
        for key, reports in load_one(raw).items():
            found[key] = reports
        runs.update(found)
    return runs


def load_one(raw):
    runs = {}
    for path in sorted(glob.glob(os.path.join(raw, "*.json"))):
        name = os.path.basename(path)[:-5]
        scenario, server, _ = name.rsplit("-", 2)
        try:
            with open(path) as handle:
                runs.setdefault((scenario, server), []).append(json.load(handle))
        except (OSError, ValueError) as error:
            print(f"report.py: skipping {path}: {error}", file=sys.stderr)
    return runs


def dig(report, path):
    value = report
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value or value[key] is None:
            return None
        value = value[key]
    return value


def values(runs, scenario, server, path):
    return [v for v in (dig(r, path) for r in runs.get((scenario, server), [])) if v is not None]


def fmt(value, kind):
    if value is None:
        return "–"
    if kind == "rate":
        return f"{value / 1000:.0f}k" if value >= 10_000 else f"{value:,.0f}"
    if kind == "kb":
        return f"{value / 1024:.1f} KB"
    if kind == "ms":
        return f"{value:.1f} ms" if value >= 10 else f"{value:.2f} ms"
    if kind == "s":
        return f"{value:.2f}"
    if kind == "pct":
        return f"{value:.0f}%"
    if kind == "bound":
        return f"≤ {value:g} ms"
    return f"{value}"


def summary(vals, kind):
    if not vals:
        return "–", None
    median = statistics.median(vals)
    text = fmt(median, kind)
    if len(vals) > 1:
        text += f" [{fmt(min(vals), kind)}–{fmt(max(vals), kind)}]"
    return text, median


ROWS = [
    # label, scenario, json path, unit kind, nchan (issue), target text, target check (value, reference)
    # [, subject server, reference server, json path of a lower bound]
    ("light fan-out: 2,000 subs × 20 events/s — server CPU seconds per 1M delivered events", "light",
     "server.cpuSecondsPerMillionDelivered", "s", "11.4", "≤ 8", lambda v, r: v <= 8),
    ("same — publish→receive latency p50", "light", "delivery.latencyMs.p50", "ms", "11.5 ms", "≤ 10 ms", lambda v, r: v <= 10),
    ("same — publish→receive latency p99", "light", "delivery.latencyMs.p99", "ms", "26 ms", "≤ 20 ms", lambda v, r: v <= 20),
    ("fan-out: 2,000 subs × 200 events/s offered (overload) — delivered events/s", "overload",
     "delivery.perSecond", "rate", "184k [142k–326k]", "≥ 220k", lambda v, r: v >= 220_000),
    ("same — server CPU seconds per 1M delivered events", "overload",
     "server.cpuSecondsPerMillionDelivered", "s", "5.4 [3.0–7.0]", "≤ 4", lambda v, r: v <= 4),
    ("fan-out: 10,000 subs × 200 events/s — delivered events/s", "fanout10k",
     "delivery.perSecond", "rate", "104k", "≥ 125k", lambda v, r: v >= 125_000),
    ("point-to-point: 2,000 users, publisher at max rate (16 connections) — publishes/s accepted", "users",
     "publishing.acceptedPerSecond", "rate", "33k", "≥ 33k", lambda v, r: v >= 33_000),
    ("10,000 idle streams — server memory per connection", "idle",
     "server.memoryPerConnectionBytes", "kb", "11 KB", "≤ 8 KB", lambda v, r: v <= 8 * 1024),
    ("replay of 999 missed events after reconnect (p50 of 20 reconnects; store holds 100k)", "replay",
     "replay.timeMs.p50", "ms", "6 ms", "≤ 10 ms", lambda v, r: v <= 10),
    ("same, PostgreSQL mode (the bench database fills up run by run: 100k–300k events)", "durablereplay",
     "replay.timeMs.p50", "ms", "–", "≤ 50 ms", lambda v, r: v <= 50),
    ("durable publish (PostgreSQL mode, fsync on), 16 publishers, batches of 100 — events/s", "durable",
     "publishing.acceptedPerSecond", "rate", "–", "≥ 10k", lambda v, r: v >= 10_000),
    ("durable publish (PostgreSQL mode, fsync on), 1 publisher connection, one event per request — events/s "
     "(reference: pgbench, 1 client, same row)", "durable1",
     "publishing.acceptedPerSecond", "rate", "–", "report", None, "tidings", "pgbench"),
    ("same — answer time p50 (reference: one commit, pgbench's p50)", "durable1",
     "publishing.roundTripMs.p50", "ms", "–", "≈ one commit (≤ 2×)", lambda v, r: r is not None and v <= 2 * r, "tidings", "pgbench"),
    ("same — answer time p99", "durable1",
     "publishing.roundTripMs.p99", "ms", "–", "report", None, "tidings", "pgbench"),
    ("16 publisher connections, one event per request — durable events/s (reference: pgbench, 16 clients)", "durable16",
     "publishing.acceptedPerSecond", "rate", "–", "report", None, "tidings", "pgbench"),
    ("same — answer time p99", "durable16",
     "publishing.roundTripMs.p99", "ms", "–", "report", None, "tidings", "pgbench"),
    ("64 publisher connections, one event per request — durable events/s (reference: pgbench, 64 clients)", "durable64",
     "publishing.acceptedPerSecond", "rate", "–", "≥ 10k", lambda v, r: v >= 10_000, "tidings", "pgbench"),
    ("same — answer time p99", "durable64",
     "publishing.roundTripMs.p99", "ms", "–", "≤ 20 ms", lambda v, r: v <= 20, "tidings", "pgbench"),
    ("trigger cost: pgbench updating `orders` (16 clients, fsync on), row_event with --wakeup notify (default) — tps (reference: no trigger)",
     "trigger", "trigger.tps", "rate", "–", "≥ 0.8× no trigger", lambda v, r: r is not None and v >= 0.8 * r, "notify", "none"),
    ("same — commit→delivery p99 (bucket bound of tidings_commit_to_delivery_seconds)", "trigger",
     "trigger.commitToDelivery.p99UpperBoundMs", "bound", "–", "≤ 50 ms", lambda v, r: v <= 50, "notify", None,
     "trigger.commitToDelivery.p99LowerBoundMs"),
    ("row_event with --wakeup poll — tps (reference: no trigger)", "trigger", "trigger.tps", "rate", "–", "report", None, "poll", "none"),
    ("same — commit→delivery p99 (bucket bound)", "trigger",
     "trigger.commitToDelivery.p99UpperBoundMs", "bound", "–", "≤ 50 ms", lambda v, r: v <= 50, "poll", None,
     "trigger.commitToDelivery.p99LowerBoundMs"),
    ("an outbox trigger, one plain row (the floor of any trigger) — tps (reference: no trigger)", "trigger", "trigger.tps", "rate",
     "–", "report", None, "outbox", "none"),
] + [row for rate in (1000, 10000) for row in (
    (f"3 gateways on one database, {rate:,} events/s offered, 600 streams over the 3, publishers on one — delivered events/s "
     "(reference: one gateway, same load)", f"multi{rate}", "delivery.perSecond", "rate", "–", "≥ 95% of offered",
     lambda v, r, rate=rate: v >= 0.95 * rate, "three", "one"),
    ("same — delivery latency p99", f"multi{rate}", "delivery.latencyMs.p99", "ms", "–", "report", None, "three", "one"),
    ("same — database CPU (all its processes, % of a core)", f"multi{rate}", "database.cpuPercent", "pct", "–", "report", None,
     "three", "one"),
    ("same — database transactions/s (pg_stat_database, all gateways)", f"multi{rate}", "database.transactionsPerSecond", "rate",
     "–", "report", None, "three", "one"),
)]

HIGHER_IS_BETTER = {"rate"}

# Issue 11: the same loads over WebSockets and as a long-poll loop, each against its SSE
# scenario of the same bench run: label, scenario, SSE scenario, json path, unit kind, target
# text, target check (value, SSE value).
TRANSPORT_ROWS = [
    ("light fan-out over WebSockets: 2,000 subs × 20 events/s — server CPU seconds per 1M delivered events", "wslight", "light",
     "server.cpuSecondsPerMillionDelivered", "s", "≤ 1.2× SSE", lambda v, r: r is not None and v <= 1.2 * r),
    ("same — publish→receive latency p99", "wslight", "light", "delivery.latencyMs.p99", "ms", "≤ 20 ms", lambda v, r: v <= 20),
    ("same — publish→receive latency p50", "wslight", "light", "delivery.latencyMs.p50", "ms", "report", None),
    ("fan-out over WebSockets: 2,000 subs × 200 events/s offered (overload) — delivered events/s", "wsoverload", "overload",
     "delivery.perSecond", "rate", "≥ 0.9× SSE", lambda v, r: r is not None and v >= 0.9 * r),
    ("same — server CPU seconds per 1M delivered events", "wsoverload", "overload",
     "server.cpuSecondsPerMillionDelivered", "s", "report", None),
    ("10,000 idle WebSockets — server memory per connection", "wsidle", "idle",
     "server.memoryPerConnectionBytes", "kb", "≤ 8 KB", lambda v, r: v <= 8 * 1024),
    ("long-poll loop: 2,000 clients × 20 events/s, re-polling at once — delivered events/s", "polllight", "light",
     "delivery.perSecond", "rate", "report", None),
    ("same — server CPU seconds per 1M delivered events", "polllight", "light",
     "server.cpuSecondsPerMillionDelivered", "s", "report", None),
    ("same — publish→receive latency p99", "polllight", "light", "delivery.latencyMs.p99", "ms", "report", None),
]


def transport_section(runs):
    rows = [row for row in TRANSPORT_ROWS if runs.get((row[1], "tidings"))]
    if not rows:
        return []
    out = ["## WebSocket and long polling (issue 11)", "",
           "The same loads as the SSE rows over `GET /ws` (one JSON text frame per event; the load generator answers "
           "pings with masked pongs) and as a long-poll loop (`GET /poll?timeout=25s` on a keep-alive connection, "
           "polled again as soon as each answer is read), each against the SSE scenario of this same bench run "
           "(Tidings, same pinning). A long-poll event's latency includes the time to poll again after the previous "
           "answer. Targets are the issue's; they are reported here, not enforced.", "",
           "| scenario | SSE (this run) | this transport (this run) | ÷ SSE | target | met |",
           "|---|---|---|---|---|---|"]
    for label, scenario, sse, path, kind, target, check in rows:
        sse_text, sse_median = summary(values(runs, sse, "tidings", path), kind)
        text, median = summary(values(runs, scenario, "tidings", path), kind)
        if median is None or check is None:
            met = "–"
        elif check(median, sse_median):
            met = "yes"
        else:
            met = "**no**" if sse_median is not None or "SSE" not in target else f"unknown: no {sse} run"
        out.append(f"| {label} | {sse_text} | {text} | {ratio(median, sse_median, kind)} | {target} | {met} |")
    out.append("")
    return out


def ratio(tidings, floor, kind):
    if tidings is None or floor is None or floor == 0 or tidings == 0:
        return "–"
    # "× floor": how many times the floor's figure Tidings reaches or costs.
    return f"{tidings / floor:.2f}×"


def machine():
    model = ""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    # The reports this script writes do not count as changes to what was measured.
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)Benchmarks/results"],
        capture_output=True, text=True).stdout.strip()
    return f"{os.cpu_count()} cores ({model or platform.processor()}), Linux {platform.release()}", commit + (" + local changes" if dirty else "")


def trigger_section(runs):
    modes = [m for m in ("none", "outbox", "notify", "poll") if runs.get(("trigger", m))]
    if not modes:
        return []
    out = ["## Trigger cost (scripts/bench-trigger.sh)", "",
           "pgbench, 16 clients, one `UPDATE orders` per transaction, fsync on, its own throwaway cluster; a gateway "
           "listening in the row_event modes. Commit→delivery is the delta of the gateway's "
           "`tidings_commit_to_delivery_seconds` buckets over the pgbench run: the p99 is the bucket bound at or "
           "above it (an upper bound), between the bound below and that one.", "",
           "| mode | tps | ÷ no trigger | events reaching the bus | commit→delivery p99 | histogram buckets (s) |",
           "|---|---|---|---|---|---|"]
    base = values(runs, "trigger", "none", "trigger.tps")
    base = statistics.median(base) if base else None
    for mode in modes:
        text, median = summary(values(runs, "trigger", mode, "trigger.tps"), "rate")
        count = values(runs, "trigger", mode, "trigger.commitToDelivery.count")
        upper = values(runs, "trigger", mode, "trigger.commitToDelivery.p99UpperBoundMs")
        lower = values(runs, "trigger", mode, "trigger.commitToDelivery.p99LowerBoundMs")
        bucket_list = values(runs, "trigger", mode, "trigger.commitToDelivery.bucketsSeconds")
        p99 = (f"{statistics.median(lower):g}–{statistics.median(upper):g} ms" if upper and lower else "–")
        buckets = ", ".join(f"{b:g}" for b in bucket_list[0]) if bucket_list else "–"
        out.append(f"| {mode} | {text} | {ratio(median, base, 'rate')} | {fmt(statistics.median(count) if count else None, 'rate')} | "
                   f"{p99} | {buckets} |")
    out.append("")
    return out


def multi_section(runs):
    rates = sorted({int(s[5:]) for s, _ in runs if s.startswith("multi") and s[5:].isdigit()})
    if not rates:
        return []
    out = ["## Several gateways on one database (multi)", "",
           "`tidings serve` × N in PostgreSQL mode on the bench cluster (fsync on), each with its own "
           "`application_name`; 600 user streams round-robin over the N (`tidings bench --url` repeated), 64 publisher "
           "connections on the first. Database CPU: every process of the cluster from /proc over the window; per "
           "gateway: the CPU of the backends whose `application_name` is that gateway's (pg_stat_activity → "
           "/proc/<pid>/stat). Transactions: pg_stat_database, all gateways together (backends flush their counts "
           "about once a second, so ±1 s of them at each end).", "",
           "| offered/s | gateways | published/s | delivered/s | latency p50 / p99 | database CPU | transactions/s | rows read/s | per gateway: backends, backend CPU, deliveries/s, its queries/s (`tidings_database_round_trips_total`) |",
           "|---|---|---|---|---|---|---|---|---|"]
    for rate in rates:
        for server in ("one", "three"):
            reports = runs.get((f"multi{rate}", server))
            if not reports:
                continue

            def med(path, reports=reports):
                vals = [v for v in (dig(r, path) for r in reports) if v is not None]
                return statistics.median(vals) if vals else None

            p50, p99 = med("delivery.latencyMs.p50"), med("delivery.latencyMs.p99")
            names = sorted({name for r in reports for name in (dig(r, "database.instances") or {})})
            per = "; ".join(
                f"{name}: {fmt(med(f'database.instances.{name}.backends'), 'n')}, "
                f"{fmt(med(f'database.instances.{name}.cpuPercent'), 'pct')}, "
                f"{fmt(med(f'database.instances.{name}.deliveredPerSecond'), 'rate')}, "
                f"queries/s {fmt(med(f'database.instances.{name}.poolQueriesPerSecond'), 'rate')} pool + "
                f"{fmt(med(f'database.instances.{name}.listenerQueriesPerSecond'), 'rate')} listener" for name in names)
            out.append(f"| {rate:,} | {1 if server == 'one' else 3} | {fmt(med('publishing.acceptedPerSecond'), 'rate')} | "
                       f"{fmt(med('delivery.perSecond'), 'rate')} | {fmt(p50, 'ms')} / {fmt(p99, 'ms')} | "
                       f"{fmt(med('database.cpuPercent'), 'pct')} | {fmt(med('database.transactionsPerSecond'), 'rate')} | "
                       f"{fmt(med('database.rowsReadPerSecond'), 'rate')} | {per or '–'} |")
    out.append("")
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("raw", nargs="+", help="folders of JSON reports; later ones replace earlier runs of a scenario")
    parser.add_argument("--micro", default="not run")
    parser.add_argument("--runs", default="3")
    parser.add_argument("--duration", default="10s")
    parser.add_argument("--pinning", default="")
    parser.add_argument("--loadavg", default="unknown")
    args = parser.parse_args()
    runs = load(args.raw)
    args.raw = args.raw[-1]
    host, commit = machine()
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    out = []
    out.append(f"# Tidings benchmark report — {now}")
    out.append("")
    out.append(f"Machine: {host}. Commit: {commit}. Produced by `scripts/bench.sh` (`make bench`): "
               f"{args.runs} run(s) per figure, {args.duration} measurement windows, pinning `{args.pinning.strip()}` "
               "(server on one core via `taskset`, load generator `tidings bench` on the other), all traffic on 127.0.0.1. "
               f"Load average when the run started: {args.loadavg} (anything else running skews the figures).")
    out.append("")
    out.append("Each cell is the median of the runs with the range in brackets. The C floor is "
               "`Benchmarks/reference/floor.c` (single-threaded epoll, one `write()` per event per subscriber, "
               "TCP_NODELAY), measured with the same load generator in the same run. The nchan column is quoted "
               "from issue 4 (a C load generator on this kind of machine), not measured here.")
    out.append("")
    out.append("The reference column is the C floor for memory mode; for the PostgreSQL rows, as each row says: "
               "pgbench storing the same row with as many clients on the same cluster (durable1/16/64), pgbench with no "
               "trigger (trigger), one gateway under the same load (multi).")
    out.append("")
    out.append("| scenario | nchan (issue) | reference (this run) | Tidings (this run) | Tidings ÷ reference | target | met |")
    out.append("|---|---|---|---|---|---|---|")
    for row in ROWS:
        label, scenario, path, kind, nchan, target, check = row[:7]
        subject, reference, lower_path = (list(row[7:]) + ["tidings", "floor", None][len(row) - 7:])[:3]
        if not runs.get((scenario, subject)) and not (reference and runs.get((scenario, reference))):
            continue
        ref_text, ref_median = summary(values(runs, scenario, reference, path), kind) if reference else ("–", None)
        tidings_text, tidings_median = summary(values(runs, scenario, subject, path), kind)
        if tidings_median is None or check is None:
            met = "–"
        else:
            met = "yes" if check(tidings_median, ref_median) else "**no**"
            lower = statistics.median(values(runs, scenario, subject, lower_path)) if lower_path and values(runs, scenario, subject, lower_path) else None
            if met != "yes" and lower is not None and lower < 50 <= tidings_median:
                met = f"unknown: the buckets say only {lower:g}–{tidings_median:g} ms"
        out.append(f"| {label} | {nchan} | {ref_text} | {tidings_text} | {ratio(tidings_median, ref_median, kind)} | {target} | {met} |")
    out.append("")

    out.append("## Details per scenario (medians)")
    out.append("")
    out.append("| scenario | server | streams open | delivered/s | latency p50 / p99 | published/s | server CPU % | server RSS | load CPU % | disconnects | errors |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|")
    order = ["light", "wslight", "polllight", "overload", "wsoverload", "fanout10k", "users", "idle", "wsidle", "replay",
             "durablereplay", "durable", "durable1", "durable16", "durable64"]
    for scenario in order:
        for server in ("tidings", "floor", "pgbench"):
            reports = runs.get((scenario, server))
            if not reports:
                continue

            def med(path, reports=reports):
                vals = [v for v in (dig(r, path) for r in reports) if v is not None]
                return statistics.median(vals) if vals else None

            errors = sum(sum((dig(r, "connections.errors") or {}).values()) for r in reports)
            p50, p99 = med("delivery.latencyMs.p50"), med("delivery.latencyMs.p99")
            latency = f"{fmt(p50, 'ms')} / {fmt(p99, 'ms')}" if p50 is not None else "–"
            rss = med("server.rssBytes")
            server_cpu = med("server.cpuPercent")
            load_cpu = med("load.cpuPercent")
            out.append(
                f"| {scenario} | {server} | {fmt(med('connections.opened'), 'n')} | {fmt(med('delivery.perSecond'), 'rate')} | "
                f"{latency} | {fmt(med('publishing.acceptedPerSecond'), 'rate')} | "
                f"{'–' if server_cpu is None else f'{server_cpu:.0f}%'} | "
                f"{'–' if rss is None else f'{rss / 1048576:.0f} MiB'} | "
                f"{'–' if load_cpu is None else f'{load_cpu:.0f}%'} | "
                f"{fmt(med('connections.disconnects'), 'n')} | {errors} |")
    out.append("")
    out.append("A load generator near 100% of its core means the delivered rate is bounded by the loader, "
               "not the server; server CPU seconds per delivered event stay honest either way.")
    out.append("")
    out.extend(transport_section(runs))
    out.extend(trigger_section(runs))
    out.extend(multi_section(runs))
    out.append("## Micro-benchmarks")
    out.append("")
    out.append(f"`Benchmarks/` (package-benchmark), p90 checked against `Benchmarks/Thresholds/`: {args.micro}.")
    micro_md = os.path.join(args.raw, "micro.md")
    if os.path.exists(micro_md):
        with open(micro_md) as handle:
            table = handle.read().strip()
        if table:
            out.append("")
            for line in table.splitlines():
                if line.startswith("#"):
                    line = "#" + line  # one level below this report's sections
                out.append(line)
    micro = os.path.join(args.raw, "micro.txt")
    if os.path.exists(micro) and "within thresholds" not in args.micro:
        with open(micro) as handle:
            text = "\n".join(l for l in handle.read().splitlines() if not l.startswith("["))
        if text.strip():
            out.append("")
            out.append("<details><summary>threshold check output</summary>")
            out.append("")
            out.append("```")
            out.append(text[-12000:])
            out.append("```")
            out.append("</details>")
    out.append("")
    out.append("Reproduce: `make bench` (or `scripts/bench.sh --help`); one scenario by hand, e.g. "
               "`.build/release/tidings bench fanout --spawn --server-cpu 0 --load-cpu 1 --connections 2000 --rate 20`.")
    print("\n".join(out))


if __name__ == "__main__":
    main()
