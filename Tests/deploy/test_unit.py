"""deploy/tidings.service: systemd accepts it, and its stop timeout leaves room for the drain."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("TIDINGS_BIN") or str(ROOT / ".build" / "debug" / "tidings")
UNIT = ROOT / "deploy" / "tidings.service"


def seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "": 1}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*(ms|min|s|m|h|d|)", text):
        total += float(number) * units[unit]
    return total


def settings() -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def test_systemd_verifies_the_unit(tmp_path):
    # The unit as installed, with ExecStart pointing at the built binary (verify checks it exists).
    unit = tmp_path / "tidings.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/tidings", BIN))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert result.returncode == 0 and "tidings.service" not in result.stderr, result.stderr


def test_the_unit_restarts_on_failure_and_outwaits_the_drain():
    unit = settings()
    assert unit["Type"] == ["exec"]
    assert unit["Restart"] == ["on-failure"]
    assert int(unit["LimitNOFILE"][0]) >= 65536
    # Every duration flag of `serve` that bounds the shutdown, whatever this build has of them.
    printed = subprocess.run([BIN, "serve", "--jwt-secret", "x" * 32, "--print-config"], check=True,
                             capture_output=True, text=True, env={"PATH": os.environ.get("PATH", "")}).stdout
    flags = dict(re.findall(r"^(\S+)\s+= (\S+) \(", printed, re.MULTILINE))
    shutdown = sum(seconds(flags[name]) for name in ("drain-period", "shutdown-timeout") if name in flags)
    assert seconds(unit["TimeoutStopSec"][0]) > shutdown
