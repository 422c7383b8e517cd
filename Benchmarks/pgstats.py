#!/usr/bin/env python3
"""The PostgreSQL side of `make bench` (scripts/bench.sh, scripts/bench-trigger.sh).

  pgstats.py floor OUT.json STDOUT LOGPREFIX CLIENTS
      A pgbench run as a report in `tidings bench --json`'s shape: transactions/s as
      publishing.acceptedPerSecond, per-transaction latency percentiles (from pgbench -l logs)
      as publishing.roundTripMs. The reference of the durable1/16/64 scenarios.
  pgstats.py sample OUT.jsonl DATABASE_URL [--gateway NAME=URL ...] PHASE
      `tidings bench --window-hook`: appends one sample of the database (CPU of every process
      of the cluster from /proc, pg_stat_activity's pid → application_name, pg_stat_database's
      totals) and of each gateway's /metrics counters.
  pgstats.py window SAMPLES.jsonl REPORT.json
      Adds `database` (deltas between the `start` and `end` samples) to a `tidings bench` report.
  pgstats.py histogram BEFORE.txt AFTER.txt NAME
      From two scrapes of a Prometheus histogram: the count in between and the bucket bound
      below which 99% of it fell (an upper bound on p99, not an interpolation), as JSON.
"""
import json
import math
import os
import subprocess
import sys
import time
import urllib.request

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


def floor(out, stdout, log_prefix, clients):
    tps = None
    with open(stdout) as handle:
        for line in handle:
            if line.startswith("tps = "):
                tps = float(line.split()[2])
    directory, base = os.path.split(log_prefix)
    micros = []
    for name in os.listdir(directory or "."):
        if name.startswith(base + "."):
            with open(os.path.join(directory, name)) as handle:
                for line in handle:
                    fields = line.split()
                    if len(fields) >= 3:
                        micros.append(int(fields[2]))
            os.remove(os.path.join(directory, name))
    micros.sort()
    round_trip = None
    if micros:
        ms = lambda q: percentile(micros, q) / 1000
        round_trip = {"count": len(micros), "p50": ms(50), "p90": ms(90), "p99": ms(99), "p999": ms(99.9),
                      "max": micros[-1] / 1000, "mean": sum(micros) / len(micros) / 1000}
    report = {"label": "pgbench", "settings": {"publishConnections": clients},
              "publishing": {"acceptedPerSecond": tps, "roundTripMs": round_trip},
              "notes": ["pgbench: one INSERT of an event-shaped row per transaction, same cluster, same indexes"]}
    with open(out, "w") as handle:
        json.dump(report, handle, indent=1)
    if tps is None:
        sys.exit("pgstats.py floor: no tps line in " + stdout)


def cpu_seconds(pid):
    """utime + stime of /proc/<pid>/stat, and its parent pid; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            text = handle.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS, int(fields[1])


def psql_json(url, sql):
    result = subprocess.run(["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", url, "-c", sql],
                            capture_output=True, text=True, timeout=10)
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip())
    return json.loads(result.stdout)


SAMPLE_SQL = """
SELECT json_build_object(
  'self', pg_backend_pid(),
  'activity', (SELECT json_agg(json_build_object('pid', pid, 'app', application_name, 'type', backend_type))
               FROM pg_stat_activity),
  'db', (SELECT row_to_json(d) FROM (
           SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted, tup_returned, tup_fetched
           FROM pg_stat_database WHERE datname = current_database()) d))
