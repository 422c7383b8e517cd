"""The admin listener's /metrics scraped as Prometheus would: the text parsed by the Prometheus
client's own parser (prometheus-client, PyPI), every family of the operations issue present with
its type, and the operations endpoints absent from the public port.

Run through scripts/deploy-tests.sh (it makes the venv).
"""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from support import BIN, answers, clean_environment, free_port, wait_for

def test_the_admin_scrape_parses_as_prometheus_text_with_every_operations_family(tmp_path: Path):
    port, admin = free_port(), free_port()
    key = secrets.token_hex(16)
    with open(tmp_path / "serve.log", "wb") as log:
        process = subprocess.Popen(
            [BIN, "serve", "--port", str(port), "--admin-port", str(admin), "--publish-key", key,
             "--jwt-secret", secrets.token_hex(32), "--drain-period", "0s"],
            stdout=log, stderr=subprocess.STDOUT, env=clean_environment())
    try:
        public, private = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}"
        wait_for(lambda: process.poll() is None and answers(f"{private}/readyz"), 30, "the admin listener")
        published = httpx.post(f"{public}/events", headers={"Authorization": f"Bearer {key}"},
                               json={"user": "42", "event": "order.updated", "data": {"n": 1}}, timeout=10)
        assert published.status_code == 202, published.text
        rejected = httpx.post(f"{public}/events", headers={"Authorization": f"Bearer {key}"},
                              json={"user": "42", "event": "bad event"}, timeout=10)
        assert rejected.status_code == 422

        for path in ("/metrics", "/healthz", "/readyz", "/"):
            assert httpx.get(f"{public}{path}", timeout=10).status_code == 404, path

        scrape = httpx.get(f"{private}/metrics", timeout=10)
        assert scrape.status_code == 200
        assert scrape.headers["content-type"].startswith("text/plain")
        families = {family.name: family for family in text_string_to_metric_families(scrape.text)}

        # The parser drops _total from counter names and keeps the type it read from # TYPE.
        expected = {
            "tidings_publish_request_duration_seconds": "histogram",
            "tidings_stream_duration_seconds": "histogram",
            "tidings_build_info": "gauge",
            "tidings_disconnects": "counter",
            "tidings_events_published": "counter",
            "tidings_connections_open": "gauge",
        }
        for name, kind in expected.items():
            assert name in families, f"{name} missing from the scrape"
            assert families[name].type == kind, f"{name} is a {families[name].type}, not a {kind}"

        requests = [s for s in families["tidings_publish_request_duration_seconds"].samples
                    if s.name.endswith("_count")]
        assert sum(s.value for s in requests) == 2  # the stored publish and the rejected one
        build = families["tidings_build_info"].samples
        assert len(build) == 1 and build[0].value == 1 and build[0].labels.get("version")
        reasons = {s.labels["reason"] for s in families["tidings_disconnects"].samples}
        assert {"client_closed", "slow_consumer", "token_expired", "shutdown"} <= reasons, reasons
        published_total = [s.value for s in families["tidings_events_published"].samples]
        assert published_total == [1]
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert process.returncode == 0, (tmp_path / "serve.log").read_text()
