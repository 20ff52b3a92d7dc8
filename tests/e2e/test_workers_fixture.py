"""The `workers` fixture: whatever serves the functions (cargo lambda watch or the command in
STEPMIGRATE_E2E_WORKERS_CMD) is up behind the proxy and answers as cargo lambda watch does."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import harness


def test_workers_answer_invokes_through_the_proxy(e2e_workers, fresh_database, aws_endpoint):
    assert e2e_workers.env["DATABASE_URL"] == fresh_database.url
    # The functions inherit the environment of the workers process (cargo lambda watch adds
    # only its AWS_LAMBDA_* variables): it is the one the session built, with this test's database.
    environ = dict(
        kv.split("=", 1)
        for kv in open(f"/proc/{e2e_workers.process.proc.pid}/environ").read().split("\0") if "=" in kv
    )
    for key in ("DATABASE_URL", "SNS_TOPIC_ARN", "AWS_ENDPOINT_URL", "STEPMIGRATE_MIGRATIONS_DIR"):
        assert environ[key] == e2e_workers.env[key], key
    assert environ["DATABASE_URL"] == fresh_database.url
    # A name no Cargo binary can have: cargo lambda watch answers 404 "Missing function"; the
    # proxy passes that through.
    arn = harness.function_arn("e2e.no-such-function")
    req = urllib.request.Request(f"{aws_endpoint}/2015-03-31/functions/{arn}/invocations",
                                 data=b"{}", method="POST", headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=60)
        raise AssertionError("an unknown function was invoked")
    except urllib.error.HTTPError as e:
        assert e.code == 404
        assert json.loads(e.read())["title"] == "Missing function"
