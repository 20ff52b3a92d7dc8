#!/usr/bin/env python3
"""Benchmark of the Lambda worker binaries (a benchmark, not a test: it prints figures).

For each worker (plan, apply-one, record, notify) it reports:
  - the stripped size of the release binary and the size of its zip (the Lambda package),
  - cold init: the time from process start to the worker's first request to the Lambda
    runtime API (`GET /2018-06-01/runtime/invocation/next`), served here by a small fake
    runtime API on localhost,
  - peak memory (VmHWM) over one invocation, served by the same fake runtime API.

Targets (from the published Lambda cold-start benchmark: Rust ~14 ms init and ~15 MB,
Python ~75-85 ms and ~36 MB): zipped under 8 MB, init under 20 ms, peak under 40 MB.

Usage: bench/workers.py [--runs N]   (builds the release binaries if they are missing)
Needs the local PostgreSQL (scripts/ensure-postgres) for the database workers.
"""

from __future__ import annotations

import argparse
import http.server
import io
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "target" / "release"
WORKERS = ["plan", "apply-one", "record", "notify"]


class FakeRuntime(http.server.ThreadingHTTPServer):
    """The Lambda runtime API, enough for one invocation: hands out `event` once, records when
    the first `next` request arrived and when the response came back."""

    daemon_threads = True

    def __init__(self, event: dict):
        super().__init__(("127.0.0.1", 0), Handler)
        self.event = event
        self.first_next: float | None = None
        self.done = threading.Event()
        self.handed_out = False
        self.result: tuple[str, bytes] | None = None


class Handler(http.server.BaseHTTPRequestHandler):
    server: FakeRuntime

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        if self.server.first_next is None:
            self.server.first_next = time.perf_counter()
        if self.server.handed_out:
            self.server.done.wait(30)  # park the worker after its one invocation
            time.sleep(30)
            return
        self.server.handed_out = True
        body = json.dumps(self.server.event).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Lambda-Runtime-Aws-Request-Id", str(uuid.uuid4()))
        self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 60_000))
        self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:bench")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        payload = self.rfile.read(length)
        self.server.result = (self.path.rsplit("/", 1)[-1], payload)
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()
        self.server.done.set()


def peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def one_run(worker: str, event: dict, env: dict) -> tuple[float, int, str]:
    runtime = FakeRuntime(event)
    threading.Thread(target=runtime.serve_forever, daemon=True).start()
    env = dict(env, AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{runtime.server_address[1]}")
    started = time.perf_counter()
    proc = subprocess.Popen([str(TARGET / worker)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not runtime.done.wait(60):
            raise RuntimeError(f"{worker}: no response within 60 s")
        init_ms = (runtime.first_next - started) * 1000
        peak = peak_kib(proc.pid)
        outcome = runtime.result[0] if runtime.result else "?"
        return init_ms, peak, outcome
    finally:
        proc.kill()
        proc.wait()
        runtime.shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    if not all((TARGET / w).exists() for w in WORKERS):
        subprocess.run(["cargo", "build", "--release", "--locked", "--bins"], cwd=ROOT, check=True)
    subprocess.run([str(ROOT / "scripts" / "ensure-postgres")], check=True)

    db = f"bench_workers_{os.getpid()}"
    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", db], check=True)
    try:
        env = dict(
            os.environ,
            DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{db}",
            STEPMIGRATE_MIGRATIONS_DIR=str(ROOT / "migrations"),
            SNS_TOPIC_ARN="arn:aws:sns:us-east-1:123456789012:bench",
            AWS_REGION="us-east-1",
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            # No AWS service here: notify's invocation fails fast against a closed port.
            AWS_ENDPOINT_URL="http://127.0.0.1:9",
            # What the Lambda service sets, and lambda_runtime requires.
            AWS_LAMBDA_FUNCTION_NAME="bench",
            AWS_LAMBDA_FUNCTION_VERSION="$LATEST",
            AWS_LAMBDA_FUNCTION_MEMORY_SIZE="256",
            AWS_LAMBDA_LOG_GROUP_NAME="/aws/lambda/bench",
            AWS_LAMBDA_LOG_STREAM_NAME="bench",
        )
        import hashlib

        files = sorted(p for p in (ROOT / "migrations").glob("[0-9]*.sql") if not p.name.endswith(".down.sql"))
        first = files[0]
        # The set digest the plan hands to apply-one: sha256 over "name:checksum\n" lines.
        digest = hashlib.sha256("".join(f"{p.stem}:{hashlib.sha256(p.read_bytes()).hexdigest()}\n"
                                        for p in files).encode()).hexdigest()
        item = {"first": "001", "last": "001", "name": first.stem}
        events = {
            "plan": {"input": {"action": "status"}, "execution": "arn:aws:states:us-east-1:1:execution:m:bench"},
            "apply-one": {"run_id": "bench", "set_digest": digest, "range": item},
            "record": {"run_id": "bench", "range": item, "error": {"Error": "SqlFailed", "Cause": "{}"}},
            "notify": {"execution": "arn:aws:states:us-east-1:1:execution:m:bench", "failure": {
                "run_id": "bench", "database": db, "version": "001", "name": first.stem, "error": "SqlFailed",
                "message": "bench", "recorded": True, "dirty": False}},
        }
        rows = []
        for worker in WORKERS:
            binary = TARGET / worker
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
                z.write(binary, "bootstrap")
            inits, peaks, outcomes = [], [], []
            for _ in range(args.runs):
                init_ms, peak, outcome = one_run(worker, events[worker], env)
                inits.append(init_ms)
                peaks.append(peak)
                outcomes.append(outcome)
            rows.append((worker, binary.stat().st_size, len(buf.getvalue()), statistics.median(inits), min(inits),
                         max(peaks), outcomes[-1]))
    finally:
        subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", db], check=False)

    mb = 1024 * 1024
    print(f"{'worker':<10} {'stripped MB':>11} {'zipped MB':>10} {'init ms (median)':>17} {'init ms (min)':>14} {'peak MB':>8}  invocation")
    for w, size, zipped, init_med, init_min, peak, outcome in rows:
        print(f"{w:<10} {size / mb:>11.2f} {zipped / mb:>10.2f} {init_med:>17.1f} {init_min:>14.1f} {peak / 1024:>8.1f}  {outcome}")
    print("\ntargets: zipped < 8 MB, init < 20 ms, peak < 40 MB")
    for w, size, zipped, init_med, init_min, peak, outcome in rows:
        verdict = lambda ok: "PASS" if ok else "MISS"
        print(f"  {w:<10} zipped {verdict(zipped < 8 * mb)}  init {verdict(init_med < 20)}  peak {verdict(peak / 1024 < 40)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
