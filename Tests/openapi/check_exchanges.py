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
import sys

import yaml
from openapi_core import Config, OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from openapi_core.validation.response.exceptions import MissingData
from openapi_spec_validator import validate as lint
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Response

# The document's server: the recorded request is rebased on it (the tests use random ports).
BASE_URL = "http://127.0.0.1:8080"


def main(spec_path, exchanges_path):
    with open(spec_path, encoding="utf-8") as file:
        spec = yaml.safe_load(file)
    lint(spec)
    # RFC 9457 problems are JSON too.
    api = OpenAPI.from_dict(spec, config=Config(extra_media_type_deserializers={"application/problem+json": json.loads}))

    with open(exchanges_path, encoding="utf-8") as file:
        exchanges = [json.loads(line) for line in file if line.strip()]
    if not exchanges:
        print(f"openapi: no exchange was recorded in {exchanges_path}")
        return 1

    failures = []
    seen = collections.Counter()
    for exchange in exchanges:
        path, _, query = exchange["target"].partition("?")
        request = EnvironBuilder(
            method=exchange["method"],
            path=path,
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
        if body is None:
            # A stream's body (and an upgrade's) is not recorded: its status and headers are checked.
            errors = [error for error in errors if not isinstance(error, MissingData)]
        if errors:
            causes = []
            for error in errors:
                cause = error
                while cause is not None:
                    causes.append(f"{type(cause).__name__}: {cause}")
                    for sub in getattr(cause, "schema_errors", None) or []:
                        causes.append(f"  at {list(sub.absolute_path)}: {sub.message}")
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
        f"openapi: {len(exchanges)} answers of {len(seen)} kinds checked against {spec_path}: "
        f"{len(exchanges) - len(failures)} passed, {len(failures)} failed"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
