#!/usr/bin/env python3
"""Lambda-mending reverse proxy between moto's Step Functions interpreter and the workers.

moto's ASL interpreter calls Lambda (and every service integration) at
``http://localhost:$MOTO_PORT``. The e2e harness sets ``MOTO_PORT`` to this proxy, which:

* sends Lambda Invoke (``POST /2015-03-31/functions/NAME_OR_ARN/invocations``) to the workers
  (``cargo lambda watch`` or a stand-in), with the function ARN turned into the bare function
  name (``cargo lambda watch`` only knows binary names);
* turns the workers' answer to a function error (HTTP 500 with a Lambda error body
  ``{"errorType": ..., "errorMessage": ...}``, no ``X-Amz-Function-Error``) into what the Lambda
  API answers: HTTP 200, ``X-Amz-Function-Error: Unhandled`` and the same body, so that Step
  Functions takes ``errorType`` as the error name and the body as the cause;
* sends everything else to moto unchanged (all end-to-end headers kept: Host, Authorization,
  X-Amz-Target, X-Amz-Date, Content-Type...).

It also has a small admin API (never used by AWS clients) to route chosen function names to
other servers, so a test can serve a function from a stand-in of its own:
``GET /_lambda_proxy/routes``, ``PUT /_lambda_proxy/routes`` with ``{"NAME": "http://HOST:PORT"}``,
``DELETE /_lambda_proxy/routes/NAME``.

Standard library only. One log line per Lambda invoke on stderr.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from servers import serve_until_stopped

INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<fn>[^/?]+)/invocations$")
ARN_FUNCTION = re.compile(
    r"^(?:arn:[^:]+:lambda:[^:]*:)?(?:\d{12}:)?function:(?P<name>[^:]+)(?::(?P<qualifier>[^:]+))?$"
)
ADMIN_PREFIX = "/_lambda_proxy/routes"
# Hop-by-hop headers (RFC 9110 7.6.1) and the ones this proxy recomputes.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
    "content-length",
}
CHUNK = 64 * 1024


def function_name(raw: str) -> str:
    """`arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]`, `ACCOUNT:function:NAME` or
    `NAME` (URL-encoded or not) -> `NAME`."""
    name = urllib.parse.unquote(raw)
    m = ARN_FUNCTION.match(name)
    return m.group("name") if m else name


def lambda_error_body(body: bytes) -> dict | None:
    """The parsed body if it is a Lambda runtime error (`errorType` + `errorMessage`)."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(doc, dict) and isinstance(doc.get("errorType"), str) and "errorMessage" in doc:
        return doc
    return None


def log(msg: str) -> None:
    sys.stderr.write(f"{time.strftime('%H:%M:%S')} lambda_proxy: {msg}\n")
    sys.stderr.flush()


class Upstream:
    def __init__(self, url: str):
        u = urllib.parse.urlsplit(url)
        if u.scheme != "http" or not u.hostname:
            raise ValueError(f"only http://HOST:PORT upstreams are supported, got {url!r}")
        self.url = url.rstrip("/")
        self.host = u.hostname
        self.port = u.port or 80
        self.netloc = u.netloc

    def connect(self, timeout: float) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)


