"""Checks every HTTP answer the Swift tests received against openapi/tidings.yaml.

    python check_exchanges.py openapi/tidings.yaml EXCHANGES.jsonl

EXCHANGES.jsonl is what the test clients record when TIDINGS_TEST_EXCHANGES is set (see
Tests/TidingsServerTests/Support/ExchangeRecorder.swift): one exchange a line. Each answer must be
described by the document — its path and method, its status, its required headers and their
schemas, its content type and its body's schema — or the check fails, listing every mismatch with
the test that received it. The document itself is linted first.
"""

import collections
import json
import re
import sys

import jsonschema
import yaml
from openapi_core import Config, OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from openapi_core.templating.paths.exceptions import OperationNotFound, PathNotFound
from openapi_core.validation.response.exceptions import MissingData
from openapi_spec_validator import validate as lint
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Response

# The document's server: the recorded request is rebased on it (the tests use random ports).
BASE_URL = "http://127.0.0.1:8080"
METHODS = ("get", "head", "post", "put", "patch", "delete", "options", "trace")


def text(body):
    return body.decode("utf-8")


# Bodies openapi-core does not decode by itself: JSON problems (RFC 9457) and text files.
DESERIALIZERS = {
    "application/problem+json": json.loads,
    "application/yaml": text,
    "text/css": text,
    "text/javascript": text,
    "text/event-stream": text,
}


def schema(spec, name):
    """The document's component schema `name`, its references resolving within the document."""
    return {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}


def message_errors(spec, record):
    """A message a stream carried: a WebSocket frame is a `WebSocketServerMessage`; the data of a
    `tidings.reset` event (SSE or WebSocket) is a `ResetData`."""
    try:
        message = json.loads(record["message"])
    except ValueError as error:
        return [f"not JSON: {error}"]
    checks = []
    if record["transport"] == "ws":
        checks.append(("WebSocketServerMessage", message))
        if message.get("type") == "event" and message.get("event") == "tidings.reset":
            checks.append(("ResetData", message.get("data")))
    else:
        checks.append(("ResetData", message))
    errors = []
    for name, value in checks:
        for error in jsonschema.Draft202012Validator(schema(spec, name)).iter_errors(value):
            errors.append(f"not a {name}: {error.message[:300]} at {list(error.absolute_path)}")
    return errors


def unmatched_errors(spec, exchange, path, error):
    """The document's rule for a request no operation serves (see its `info.description`): a path
    no endpoint serves is answered 404, a method a path does not list 405 with `Allow` naming the
    methods it does list (preflights aside: they are the CORS middleware's); both are problems."""
    status = exchange["status"]
    headers = {name.lower(): value for name, value in exchange["headers"]}
    if isinstance(error, PathNotFound):
        expected_status = 404
    else:
        expected_status = 405
        template = next((t for t in spec["paths"] if re.fullmatch(re.sub(r"\\{[^/]+\\}", "[^/]+", re.escape(t)), path)), None)
        listed = sorted(m.upper() for m in spec["paths"].get(template, {}) if m in METHODS and m != "options")
        if headers.get("allow") != ", ".join(listed):
            return [f"405 must carry Allow: {', '.join(listed)}, not {headers.get('allow')!r}"]
    if status != expected_status:
        return [f"{type(error).__name__}: {error} (answered {status}, the document's rule says {expected_status})"]
    if headers.get("content-type") != "application/problem+json":
        return [f"a {status} must be application/problem+json, not {headers.get('content-type')!r}"]
    try:
        body = json.loads(exchange.get("body") or "null")
    except ValueError as invalid:
        return [f"the {status} body is not JSON: {invalid}"]
    return [f"the {status} body is not a Problem: {e.message}" for e in jsonschema.Draft202012Validator(schema(spec, "Problem")).iter_errors(body)]


