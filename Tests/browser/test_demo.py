"""The demo page (/demo) and tidings.js in a real Chromium: delivery, restarts, resets, refusals."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest

from buffering_proxy import BufferingProxy
from conftest import demo_url, http, until


def open_demo_stream(gateway, browser, user: str, transport: str):
    """The demo page's feed for `user` over `transport`, with tickets, open on the gateway."""
    browser.driver.get(demo_url(gateway.url, token=gateway.token(user), mode="ticket", transport=transport, connect="1"))
    browser.wait_state("open")
    until(lambda: gateway.metric("tidings_streams_open", transport=transport) == 1, 10, f"a {transport} stream")
    return gateway, browser


def test_events_from_rest_and_sql_arrive_in_order_with_their_ids(gateways, database, browsers):
    gateway = gateways(database=database)
    user = "4201"
    browser = browsers()
    browser.driver.get(demo_url(gateway.url, token=gateway.token(user), pub=gateway.token("backend", publish=True),
                                mode="ticket", connect="1"))
    browser.wait_state("open")

    gateway.publish(user, "order.note", {"text": "by REST"})
    browser.driver.find_element("id", "send").click()  # the demo's own button: POST /events as demo.ping
    browser.wait(lambda _: len(browser.received()) == 2, what="the REST events")
    database.query(f"INSERT INTO orders (user_id, total) VALUES ({user}, 12.50)")
    database.query(f"UPDATE orders SET status = 'paid' WHERE user_id = {user}")
    database.query(f"SELECT tidings.publish('user:{user}', 'notice', '{{\"text\":\"from SQL\"}}')")
    gateway.publish(user, "order.note", {"text": "by REST again"})

    expected = database.events_of(user)
    assert [event for _, event in expected] == ["order.note", "demo.ping", "order.created", "order.updated", "notice", "order.note"]
    browser.wait(lambda _: browser.received() == expected, what="every event, in id order")
    rows = browser.js("return [...document.querySelectorAll('#log tr')].map(r => [r.dataset.id, r.dataset.event])")
    assert [tuple(row) for row in reversed(rows)] == expected  # the page shows newest first
    browser.shot("rest-and-sql")


@pytest.mark.parametrize("mode", ["cookie", "ticket"])
def test_a_killed_and_restarted_gateway_loses_and_repeats_nothing(mode, gateways, database, browsers):
    gateway = gateways(database=database)
    user = "4202" if mode == "cookie" else "4203"
    browser = browsers()
    browser.driver.get(demo_url(gateway.url, token=gateway.token(user), mode=mode, connect="1"))
    browser.wait_state("open")

    # Publish from SQL all along: the database takes events while the gateway is down.
    stop = threading.Event()
    published = []

    def publish():
        while not stop.is_set():
            n = len(published)
            out = subprocess.run(["psql", database.url, "-At", "-c",
                                  f"SELECT tidings.publish('user:{user}', 'tick', '{{\"n\":{n}}}')"],
                                 capture_output=True, text=True, check=True)
            published.append(out.stdout.strip())

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    try:
        browser.wait(lambda _: len(browser.received()) >= 5, what="events before the kill")
        gateway.kill()
        browser.wait_state("reconnecting")
        until(lambda: len(published) >= len(browser.received()) + 10, 20, "events published while the gateway is down")
        browser.shot("gateway-down")
        gateway.start()
        browser.wait_state("open", 30)
        before = len(published)
        until(lambda: len(published) >= before + 10, 20, "events published after the restart")
    finally:
        stop.set()
        publisher.join(10)

    expected = database.events_of(user)
    assert [id_ for id_, _ in expected] == published
    browser.wait(lambda _: browser.received() == expected, 30, "every event exactly once, in order")
    assert browser.js("return window.demo.reconnects") >= 1
    assert not [e for e in browser.js("return window.demo.errors") if e["fatal"]]
    browser.shot("after-restart")


@pytest.mark.parametrize("transport", ["sse", "ws"])
def test_a_stream_that_drops_before_its_first_event_loses_nothing(transport, gateways, database, browsers):
    # No event has reached the page yet (so no id of its own) when the gateway dies; what SQL
    # publishes while it is down must still arrive once it is back.
    user = "4207" if transport == "sse" else "4208"
    gateway, browser = open_demo_stream(gateways(database=database), browsers(), user, transport)
    gateway.kill()
    browser.wait_state("reconnecting")
    for n in range(3):
        database.query(f"SELECT tidings.publish('user:{user}', 'while-down', '{{\"n\":{n}}}')")
    gateway.start()
    expected = database.events_of(user)
    assert len(expected) == 3
    browser.wait(lambda _: browser.received() == expected, 30, "the events published while the gateway was down")
    browser.shot(f"dropped-before-first-event-{transport}")


def test_a_resume_point_older_than_retention_resets_and_the_page_reloads(gateways, browsers):
    gateway = gateways("--memory-max-events", "5")
    user = "u-reset"
    ids = [gateway.publish(user, "tick", {"n": n}) for n in range(10)]
    browser = browsers()
    browser.driver.get(demo_url(gateway.url, token=gateway.token(user), mode="ticket", last=ids[0], connect="1"))

    browser.wait(lambda _: browser.js("return window.demo.reset || null"), what="the reload after tidings.reset")
    reset = browser.js("return window.demo.reset")
    assert reset["reason"] == "history_expired"
    assert reset["last_event_id"] == ids[0]
    kept = [id_ for id_ in ids if int(id_) > int(reset["id"])]
    assert kept and kept == ids[-len(kept):] and len(kept) < 9
    browser.wait(lambda _: [id_ for id_, _ in browser.received()] == kept, what="the history that is left")
    assert "Reloaded after tidings.reset (history_expired)" in browser.driver.find_element("id", "note").text
    browser.shot("reset")


