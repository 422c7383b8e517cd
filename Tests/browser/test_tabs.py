"""Ten tabs of one origin on plain HTTP/1.1: the six-connection limit, and `share: true`."""

from __future__ import annotations

from conftest import demo_url, until

TABS = 10


def open_tabs(browser, urls):
    handles = []
    for index, url in enumerate(urls):
        if index:
            browser.driver.switch_to.new_window("tab")
        browser.driver.get(url)
        handles.append(browser.driver.current_window_handle)
    return handles


def test_ten_native_eventsources_stall_at_six_and_ten_shared_tabs_get_everything(gateways, browsers):
    # The pages come from http://localhost:PORT, the streams go to http://127.0.0.1:PORT: as for a
    # dashboard whose gateway lives on another origin (CORS, tickets).
    gateway = gateways()
    user = "u-tabs"
    token = gateway.token(user)

    # 1. One native EventSource per tab: Chromium holds at most six connections to the gateway.
    native = browsers()
    handles = open_tabs(native, [f"{gateway.page_origin}/demo"] * TABS)
    for handle in handles:
        native.driver.switch_to.window(handle)
        native.js("""
          window.native = [];
          const source = new EventSource(arguments[0]);
          window.nativeSource = source;
          source.addEventListener("tick", (e) => window.native.push(e.lastEventId));
        """, f"{gateway.url}/events?ticket={gateway.ticket(token)}")
    until(lambda: gateway.metric("tidings_streams_open", transport="sse") == 6, 20, "six open streams")
    first = gateway.publish(user, "tick", {"n": 0})
    for handle in handles[:6]:
        native.driver.switch_to.window(handle)
        native.wait(lambda _: native.js("return window.native") == [first], what="the event in the first six tabs")
    for handle in handles[6:]:
        native.driver.switch_to.window(handle)
        assert native.js("return window.native") == []
        assert native.js("return window.nativeSource.readyState") == 0  # still CONNECTING, no error
    assert gateway.metric("tidings_streams_open", transport="sse") == 6
    native.shot("seventh-native-tab")
    native.driver.quit()
    until(lambda: gateway.metric("tidings_streams_open", transport="sse") == 0, 20, "the native streams to end")

    # 2. tidings.js with share: true — one connection for the ten tabs.
    shared = browsers()
    url = demo_url(gateway.page_origin, gateway=gateway.url, token=token, mode="ticket", share="1", connect="1")
    handles = open_tabs(shared, [url] * TABS)
    for handle in handles:
        shared.driver.switch_to.window(handle)
        shared.wait_state("open")
    until(lambda: gateway.metric("tidings_streams_open", transport="sse") == 1, 20, "one stream for ten tabs")
    ids = [gateway.publish(user, "tick", {"n": n}) for n in range(1, 6)]

    def leading_tabs(among):
        found = []
        for handle in among:
            shared.driver.switch_to.window(handle)
            if shared.js("return window.demo.feed.leading"):
                found.append(handle)
        return found

    def leader():
        found = leading_tabs(handles)
        assert len(found) == 1, f"{len(found)} leading tabs"
        return found[0]

    def everyone_has(expected):
        for handle in handles:
            shared.driver.switch_to.window(handle)
            shared.wait(lambda _: [id_ for id_, _ in shared.received()] == expected, what=f"all events in tab {handle}")

    everyone_has(ids)
    shared.shot("ten-shared-tabs")

    # 3. Close the leading tab while events keep coming: another tab takes over, nothing is lost.
    leading = leader()
    shared.driver.switch_to.window(leading)
    shared.driver.close()
    handles.remove(leading)
    ids += [gateway.publish(user, "tick", {"n": n}) for n in range(6, 12)]
    everyone_has(ids)
    until(lambda: gateway.metric("tidings_streams_open", transport="sse") == 1, 20, "one stream after the takeover")
    assert leader() != leading
    shared.shot("after-takeover")

    # 4. Freeze the leading tab (the browser's lifecycle freeze, as for a tab in the background):
    # it gives the connection up, another tab takes over, the others miss nothing; once thawed,
    # the frozen tab catches up too.
    frozen = leader()
    shared.driver.switch_to.window(frozen)
    shared.driver.execute_cdp_cmd("Page.setWebLifecycleState", {"state": "frozen"})
    others = [handle for handle in handles if handle != frozen]

    until(lambda: len(leading_tabs(others)) == 1, 20, "another tab to lead while the leader is frozen")
    ids += [gateway.publish(user, "tick", {"n": n}) for n in range(12, 16)]
    for handle in others:
        shared.driver.switch_to.window(handle)
        shared.wait(lambda _: [id_ for id_, _ in shared.received()] == ids, what=f"all events in tab {handle}")
    until(lambda: gateway.metric("tidings_streams_open", transport="sse") == 1, 20, "one stream while a tab is frozen")
    shared.driver.switch_to.window(frozen)
    shared.driver.execute_cdp_cmd("Page.setWebLifecycleState", {"state": "active"})
    shared.wait(lambda _: [id_ for id_, _ in shared.received()] == ids, what="the thawed tab to catch up")
    shared.shot("after-freeze")
