#!/usr/bin/env python3
"""A stand-in for `cargo lambda watch`: answers Lambda Invoke the way it does.

`POST /2015-03-31/functions/NAME/invocations` with a JSON payload:
* 200 with the function's JSON result;
* 500 with `{"errorType": ..., "errorMessage": ...}` and no `X-Amz-Function-Error` for a function
  error (exactly what cargo lambda watch does);
* 404 `{"title": "Missing function", ...}` for a name it does not serve (with `--functions`), and
  for a full ARN or any name no Cargo binary can have (cargo lambda watch only knows binary
  names: the proxy must strip ARNs).

What the stub does is driven by the payload (a JSON object), so one stub serves every test:
* `"sleep": SECONDS`: wait first;
* `"fail": true | "ErrorType" | {"errorType": ..., "errorMessage": ...}`: fail (default
  errorType `SqlFailed`);
* `"fail_times": N` with `"key": K`: fail the first N invocations carrying that key, then succeed;
* `"result": VALUE`: return VALUE as it is;
* otherwise return `{"function": NAME, "input": PAYLOAD}`.

`GET /_stub/invocations` lists every invocation (function, input, start, end, outcome);
`DELETE /_stub/invocations` clears the list.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import re
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from servers import serve_until_stopped


VALID_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


class Stub(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, functions: set[str] | None):
        super().__init__(addr, Handler)
        self.functions = functions
        self.lock = threading.Lock()
        self.invocations: list[dict] = []
        self.fail_counts: dict[str, int] = {}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Stub

    def log_message(self, format, *args):  # noqa: A002
        sys.stderr.write(f"{time.strftime('%H:%M:%S')} stub_workers: {format % args}\n")

    def _reply(self, status: int, doc) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        if self.path == "/_stub/invocations":
            with self.server.lock:
                return self._reply(200, list(self.server.invocations))
        return self._reply(404, {"title": "Not found"})

    def do_DELETE(self):
        if self.path == "/_stub/invocations":
            with self.server.lock:
                self.server.invocations.clear()
                self.server.fail_counts.clear()
            return self._reply(200, [])
        return self._reply(404, {"title": "Not found"})

    def do_POST(self):
        parts = urllib.parse.urlsplit(self.path).path.split("/")
        # ['', '2015-03-31', 'functions', NAME, 'invocations']
        if len(parts) != 5 or parts[1:3] != ["2015-03-31", "functions"] or parts[4] != "invocations":
            self._body()
            return self._reply(404, {"title": "Not found"})
        name = urllib.parse.unquote(parts[3])
        raw = self._body()
        known = self.server.functions
        # cargo lambda watch serves binary names only: a full ARN, or a name no Cargo binary can
        # have, is a missing function.
        if not VALID_NAME.match(name) or (known is not None and name not in known):
            return self._reply(404, {
                "title": "Missing function",
                "detail": f"that function doesn't exist as a binary in your project. "
                          f"Available functions: {sorted(known or [])}",
            })
        try:
            payload = json.loads(raw or b"null")
        except ValueError:
            payload = raw.decode("utf-8", "replace")
        record = {"function": name, "input": payload, "start": time.time()}
        status, doc = self._run(name, payload)
        record.update(end=time.time(), status=status, output=doc)
        with self.server.lock:
            self.server.invocations.append(record)
        self._reply(status, doc)

    def _run(self, name: str, payload):
        p = payload if isinstance(payload, dict) else {}
        if isinstance(p.get("sleep"), (int, float)):
            time.sleep(p["sleep"])
        fail = p.get("fail")
        if "fail_times" in p:
            key = f"{name}:{p.get('key', '')}"
            with self.server.lock:
                n = self.server.fail_counts.get(key, 0)
                self.server.fail_counts[key] = n + 1
            fail = (fail or True) if n < int(p["fail_times"]) else None
        if fail:
            if isinstance(fail, dict):
                err = {"errorType": fail.get("errorType", "SqlFailed"),
                       "errorMessage": fail.get("errorMessage", "stub failure")}
            else:
                err = {"errorType": fail if isinstance(fail, str) else "SqlFailed",
                       "errorMessage": p.get("errorMessage", f"stub {name} failed as asked")}
            return 500, err
        if "result" in p:
            return 200, p["result"]
        return 200, {"function": name, "input": payload}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="stand-in for cargo lambda watch")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("-P", "--invoke-port", "--port", dest="port", type=int, default=9000)
    ap.add_argument("--functions", default="", help="comma-separated names served (default: any)")
    args = ap.parse_args(argv)
    functions = {f for f in args.functions.split(",") if f} or None
    server = Stub((args.host, args.port), functions)
    print(f"stub_workers listening on http://{args.host}:{server.server_address[1]}", flush=True)
    return serve_until_stopped(server)


if __name__ == "__main__":
    sys.exit(main())
