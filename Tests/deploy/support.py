"""What the deploy tests share: the binary, free loopback ports, waiting for a condition, and an
environment without the caller's TIDINGS_* settings."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("TIDINGS_BIN") or str(ROOT / ".build" / "debug" / "tidings")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def answers(url: str, **options) -> bool:
    try:
        return httpx.get(url, timeout=2, **options).status_code == 200
    except httpx.HTTPError:
        return False


def clean_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_") and k != "DATABASE_URL"}