class Proxy(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, moto: Upstream, workers: Upstream, invoke_timeout: float, timeout: float):
        super().__init__(addr, Handler)
        self.moto = moto
        self.workers = workers
        self.invoke_timeout = invoke_timeout
        self.timeout_s = timeout
        self.routes: dict[str, Upstream] = {}
        self.routes_lock = threading.Lock()

    def upstream_for(self, fn: str) -> Upstream:
        with self.routes_lock:
            return self.routes.get(fn, self.workers)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Proxy

    def log_message(self, format, *args):  # noqa: A002 - one line per invoke is logged instead
        pass

    # --- request plumbing -------------------------------------------------------------
    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size_line = self.rfile.readline()
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # trailers until the empty line
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _forward_headers(self, host: str | None = None) -> dict[str, str]:
        headers = {}
        for k, v in self.headers.items():
            if k.lower() in HOP_BY_HOP:
                continue
            if host is not None and k.lower() == "host":
                continue
            headers[k] = v
        if host is not None:
            headers["Host"] = host
        return headers

    def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response_only(status)
        for k, v in headers:
            if k.lower() in HOP_BY_HOP:
                continue
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _send_json(self, status: int, doc) -> None:
        self._send(status, [("Content-Type", "application/json")], json.dumps(doc).encode())

    def _handle(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
            return self._admin(path)
        m = INVOKE_PATH.match(path)
        if m and self.command == "POST":
            return self._invoke(m.group("fn"))
        return self._to_moto()

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _handle

    # --- everything but Lambda: moto, unchanged ----------------------------------------
    def _to_moto(self) -> None:
        body = self._read_body()
        conn = self.server.moto.connect(self.server.timeout_s)
        try:
            # Host is kept as the client sent it: moto routes on it and SigV4 signed it.
            conn.request(self.command, self.path, body=body, headers=self._forward_headers())
            resp = conn.getresponse()
            length = resp.getheader("Content-Length")
            headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP]
            if length is not None and self.command != "HEAD":
                # Stream a body of known length through without holding it whole.
                self.send_response_only(resp.status, resp.reason)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", length)
                self.end_headers()
                remaining = int(length)
                while remaining > 0:
                    chunk = resp.read(min(CHUNK, remaining))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    remaining -= len(chunk)
                if remaining:
                    self.close_connection = True
            else:
                data = resp.read() if self.command != "HEAD" else b""
                self._send(resp.status, headers, data)
        except OSError as e:
            log(f"moto unreachable for {self.command} {self.path}: {e}")
            self._send_json(502, {"message": f"lambda_proxy: moto unreachable: {e}"})
        finally:
            conn.close()

    # --- Lambda Invoke: the workers, mended --------------------------------------------
    def _invoke(self, raw_fn: str) -> None:
        started = time.monotonic()
        fn = function_name(raw_fn)
        body = self._read_body()
        upstream = self.server.upstream_for(fn)
        headers = self._forward_headers(host=upstream.netloc)
        # The workers do not check AWS signatures; the signed headers are kept anyway.
        query = urllib.parse.urlsplit(self.path).query
        target = f"/2015-03-31/functions/{urllib.parse.quote(fn, safe='')}/invocations"
        if query:
            target += "?" + query
        conn = upstream.connect(self.server.invoke_timeout)
        try:
            conn.request("POST", target, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            status = resp.status
            out_headers = [
                (k, v)
                for k, v in resp.getheaders()
                if k.lower() not in HOP_BY_HOP and k.lower() != "content-type"
            ]
        except OSError as e:
            ms = (time.monotonic() - started) * 1000
            # Step Functions names a Lambda service failure `Lambda.ServiceException`, for a bare
            # function ARN as for arn:aws:states:::lambda:invoke. moto names a failed Invoke
            # call of a bare ARN "Exception", so the proxy answers with a function error of
            # that name instead: both forms of Task then see `Lambda.ServiceException`, and a
            # Retry on it matches as it would in AWS.
            err = {"errorType": "Lambda.ServiceException",
                   "errorMessage": f"lambda_proxy: workers unreachable at {upstream.url}: {e}"}
            log(f"invoke {fn} -> workers unreachable ({e}): answered as function error "
                f"Lambda.ServiceException {ms:.0f}ms")
            self._send(200, [("Content-Type", "application/json"), ("X-Amz-Function-Error", "Unhandled"),
                             ("X-Amz-Executed-Version", "$LATEST"), ("x-amzn-RequestId", str(uuid.uuid4()))],
                       json.dumps(err).encode())
            return
        finally:
            conn.close()

        function_error = next((v for k, v in out_headers if k.lower() == "x-amz-function-error"), None)
        note = ""
        if status == 200 and function_error is None:
            pass
        elif function_error is not None:
            note = f" function error {function_error}"
        elif status == 404:
            # cargo lambda watch: no binary of that name. Lambda's error for it:
            out_headers.append(("x-amzn-ErrorType", "ResourceNotFoundException"))
            note = f" no such function: {data[:300]!r}"
        elif status >= 500 and (err := lambda_error_body(data)) is not None:
            # cargo lambda watch: a function error is a bare 500 with the runtime's error body.
            status = 200
            function_error = "Unhandled"
            out_headers.append(("X-Amz-Function-Error", "Unhandled"))
            note = f" function error {err['errorType']}: {str(err.get('errorMessage'))[:200]!r}"
        else:
            note = f" body {data[:300]!r}"
        if status == 200 and not any(k.lower() == "x-amz-executed-version" for k, _ in out_headers):
            out_headers.append(("X-Amz-Executed-Version", "$LATEST"))
        if not any(k.lower() == "x-amzn-requestid" for k, _ in out_headers):
            # Lambda always sends one, and moto's lambda:invoke integration reads it on errors.
            out_headers.append(("x-amzn-RequestId", str(uuid.uuid4())))
        ms = (time.monotonic() - started) * 1000
        log(f"invoke {fn} -> {status}{note} {ms:.0f}ms")
        self._send(status, [("Content-Type", "application/json")] + out_headers, data)

    # --- admin -------------------------------------------------------------------------
    def _admin(self, path: str) -> None:
        srv = self.server
        body = self._read_body()
        if self.command == "GET":
            with srv.routes_lock:
                doc = {k: v.url for k, v in srv.routes.items()}
            return self._send_json(200, {"default": srv.workers.url, "routes": doc})
        if self.command in ("PUT", "POST") and path == ADMIN_PREFIX:
            try:
                doc = json.loads(body or b"{}")
                new = {str(k): Upstream(str(v)) for k, v in doc.items()}
            except (ValueError, AttributeError) as e:
                return self._send_json(400, {"message": str(e)})
            with srv.routes_lock:
                srv.routes.update(new)
            log("routes " + ", ".join(f"{k} -> {v.url}" for k, v in new.items()))
            return self._send_json(200, {k: v.url for k, v in new.items()})
        if self.command == "DELETE" and path.startswith(ADMIN_PREFIX + "/"):
            name = urllib.parse.unquote(path[len(ADMIN_PREFIX) + 1 :])
            with srv.routes_lock:
                srv.routes.pop(name, None)
            return self._send_json(200, {})
        return self._send_json(405, {"message": "unsupported"})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default=os.environ.get("LAMBDA_PROXY_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("LAMBDA_PROXY_PORT", "0")),
                   help="listen port (0: any free port; the chosen one is printed)")
    p.add_argument("--moto-url", default=os.environ.get("LAMBDA_PROXY_MOTO_URL"),
                   help="moto server, e.g. http://127.0.0.1:5000")
    p.add_argument("--workers-url", default=os.environ.get("LAMBDA_PROXY_WORKERS_URL", "http://127.0.0.1:9000"),
                   help="Lambda invoke endpoint of the workers (cargo lambda watch)")
    p.add_argument("--invoke-timeout", type=float,
                   default=float(os.environ.get("LAMBDA_PROXY_INVOKE_TIMEOUT", "900")),
                   help="seconds to wait for one invocation (a cold cargo lambda watch compiles first)")
    p.add_argument("--timeout", type=float, default=float(os.environ.get("LAMBDA_PROXY_TIMEOUT", "120")),
                   help="seconds to wait for moto")
    args = p.parse_args(argv)
    if not args.moto_url:
        p.error("--moto-url (or LAMBDA_PROXY_MOTO_URL) is required")
    server = Proxy((args.host, args.port), Upstream(args.moto_url), Upstream(args.workers_url),
                   args.invoke_timeout, args.timeout)
    port = server.server_address[1]
    print(f"lambda_proxy listening on http://{args.host}:{port} moto={args.moto_url} "
          f"workers={args.workers_url}", flush=True)
    return serve_until_stopped(server)


if __name__ == "__main__":
    sys.exit(main())