"""


def sample(out, url, gateways, phase):
    data = psql_json(url, SAMPLE_SQL)
    taken = time.monotonic()
    # The postmaster is the parent of every server process (our own backend is gone by now: ask a
    # background process); the cluster is it and its children.
    postmaster = None
    for entry in data["activity"] or []:
        found = cpu_seconds(entry["pid"]) if entry["pid"] and entry["pid"] != data["self"] else None
        if found:
            postmaster = found[1]
            break
    processes = {}
    if postmaster:
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                found = cpu_seconds(int(entry))
                if found and (found[1] == postmaster or int(entry) == postmaster) and int(entry) != data["self"]:
                    processes[entry] = found[0]
    metrics = {}
    for name, base in gateways:
        try:
            with urllib.request.urlopen(base + "/metrics", timeout=5) as response:
                metrics[name] = parse_counters(response.read().decode())
        except OSError as error:
            metrics[name] = {"error": str(error)}
    record = {"phase": phase, "monotonic": taken, "processes": processes, "postmaster": postmaster,
              "activity": data["activity"] or [], "db": data["db"], "gateways": metrics}
    with open(out, "a") as handle:
        handle.write(json.dumps(record) + "\n")


def parse_counters(text):
    counters = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        try:
            counters[name] = float(value)
        except ValueError:
            pass
    return counters


def window(samples, report_path):
    with open(samples) as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    start = next((r for r in records if r["phase"] == "start"), None)
    end = next((r for r in reversed(records) if r["phase"] == "end"), None)
    with open(report_path) as handle:
        report = json.load(handle)
    if not start or not end:
        report.setdefault("notes", []).append("no database samples at the window's bounds")
    else:
        seconds = end["monotonic"] - start["monotonic"]
        cpu = {}
        for pid, value in end["processes"].items():
            cpu[pid] = value - start["processes"].get(pid, 0)  # a process born in the window: all of its CPU
        apps = {}
        for entry in start["activity"] + end["activity"]:
            if entry["pid"] is not None:
                apps[str(entry["pid"])] = entry["app"] or entry["type"] or ""
        instances = {}
        for pid, value in cpu.items():
            app = apps.get(pid, "")
            if app.startswith("tidings-"):
                item = instances.setdefault(app, {"backends": 0, "cpuSeconds": 0.0})
                item["backends"] += 1
                item["cpuSeconds"] += value
        for name, item in instances.items():
            item["cpuPercent"] = 100 * item["cpuSeconds"] / seconds
            before = start["gateways"].get(name, {})
            after = end["gateways"].get(name, {})
            for counter, key in (("tidings_publish_requests_total", "publishRequestsPerSecond"),
                                 ("tidings_events_delivered_total", "deliveredPerSecond"),
                                 ('tidings_database_round_trips_total{connection="pool"}', "poolQueriesPerSecond"),
                                 ('tidings_database_round_trips_total{connection="listener"}', "listenerQueriesPerSecond")):
                if counter in after and counter in before:
                    item[key] = (after[counter] - before[counter]) / seconds
        delta = lambda key: end["db"][key] - start["db"][key]
        local = bool(start["postmaster"] and end["processes"])
        if not local:
            report.setdefault("notes", []).append("the database's processes are not on this machine: no CPU figures")
        total_cpu = sum(cpu.values()) if local else None
        report["database"] = {
            "seconds": seconds,
            "cpuSeconds": total_cpu,
            "cpuPercent": 100 * total_cpu / seconds if local else None,
            "processes": len(cpu),
            "exited": len(set(start["processes"]) - set(end["processes"])),
            "transactionsPerSecond": (delta("xact_commit") + delta("xact_rollback")) / seconds,
            "rowsInsertedPerSecond": delta("tup_inserted") / seconds,
            "rowsReadPerSecond": (delta("tup_returned") + delta("tup_fetched")) / seconds,
            "instances": instances,
        }
    with open(report_path, "w") as handle:
        json.dump(report, handle, indent=1)


def buckets(path, name):
    found = {}
    with open(path) as handle:
        for line in handle:
            if line.startswith(name + "_bucket{"):
                head, _, value = line.rpartition(" ")
                bound = head.split('le="', 1)[1].split('"', 1)[0]
                found[math.inf if bound == "+Inf" else float(bound)] = float(value)
    return found


def histogram(before_path, after_path, name):
    before, after = buckets(before_path, name), buckets(after_path, name)
    bounds = sorted(after)
    delta = [(bound, after[bound] - before.get(bound, 0)) for bound in bounds]
    total = delta[-1][1] if delta else 0
    result = {"count": total, "bucketsSeconds": [b for b in bounds if b != math.inf], "p99UpperBoundMs": None,
              "p99LowerBoundMs": None}
    if total > 0:
        previous = 0.0
        for bound, cumulative in delta:
            if cumulative >= 0.99 * total:
                result["p99UpperBoundMs"] = None if bound == math.inf else bound * 1000
                result["p99LowerBoundMs"] = previous * 1000
                break
            previous = bound
    print(json.dumps(result))


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    command, rest = args[0], args[1:]
    if command == "floor" and len(rest) == 4:
        floor(rest[0], rest[1], rest[2], int(rest[3]))
    elif command == "sample" and len(rest) >= 3:
        gateways = []
        positional = []
        index = 0
        while index < len(rest):
            if rest[index] == "--gateway":
                name, _, url = rest[index + 1].partition("=")
                gateways.append((name, url))
                index += 2
            else:
                positional.append(rest[index])
                index += 1
        sample(positional[0], positional[1], gateways, positional[-1])
    elif command == "window" and len(rest) == 2:
        window(rest[0], rest[1])
    elif command == "histogram" and len(rest) == 3:
        histogram(*rest)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