def test_no_identity_gets_nothing_and_a_clear_error_and_a_reused_ticket_is_refused(gateways, browsers):
    gateway = gateways()
    user = "u-refused"
    browser = browsers()
    browser.driver.get(demo_url(gateway.url, mode="none", connect="1"))
    browser.wait_state("closed")
    gateway.publish(user, "tick", {})
    problem = browser.driver.find_element("id", "problem").text
    assert "401" in problem and "Stopped" in problem, problem
    assert browser.received() == []
    browser.shot("no-identity")

    # One ticket, used twice through tidings.js: the first stream opens, the second is refused.
    # (With a starting point: without one, the first connection would spend a ticket on asking
    # for the current position first.)
    ticket = gateway.ticket(gateway.token(user))
    script = """
      const [ticket, done] = [arguments[0], arguments[arguments.length - 1]];
      import("./tidings.js").then(({ connect }) => {
        const feed = connect({ ticket: async () => ticket, lastEventId: "0" });
        const errors = [];
        feed.onError((e) => errors.push({ status: e.status, fatal: e.fatal, message: e.message }));
        let reported = false;
        feed.onState((s) => {
          if (reported || (s !== "open" && s !== "closed")) return;
          reported = true;
          done({ state: s, errors });
          feed.close();
        });
      });
    """
    first = browser.driver.execute_async_script(script, ticket)
    assert first["state"] == "open", first
    second = browser.driver.execute_async_script(script, ticket)
    assert second["state"] == "closed", second
    assert second["errors"][0]["status"] == 401 and second["errors"][0]["fatal"], second


@pytest.mark.parametrize("transport", ["ws", "poll"])
def test_the_other_transports_deliver_the_same_stream(transport, gateways, database, browsers):
    user = "4204" if transport == "ws" else "4205"
    gateway, browser = open_demo_stream(gateways(database=database), browsers(), user, transport)
    ids = [gateway.publish(user, "tick", {"n": n}) for n in range(5)]
    browser.wait(lambda _: [id_ for id_, _ in browser.received()] == ids, what=f"the events over {transport}")
    # A dropped connection resumes with the last id, with a fresh ticket.
    gateway.kill()
    gateway.start()
    ids += [gateway.publish(user, "tick", {"n": n}) for n in range(5, 8)]
    browser.wait(lambda _: [id_ for id_, _ in browser.received()] == ids, 30, f"the events after a restart over {transport}")
    browser.shot(transport)


def test_auto_falls_back_to_long_polling_behind_a_proxy_that_buffers(gateways, browsers):
    # Everything goes through the proxy: the page, the tickets, the stream. The SSE stream's bytes
    # never arrive, so `transport: "auto"` gives up on it and polls instead.
    gateway = gateways()
    proxy = BufferingProxy(gateway.port).start()
    try:
        user = "4206"
        browser = browsers()
        browser.driver.get(demo_url(proxy.url, token=gateway.token(user), mode="ticket", transport="auto", connect="1"))
        until(lambda: gateway.metric("tidings_streams_open", transport="poll") == 1, 30,
              "a long poll once the SSE stream stalled")
        ids = [gateway.publish(user, "tick", {"n": n}) for n in range(5)]
        browser.wait(lambda _: [id_ for id_, _ in browser.received()] == ids, 30, "the events through the proxy")
        assert gateway.metric("tidings_streams_open", transport="sse") == 0, "the stalled stream was given up"
        browser.shot("auto-fallback")
    finally:
        proxy.stop()


def test_static_files_are_cacheable_and_answer_head(gateways):
    gateway = gateways()
    status, headers, body = http("GET", gateway.url + "/tidings.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    assert body.startswith(b"// tidings.js")
    etag = headers["ETag"]
    assert etag and "max-age" in headers["Cache-Control"] and headers["Access-Control-Allow-Origin"] == "*"
    assert http("GET", gateway.url + "/tidings.js", headers={"If-None-Match": etag})[0] == 304
    for path in ["/", "/demo", "/favicon.ico", "/tidings.js"]:
        status, headers, body = http("HEAD", gateway.url + path)
        assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0, path
    assert http("GET", gateway.url + "/favicon.ico")[1]["Content-Type"] == "image/x-icon"


def test_the_readme_shows_the_demo_code():
    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    section = readme[readme.index("### The demo page"):]
    block = section[section.index("```js\n") + 6:section.index("\n```", section.index("```js\n"))]
    lines = block.splitlines()
    assert lines[0].startswith('import { connect } from "') and lines[1] == ""
    demo = (root / "web" / "demo.html").read_text()
    start = demo.index("// ---- reference snippet")
    snippet = demo[demo.index("\n", start) + 1:demo.index("// ---- end of the reference snippet")].rstrip("\n")
    assert "\n".join(lines[2:]) == snippet
