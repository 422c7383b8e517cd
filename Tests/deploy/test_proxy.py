"""deploy/nginx.conf for real: Debian's nginx on loopback with a certificate made by openssl, in
front of two `tidings serve` instances in PostgreSQL mode (one database, each configured by a
--config file with its secrets in files). Twenty SSE streams share ONE HTTP/2 connection; one
instance restarts while events are published; every stream must get every event once, in order.

Run through scripts/deploy-tests.sh (it installs nginx and openssl and makes the venv).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import ssl
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from support import BIN, ROOT, answers, clean_environment, free_port, wait_for

CLUSTER_URL = os.environ.get("TIDINGS_TEST_DATABASE_URL")
NGINX = os.environ.get("TIDINGS_NGINX", "/usr/sbin/nginx")
STREAMS = 20


class Instance:
    """One `tidings serve --config FILE`; stopped with SIGTERM and started again on its port."""

    def __init__(self, folder: Path, name: str, database_url: str, secret_file: Path, key_file: Path):
        self.port = free_port()
        self.log = folder / f"{name}.log"
        self.config = folder / f"{name}.json"
        self.config.write_text(json.dumps({
            "host": "127.0.0.1",
            "port": self.port,
            "database-url": database_url,
            "jwt-secret-file": str(secret_file),
            "publish-key-file": [str(key_file)],
            "retry": "200ms",
            "log-format": "json",
        }))
        self.process: subprocess.Popen | None = None

    def start(self):
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen([BIN, "serve", "--config", str(self.config)], stdout=log,
                                            stderr=subprocess.STDOUT, env=clean_environment())
        wait_for(lambda: self.process.poll() is None and answers(f"http://127.0.0.1:{self.port}/readyz"), 30,
                 f"instance on {self.port} to be ready")

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
                raise AssertionError(f"instance on {self.port} ignored SIGTERM")


def site_config(listen: int, upstreams: list[int], cert: Path, key: Path) -> str:
    """deploy/nginx.conf with this test's ports and certificate; every edited line must exist."""
    site = (ROOT / "deploy" / "nginx.conf").read_text()
    replacements = {
        "listen 443 ssl http2;": f"listen 127.0.0.1:{listen} ssl http2;",
        "listen [::]:443 ssl http2;\n": "",
        "server 127.0.0.1:8081 ": f"server 127.0.0.1:{upstreams[0]} ",
        "server 127.0.0.1:8082 ": f"server 127.0.0.1:{upstreams[1]} ",
        "/etc/ssl/tidings/fullchain.pem": str(cert),
        "/etc/ssl/tidings/privkey.pem": str(key),
    }
    for old, new in replacements.items():
        assert old in site, f"deploy/nginx.conf no longer has {old!r}"
        site = site.replace(old, new)
    return site