def main(spec_path, exchanges_path):
    with open(spec_path, encoding="utf-8") as file:
        spec = yaml.safe_load(file)
    lint(spec)
    # RFC 9457 problems are JSON too.
    api = OpenAPI.from_dict(spec, config=Config(extra_media_type_deserializers=DESERIALIZERS))

    with open(exchanges_path, encoding="utf-8") as file:
        exchanges = [json.loads(line) for line in file if line.strip()]
    if not exchanges:
        print(f"openapi: no exchange was recorded in {exchanges_path}")
        return 1

    failures = []
    seen = collections.Counter()
    messages = [record for record in exchanges if record.get("kind") == "message"]
    exchanges = [record for record in exchanges if record.get("kind") != "message"]
    message_failures = 0
    for record in messages:
        errors = message_errors(spec, record)
        if errors:
            message_failures += 1
            print(f"openapi: a {record['transport']} message (test {record['test']}): {record['message'][:300]}")
            for error in errors:
                print(f"    {error}")

    for exchange in exchanges:
        path, _, query = exchange["target"].partition("?")
        request = EnvironBuilder(
            method=exchange["method"],
            # werkzeug decodes the path: keep an encoded slash inside its segment, as the server does.
            path=re.sub("%2[Ff]", "%252F", path),
            query_string=query,
            base_url=BASE_URL,
            headers=[tuple(header) for header in exchange["requestHeaders"]],
        ).get_request()
        headers = [tuple(header) for header in exchange["headers"]]
        # Hop-by-hop framing, not part of the answer's description.
        headers = [(n, v) for n, v in headers if n.lower() != "transfer-encoding"]
        body = exchange.get("body")
        response = Response(
            response=(body or "").encode("utf-8"), status=exchange["status"], headers=headers,
        )
        # werkzeug adds a content type to every Response: keep exactly what the server sent.
        if not any(n.lower() == "content-type" for n, _ in headers):
            del response.headers["Content-Type"]
        # The declared Content-Length is the server's, whatever body was recorded.
        for name, value in headers:
            if name.lower() == "content-length":
                response.headers["Content-Length"] = value
        key = f'{exchange["method"]} {path} {exchange["status"]}'
        seen[key] += 1
        errors = list(api.iter_response_errors(WerkzeugOpenAPIRequest(request), WerkzeugOpenAPIResponse(response)))
        if not errors and path == "/poll" and exchange["status"] == 200:
            # A poll's tidings.reset carries a ResetData, like the stream's.
            for event in json.loads(body)["events"]:
                if event["event"] == "tidings.reset":
                    validator = jsonschema.Draft202012Validator(schema(spec, "ResetData"))
                    errors += [f"a poll's tidings.reset data is not a ResetData: {e.message}" for e in validator.iter_errors(event["data"])]
        if len(errors) == 1 and isinstance(errors[0], (PathNotFound, OperationNotFound)):
            errors = unmatched_errors(spec, exchange, path, errors[0])
        if body is None:
            # A stream's body (and an upgrade's) is not recorded: its status and headers are checked.
            errors = [error for error in errors if not isinstance(error, MissingData)]
        if errors:
            causes = []
            for error in errors:
                if isinstance(error, str):
                    causes.append(error)
                    continue
                cause = error
                while cause is not None:
                    causes.append(f"{type(cause).__name__}: {str(cause)[:300]}")
                    for sub in getattr(cause, "schema_errors", None) or []:
                        causes.append(f"  at {list(sub.absolute_path)}: {sub.message[:300]}")
                    cause = cause.__cause__
            failures.append((exchange, key, causes))

    for exchange, key, causes in failures:
        print(f"openapi: {key} (test {exchange['test']}, {exchange['target']}):")
        print(f"    headers: {exchange['headers']}")
        for cause in causes:
            print(f"    {cause}")
        if "body" in exchange:
            print(f"    body: {exchange['body'][:300]}")
    print(
        f"openapi: {len(messages)} stream messages checked against {spec_path}: "
        f"{len(messages) - message_failures} passed, {message_failures} failed"
    )
    print(
        f"openapi: {len(exchanges)} answers of {len(seen)} kinds checked against {spec_path}: "
        f"{len(exchanges) - len(failures)} passed, {len(failures)} failed"
    )
    return 1 if failures or message_failures else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
