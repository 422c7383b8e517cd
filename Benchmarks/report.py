#!/usr/bin/env python3
"""Turns the JSON reports of `tidings bench` runs into the Markdown table of issue 4.

Usage: report.py RAW_DIR [RAW_DIR…] [--micro TEXT] [--runs N] [--duration D] [--pinning TEXT] [--loadavg TEXT]

RAW_DIR holds <scenario>-<server>-<run>.json files written by scripts/bench.sh. Each figure is
the median of its runs with the range in brackets; "×" columns compare Tidings with the C floor
measured in the same run on the same machine.
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
    # label, scenario, json path, unit kind, nchan (issue), target text, target check
    ("light fan-out: 2,000 subs × 20 events/s — server CPU seconds per 1M delivered events", "light",
     "server.cpuSecondsPerMillionDelivered", "s", "11.4", "≤ 8", lambda v: v <= 8),
    ("same — publish→receive latency p50", "light", "delivery.latencyMs.p50", "ms", "11.5 ms", "≤ 10 ms", lambda v: v <= 10),
    ("same — publish→receive latency p99", "light", "delivery.latencyMs.p99", "ms", "26 ms", "≤ 20 ms", lambda v: v <= 20),
    ("fan-out: 2,000 subs × 200 events/s offered (overload) — delivered events/s", "overload",
     "delivery.perSecond", "rate", "184k [142k–326k]", "≥ 220k", lambda v: v >= 220_000),
    ("same — server CPU seconds per 1M delivered events", "overload",
     "server.cpuSecondsPerMillionDelivered", "s", "5.4 [3.0–7.0]", "≤ 4", lambda v: v <= 4),
    ("fan-out: 10,000 subs × 200 events/s — delivered events/s", "fanout10k",
     "delivery.perSecond", "rate", "104k", "≥ 125k", lambda v: v >= 125_000),
    ("point-to-point: 2,000 users, publisher at max rate (16 connections) — publishes/s accepted", "users",
     "publishing.acceptedPerSecond", "rate", "33k", "≥ 33k", lambda v: v >= 33_000),
    ("10,000 idle streams — server memory per connection", "idle",
     "server.memoryPerConnectionBytes", "kb", "11 KB", "≤ 8 KB", lambda v: v <= 8 * 1024),
    ("replay of 999 missed events after reconnect (p50 of 20 reconnects; store holds 100k)", "replay",
     "replay.timeMs.p50", "ms", "6 ms", "≤ 10 ms", lambda v: v <= 10),
    ("same, PostgreSQL mode (the bench database fills up run by run: 100k–300k events)", "durablereplay",
     "replay.timeMs.p50", "ms", "–", "≤ 50 ms", lambda v: v <= 50),
    ("durable publish (PostgreSQL mode, fsync on), 16 publishers, batches of 100 — events/s", "durable",
     "publishing.acceptedPerSecond", "rate", "–", "≥ 10k", lambda v: v >= 10_000),
    ("same, single: one publisher, one event per request — events/s", "durable1",
     "publishing.acceptedPerSecond", "rate", "–", "report", None),
]

HIGHER_IS_BETTER = {"rate"}


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
    out.append("| scenario | nchan (issue) | C floor (this run) | Tidings (this run) | Tidings ÷ floor | target | met |")
    out.append("|---|---|---|---|---|---|---|")
    for label, scenario, path, kind, nchan, target, check in ROWS:
        if not runs.get((scenario, "tidings")) and not runs.get((scenario, "floor")):
            continue
        floor_text, floor_median = summary(values(runs, scenario, "floor", path), kind)
        tidings_text, tidings_median = summary(values(runs, scenario, "tidings", path), kind)
        met = "–" if tidings_median is None or check is None else ("yes" if check(tidings_median) else "**no**")
        out.append(f"| {label} | {nchan} | {floor_text} | {tidings_text} | {ratio(tidings_median, floor_median, kind)} | {target} | {met} |")
    out.append("")

    out.append("## Details per scenario (medians)")
    out.append("")
    out.append("| scenario | server | streams open | delivered/s | latency p50 / p99 | published/s | server CPU % | server RSS | load CPU % | disconnects | errors |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|")
    order = ["light", "overload", "fanout10k", "users", "idle", "replay", "durablereplay", "durable", "durable1"]
    for scenario in order:
        for server in ("tidings", "floor"):
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
