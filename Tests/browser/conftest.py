"""Fixtures of the real-browser suite: gateways, databases and headless Chromium sessions.

Every gateway is the built `tidings` binary on 127.0.0.1 with a port of its own; PostgreSQL tests
get a database of their own in the cluster of TIDINGS_TEST_DATABASE_URL. Each test writes its
screenshots and gateway logs to $TIDINGS_BROWSER_OUT/<test name>/.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("TIDINGS_BIN") or str(ROOT / ".build" / "debug" / "tidings")
OUT = Path(os.environ.get("TIDINGS_BROWSER_OUT") or ROOT / ".build" / "browser-tests")
CLUSTER_URL = os.environ.get("TIDINGS_TEST_DATABASE_URL")
CHROMIUM = os.environ.get("TIDINGS_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("TIDINGS_CHROMEDRIVER", "/usr/bin/chromedriver")
PUBLISH_KEY = "browser-suite-publish-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def until(condition, timeout: float = 20, what: str = "condition"):
    """Polls `condition` until it returns something truthy (for conditions outside a browser)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
            if value:
                return value
        except (OSError, urllib.error.URLError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def http(method: str, url: str, body=None, headers=None, timeout: float = 10):
    """(status, headers, body bytes) of one request; HTTP errors are answers, not exceptions."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


class Database:
    """A fresh database in the test cluster, migrated, with the demo `orders` table."""

    def __init__(self, name: str):
        parts = urlsplit(CLUSTER_URL)
        self.admin_url = CLUSTER_URL
        self.url = urlunsplit(parts._replace(path=f"/{name}"))
        self.psql_admin(f"DROP DATABASE IF EXISTS {name}")
        self.psql_admin(f"CREATE DATABASE {name}")
        subprocess.run([BIN, "migrate", "--database-url", self.url], check=True, capture_output=True)
        subprocess.run(["psql", self.url, "-q", "-v", "ON_ERROR_STOP=1", "-f", str(ROOT / "examples" / "orders.sql")],
                       check=True, capture_output=True)

    def psql_admin(self, sql: str):
        subprocess.run(["psql", self.admin_url, "-q", "-v", "ON_ERROR_STOP=1", "-c", sql], check=True, capture_output=True)

    def query(self, sql: str) -> list[list[str]]:
        result = subprocess.run(["psql", self.url, "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", sql],
                                check=True, capture_output=True, text=True)
        return [line.split("\t") for line in result.stdout.splitlines() if line]

    def events_of(self, user: str) -> list[tuple[str, str]]:
        rows = self.query(f"SELECT id, event FROM tidings.events WHERE targets @> ARRAY['user:{user}'] ORDER BY id")
        return [(row[0], row[1]) for row in rows]


class Gateway:
    """One `tidings serve` process on loopback; restartable on the same port."""

    def __init__(self, folder: Path, database: Database | None = None, *extra: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Pages served from this other origin reach the gateway cross-origin (CORS, tickets).
        self.page_origin = f"http://localhost:{self.port}"
        self.secret = secrets.token_hex(32)
        self.database = database
        self.extra = list(extra)
        self.log = folder / "gateway.log"
        self.process: subprocess.Popen | None = None

    def start(self):
        arguments = [BIN, "serve", "--host", "127.0.0.1", "--port", str(self.port), "--jwt-secret", self.secret,
                     "--publish-key", PUBLISH_KEY, "--retry", "300ms", "--cors-origin", self.page_origin,
                     "--log-format", "json", *self.extra]
        if self.database:
            arguments += ["--database-url", self.database.url]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(arguments, stdout=log, stderr=subprocess.STDOUT)
        until(lambda: self.process.poll() is None and http("GET", self.url + "/readyz", timeout=2)[0] == 200,
              30, "the gateway to be ready")
        return self

    def kill(self):
        """SIGKILL: no graceful end for the streams."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def token(self, sub: str, topics: str | None = None, publish: bool = False, ttl: str = "1h") -> str:
        arguments = [BIN, "token", "--secret", self.secret, "--sub", sub, "--ttl", ttl]
        if topics:
            arguments += ["--topics", topics]
        if publish:
            arguments.append("--publish")
        return subprocess.run(arguments, check=True, capture_output=True, text=True).stdout.strip()

    def publish(self, user: str, event: str, data) -> str:
        status, _, body = http("POST", self.url + "/events", {"user": user, "event": event, "data": data},
                               {"Authorization": f"Bearer {PUBLISH_KEY}"})
        assert status == 202, (status, body)
        return json.loads(body)["id"]

    def ticket(self, token: str) -> str:
        status, _, body = http("POST", self.url + "/tickets", headers={"Authorization": f"Bearer {token}"})
        assert status == 201, (status, body)
        return json.loads(body)["ticket"]

    def metric(self, name: str, **labels) -> float:
        _, _, body = http("GET", self.url + "/metrics")
        total = 0.0
        for line in body.decode().splitlines():
            if line.startswith("#") or not line.startswith(name):
                continue
            head, _, value = line.rpartition(" ")
            if head != name and not head.startswith(name + "{"):
                continue
            if all(f'{key}="{value_}"' in head for key, value_ in labels.items()):
                total += float(value)
        return total


@pytest.fixture
def out(request) -> Path:
    folder = OUT / request.node.name.replace("/", "_")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def gateways(out):
    started: list[Gateway] = []

    def make(*extra: str, database: Database | None = None) -> Gateway:
        gateway = Gateway(out, database, *extra)
        started.append(gateway)
        return gateway.start()

    yield make
    for gateway in started:
        gateway.stop()


@pytest.fixture
def database(request):
    if not CLUSTER_URL:
        pytest.fail("TIDINGS_TEST_DATABASE_URL is not set (run through scripts/browser-tests.sh)")
    return Database("browser_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[:50].lower())


class Browser:
    """A headless Chromium session with a few helpers for the demo page."""

    def __init__(self, out: Path, width: int, height: int, mobile: bool):
        options = Options()
        options.binary_location = CHROMIUM
        for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                         "--no-first-run", "--disable-extensions", "--password-store=basic",
                         f"--window-size={width},{height}"):
            options.add_argument(argument)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        self.driver.set_script_timeout(20)
        if mobile:
            self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                        {"width": width, "height": height, "deviceScaleFactor": 2, "mobile": True})
        self.out = out
        self.shots = 0

    def wait(self, condition, timeout: float = 20, what: str = "condition"):
        return WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(
            lambda driver: condition(driver), f"timed out after {timeout}s waiting for {what}")

    def js(self, script: str, *arguments):
        return self.driver.execute_script(script, *arguments)

    def shot(self, name: str):
        self.shots += 1
        self.driver.save_screenshot(str(self.out / f"{self.shots:02d}-{name}.png"))

    # The demo page keeps what it received in window.demo.
    def received(self) -> list[tuple[str, str]]:
        return [tuple(pair) for pair in self.js("return window.demo.received.map(e => [e.id, e.event])")]

    def state(self) -> str | None:
        return self.js("return window.demo && window.demo.states.at(-1) || null")

    def wait_state(self, state: str, timeout: float = 20):
        self.wait(lambda _: self.state() == state, timeout, f"the demo to be {state}")

    def severe_console_entries(self) -> list[dict]:
        return [entry for entry in self.driver.get_log("browser") if entry["level"] == "SEVERE"]


@pytest.fixture
def browsers(out):
    opened: list[Browser] = []

    def make(width: int = 1280, height: int = 900, mobile: bool = False) -> Browser:
        browser = Browser(out, width, height, mobile)
        opened.append(browser)
        return browser

    yield make
    for index, browser in enumerate(opened):
        try:
            browser.driver.save_screenshot(str(out / f"final-{index}.png"))
        except Exception:  # a closed window or session: nothing to show
            pass
        try:
            browser.driver.quit()
        except Exception:
            pass


def demo_url(origin: str, **params) -> str:
    from urllib.parse import urlencode
    return f"{origin}/demo#" + urlencode({key: value for key, value in params.items() if value is not None})
