"""Schemathesis hooks for fuzzing a live gateway (loaded by scripts/api-tests.sh through
SCHEMATHESIS_HOOKS).

- Credentials: the publish key (TIDINGS_FUZZ_PUBLISH_KEY) for the publisher operations
  (`POST /events`, presence) and a subscriber JWT (TIDINGS_FUZZ_TOKEN) for the subscriber ones
  (`POST /tickets`, `GET /ws`), so generated requests get past authentication; schemathesis's
  `ignored_auth` check still sends them without and with a wrong credential.
- The check `rejected_publish_stores_nothing`: every `POST /events` answered with an error must
  leave the count of stored events (`tidings_events_published_total` in `GET /metrics`)
  unchanged, and a `202` may add at most one event per id it answers.
"""

import atexit
import os
import re

import requests
import schemathesis

BASE_URL = os.environ["TIDINGS_FUZZ_URL"]
PUBLISH_KEY = os.environ["TIDINGS_FUZZ_PUBLISH_KEY"]
TOKEN = os.environ["TIDINGS_FUZZ_TOKEN"]

PUBLISHED = re.compile(r"^tidings_events_published_total(?:\{[^}]*\})? (\S+)$", re.M)


def stored_events():
    text = requests.get(BASE_URL + "/metrics", timeout=10).text
    match = PUBLISHED.search(text)
    return float(match.group(1)) if match else 0.0


def is_publish(case):
    return case.method.upper() == "POST" and case.path == "/events"


class Bearer:
    credential = ""

    def get(self, case, ctx):
        return self.credential

    def set(self, case, data, ctx):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"


@schemathesis.auth().apply_to(method="POST", path="/events").apply_to(path_regex="^/presence/")
class PublishKey(Bearer):
    credential = PUBLISH_KEY


@schemathesis.auth().apply_to(path="/tickets").apply_to(path="/ws").apply_to(path="/poll")
class SubscriberToken(Bearer):
    credential = TOKEN


# The count of stored events before the publish in flight (the run has one worker).
_before = {"count": None}
# How many answers the check saw, by kind: printed at the end, so a run shows it checked.
_checked = {"rejected": 0, "accepted": 0}
atexit.register(
    lambda: print(
        f"rejected_publish_stores_nothing: {_checked['rejected']} rejected and "
        f"{_checked['accepted']} accepted publishes checked"
    )
)


@schemathesis.hook
def before_call(context, case, kwargs):
    if is_publish(case):
        _before["count"] = stored_events()


@schemathesis.check
def rejected_publish_stores_nothing(ctx, response, case):
    if not is_publish(case) or _before["count"] is None:
        return None
    before, _before["count"] = _before["count"], None
    after = stored_events()
    if response.status_code >= 400:
        _checked["rejected"] += 1
        assert after == before, (
            f"POST /events was answered {response.status_code} but {after - before:g} event(s) were stored"
        )
    elif response.status_code == 202:
        _checked["accepted"] += 1
        body = response.json()
        answered = len(body["ids"]) if "ids" in body else 1
        assert 0 <= after - before <= answered, (
            f"POST /events answered {answered} id(s) but {after - before:g} event(s) were stored"
        )
    return None
