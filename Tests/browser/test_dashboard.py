"""The dashboard at / in a real Chromium: live figures and charts, any event type, a phone."""

from __future__ import annotations

import json
import threading

from conftest import http, until


def text(browser, id_):
    return browser.driver.find_element("id", id_).text


def test_the_dashboard_moves_while_events_flow(gateways, database, browsers):
    gateway = gateways(database=database)
    user = "4206"
    browser = browsers()
    browser.driver.get(gateway.url + "/")
    browser.wait(lambda _: text(browser, "mode") == "PostgreSQL mode", what="the first figures")
    assert "ready" in text(browser, "ready")
    assert browser.driver.find_element("id", "lag").is_displayed()

    # Watch a stream with a pasted token: every event type shows, not a fixed list.
    browser.driver.find_element("id", "token").send_keys(gateway.token(user))
    browser.driver.find_element("id", "watch-button").click()
    browser.wait(lambda _: text(browser, "watch-state") == "open", what="the watch stream")
    browser.wait(lambda _: text(browser, "streams-sse") == "1", what="the SSE stream counted")
    # A waiting long poll counts under its transport.
    token = gateway.token(user)

    def wait_in_a_poll():
        auth = {"Authorization": f"Bearer {token}"}
        try:
            _, _, body = http("GET", gateway.url + "/poll", headers=auth)  # no resume point: the position, at once
            while not polled.is_set():  # poll on from each answer's position until the test is done
                _, _, body = http("GET", gateway.url + f"/poll?timeout=20s&last_event_id={json.loads(body)['last_event_id']}",
                                  headers=auth, timeout=30)
        except OSError:
            pass  # the gateway stopped at the end of the test

    polled = threading.Event()
    poll = threading.Thread(target=wait_in_a_poll, daemon=True)

    stop = threading.Event()

    def publish():
        n = 0
        while not stop.is_set():
            gateway.publish(user, "note.added" if n % 5 == 0 else "tick", {"n": n})
            n += 1

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    try:
        before = browser.js("return document.querySelector('#chart-published polyline').getAttribute('points')")
        browser.wait(lambda _: float(text(browser, "rate-published").rstrip("/s") or 0) > 0, what="a published rate")
        browser.wait(lambda _: float(text(browser, "rate-delivered").rstrip("/s") or 0) > 0, what="a delivered rate")
        browser.wait(lambda _: browser.js("return document.querySelector('#chart-published polyline').getAttribute('points')") != before
                     and browser.js("return document.querySelector('#chart-published polyline').getAttribute('points').split(' ').length") >= 2,
                     what="the published chart to draw")
        total = int(text(browser, "total-published"))
        browser.wait(lambda _: int(text(browser, "total-published")) > total, what="the total to move")
        browser.wait(lambda _: browser.js("return [...document.querySelectorAll('#watch-events tr')].some(r => r.dataset.event === 'note.added')"),
                     what="a note.added event in the watch list")
    finally:
        stop.set()
        publisher.join(10)
    poll.start()
    browser.wait(lambda _: text(browser, "streams-poll") == "1", what="the waiting poll counted")
    polled.set()
    browser.shot("dashboard")

    # Stopping the watch ends a stream: its reason shows.
    browser.driver.find_element("id", "stop").click()
    browser.wait(lambda _: browser.js("return document.querySelectorAll('#disconnects tr[data-reason]').length") > 0
                 and text(browser, "disconnects") != "none yet", what="a disconnect by reason")
    assert not [entry for entry in browser.severe_console_entries() if "favicon" in entry["message"] or "404" in entry["message"]]


def test_a_refused_token_stops_the_watch_with_a_clear_message(gateways, browsers):
    gateway = gateways()
    browser = browsers()
    browser.driver.get(gateway.url + "/")
    browser.driver.find_element("id", "token").send_keys("not-a-token")
    browser.driver.find_element("id", "watch-button").click()
    browser.wait(lambda _: text(browser, "watch-state") == "closed", what="the watch to stop")
    assert "refused" in text(browser, "watch-status")
    assert "retr" not in text(browser, "watch-status")
    assert "401" in text(browser, "error")


def test_the_dashboard_and_the_demo_fit_a_phone(gateways, browsers):
    gateway = gateways()
    phone = browsers(390, 844, mobile=True)
    for path in ["/", "/demo"]:
        phone.driver.get(gateway.url + path)
        phone.wait(lambda _: phone.js("return document.readyState") == "complete", what="the page")
        width = phone.js("return window.innerWidth")
        assert width == 390
        assert phone.js("return document.documentElement.scrollWidth") <= width, f"{path} is wider than the phone"
        for button in phone.driver.find_elements("css selector", "button"):
            box = phone.js("const r = arguments[0].getBoundingClientRect(); return [r.left, r.right]", button)
            assert 0 <= box[0] and box[1] <= width, f"a button of {path} is off-screen: {box}"
        phone.shot("phone" + path.replace("/", "-"))