def main_config(folder: Path, site: Path) -> str:
    """A private nginx: pid, logs and temporary files in `folder`, nothing under /etc or /var."""
    temp = "\n".join(f"    {kind}_temp_path {folder}/temp/{kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log info;
events {{ worker_connections 1024; }}
http {{
    log_format streams '$connection $server_protocol "$request" $status $upstream_addr';
    access_log {folder}/access.log streams;
{temp}
    include {site};
}}
"""


@pytest.fixture
def folder():
    path = Path(tempfile.mkdtemp(prefix="tidings-deploy-"))
    path.chmod(0o755)
    (path / "temp").mkdir(mode=0o777)
    (path / "temp").chmod(0o777)
    yield path
    out = ROOT / ".build" / "deploy-tests"
    out.mkdir(parents=True, exist_ok=True)
    for log in path.glob("*.log"):
        shutil.copy(log, out / log.name)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def database_url():
    if not CLUSTER_URL:
        pytest.fail("TIDINGS_TEST_DATABASE_URL is not set (run through scripts/deploy-tests.sh)")
    name = "deploy_proxy"
    url = urlunsplit(urlsplit(CLUSTER_URL)._replace(path=f"/{name}"))
    for sql in (f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}"):
        subprocess.run(["psql", CLUSTER_URL, "-q", "-v", "ON_ERROR_STOP=1", "-c", sql], check=True, capture_output=True)
    subprocess.run([BIN, "migrate", "--database-url", url], check=True, capture_output=True, env=clean_environment())
    return url


def test_twenty_streams_over_one_http2_connection_survive_an_instance_restart(folder, database_url):
    secret = secrets.token_hex(32)
    publish_key = secrets.token_hex(16)
    (folder / "jwt-secret").write_text(secret + "\n")
    (folder / "publish-keys").write_text(f"# keys of the test publisher\n{publish_key}\n")
    instances = [Instance(folder, f"instance-{n}", database_url, folder / "jwt-secret", folder / "publish-keys")
                 for n in (1, 2)]

    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    proxy_port = free_port()
    site = folder / "tidings.conf"
    site.write_text(site_config(proxy_port, [i.port for i in instances], cert, key))
    (folder / "nginx.conf").write_text(main_config(folder, site))

    nginx = None
    try:
        for instance in instances:
            instance.start()
        nginx = subprocess.Popen([NGINX, "-p", str(folder), "-e", str(folder / "error.log"),
                                  "-c", str(folder / "nginx.conf"), "-g", "daemon off;"],
                                 stdout=subprocess.DEVNULL, stderr=open(folder / "nginx-stderr.log", "wb"))
        tls = ssl.create_default_context(cafile=str(cert))
        base = f"https://127.0.0.1:{proxy_port}"
        wait_for(lambda: nginx.poll() is None and answers(base + "/healthz", verify=tls), 20, "nginx to answer")
        token = subprocess.run([BIN, "token", "--secret", secret, "--sub", "viewer", "--topics", "news"],
                               check=True, capture_output=True, text=True, env=clean_environment()).stdout.strip()
        result = asyncio.run(asyncio.wait_for(
            run_streams(base, tls, token, publish_key, instances[0]), timeout=180))
        # The cookie is honoured from a page of the proxy's own origin (its port included, which
        # nginx must pass on in Host) and refused from another site.
        with httpx.Client(http2=True, verify=tls, cookies={"tidings_token": token}) as client:
            own = client.post(base + "/tickets", headers={"Origin": base})
            other = client.post(base + "/tickets", headers={"Origin": "https://elsewhere.example"})
        assert own.status_code == 201, own.text
        assert other.status_code == 403, other.text
    finally:
        if nginx and nginx.poll() is None:
            nginx.terminate()
            nginx.wait(10)
        for instance in instances:
            instance.stop()

    published, received, reconnects, versions = result
    assert len(published) == 30 and published == sorted(published, key=int)
    for index, ids in enumerate(received):
        assert ids == published, f"stream {index} got {ids}, expected {published}"
    assert versions == {"HTTP/2"}
    # The stopped instance served some of the streams, and they came back through nginx.
    assert reconnects >= 1

    # nginx's own record: every subscribe (first and reconnect) came over one HTTP/2 connection.
    lines = [line for line in (folder / "access.log").read_text().splitlines()
             if '"GET /events' in line and line.split('"')[2].split()[0] == "200"]
    assert len(lines) == STREAMS + reconnects, lines
    connections = {line.split()[0] for line in lines}
    protocols = {line.split()[1] for line in lines}
    assert protocols == {"HTTP/2.0"}, lines
    assert len(connections) == 1, lines
    upstreams = {line.split()[-1] for line in lines}
    assert {f"127.0.0.1:{i.port}" for i in instances} <= upstreams, "both instances served streams"


async def within(seconds: float, awaitable, what):
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except asyncio.TimeoutError:
        raise AssertionError(f"timed out after {seconds}s waiting for {what()}") from None


async def run_streams(base: str, tls: ssl.SSLContext, token: str, publish_key: str, restarted: Instance):
    received: list[list[str]] = [[] for _ in range(STREAMS)]
    last_id: list[str | None] = [None] * STREAMS
    connected = [asyncio.Event() for _ in range(STREAMS)]
    ended = [asyncio.Event() for _ in range(STREAMS)]
    reconnects = 0
    versions: set[str] = set()
    # One connection at most: HTTP/2 multiplexing is the only way twenty streams can be open.
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(http2=True, verify=tls, limits=limits, timeout=httpx.Timeout(10, read=30)) as client:

        async def stream(index: int):
            nonlocal reconnects
            first = True
            while True:
                headers = {"Authorization": f"Bearer {token}"}
                if last_id[index]:
                    headers["Last-Event-ID"] = last_id[index]
                try:
                    async with client.stream("GET", base + "/events?topic=news&last_event_id=0",
                                             headers=headers) as response:
                        if response.status_code != 200:
                            await response.aread()
                            await asyncio.sleep(0.2)
                            continue
                        versions.add(response.http_version)
                        if not first:
                            reconnects += 1
                        first = False
                        connected[index].set()
                        event_id, event_type = None, None
                        async for line in response.aiter_lines():
                            if line.startswith("id:"):
                                event_id = line[3:].strip()
                                last_id[index] = event_id
                            elif line.startswith("event:"):
                                event_type = line[6:].strip()
                            elif line == "":
                                if event_type == "news.item" and event_id:
                                    received[index].append(event_id)
                                elif event_type == "news.end":
                                    ended[index].set()
                                event_id, event_type = None, None
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)

        tasks = [asyncio.create_task(stream(index)) for index in range(STREAMS)]
        try:
            await within(20, asyncio.gather(*(event.wait() for event in connected)),
                         lambda: f"the streams to open ({sum(e.is_set() for e in connected)} of {STREAMS} open)")
            published: list[str] = []

            async def publish(count: int):
                for _ in range(count):
                    response = await client.post(base + "/events", headers={"Authorization": f"Bearer {publish_key}"},
                                                 json={"topic": "news", "event": "news.item", "data": {"n": len(published)}})
                    assert response.status_code == 202, response.text
                    published.append(response.json()["id"])

            async def all_have(count: int):
                while any(len(ids) < count for ids in received):
                    await asyncio.sleep(0.05)

            counts = lambda: f"events; streams have {[len(ids) for ids in received]}"
            await publish(10)
            await within(20, all_have(10), counts)
            await asyncio.to_thread(restarted.stop)
            await publish(10)
            await asyncio.to_thread(restarted.start)
            await publish(10)
            await within(30, all_have(30), counts)
            # A closing event: a duplicate of anything before it would have arrived before it.
            response = await client.post(base + "/events", headers={"Authorization": f"Bearer {publish_key}"},
                                         json={"topic": "news", "event": "news.end", "data": {}})
            assert response.status_code == 202, response.text
            await within(20, asyncio.gather(*(event.wait() for event in ended)), lambda: "the closing event")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return published, [list(ids) for ids in received], reconnects, versions
