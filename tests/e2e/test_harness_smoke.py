"""The harness itself, proven with a stand-in function: moto runs ASL, calls Lambda through the
proxy, the proxy strips the ARN and mends cargo-lambda-style errors, and a Catch on the
function's errorType matches. Independent of the `workers` fixture: it serves its functions
from a stub_workers.py of its own, routed by name in the proxy, so it always runs."""

from __future__ import annotations

import json
import urllib.request
import uuid

import pytest

import harness

SMOKE_DEFINITION = {
    "Comment": "harness smoke test: a Map (MaxConcurrency 1) of a Task with a Catch on SqlFailed",
    "StartAt": "Each",
    "States": {
        "Each": {
            "Type": "Map",
            "ItemsPath": "$.items",
            "MaxConcurrency": 1,
            "ItemProcessor": {
                "ProcessorConfig": {"Mode": "INLINE"},
                "StartAt": "Apply",
                "States": {"Apply": {"Type": "Task", "Resource": "${FnArn}", "End": True}},
            },
            "ResultPath": "$.results",
            "Catch": [{"ErrorEquals": ["SqlFailed"], "ResultPath": "$.error", "Next": "Failed"}],
            "Next": "Done",
        },
        "Done": {"Type": "Succeed"},
        "Failed": {"Type": "Fail", "Error": "MigrationFailed", "Cause": "a migration failed"},
    },
}


@pytest.fixture(scope="module")
def stub(lambda_proxy, e2e_logs):
    """A stub of our own, serving one uniquely named function through the proxy."""
    fn = f"smoke-apply-{uuid.uuid4().hex[:8]}"
    proc, url = harness.start_stub_workers(e2e_logs / "smoke_stub.log", functions=[fn])
    harness.set_proxy_routes(lambda_proxy, {fn: url})
    try:
        yield {"function": fn, "url": url}
    finally:
        try:
            harness.delete_proxy_route(lambda_proxy, fn)
        finally:
            proc.stop()


def stub_invocations(stub) -> list[dict]:
    with urllib.request.urlopen(f"{stub['url']}/_stub/invocations", timeout=10) as r:
        return json.loads(r.read())


def clear_invocations(stub) -> None:
    req = urllib.request.Request(f"{stub['url']}/_stub/invocations", method="DELETE")
    urllib.request.urlopen(req, timeout=10).read()


@pytest.fixture(scope="module")
def smoke_sm(sfn, stub):
    return harness.create_state_machine(sfn, SMOKE_DEFINITION, {"FnArn": harness.function_arn(stub["function"])})


def test_execution_succeeds_with_the_functions_output(sfn, stub, smoke_sm):
    clear_invocations(stub)
    items = [{"result": {"version": "001", "applied": True}}, {"version": "002"}]
    ex = harness.run_execution(sfn, smoke_sm, {"items": items}, timeout=60)

    assert ex.status == "SUCCEEDED", ex.dump()
    assert ex.output["results"] == [
        {"version": "001", "applied": True},
        {"function": stub["function"], "input": {"version": "002"}},
    ]
    # The stub saw the bare name (a full ARN would have been a 404 "Missing function").
    calls = stub_invocations(stub)
    assert [c["function"] for c in calls] == [stub["function"]] * 2
    assert [c["input"] for c in calls] == items
    scheduled = ex.details("LambdaFunctionScheduled")
    assert [d["resource"] for d in scheduled] == [harness.function_arn(stub["function"])] * 2


def test_catch_matches_the_functions_error_type_and_nothing_after_runs(sfn, stub, smoke_sm):
    clear_invocations(stub)
    items = [
        {"version": "001"},
        {"version": "002", "fail": "SqlFailed", "errorMessage": 'relation "users" already exists'},
        {"version": "003"},
    ]
    ex = harness.run_execution(sfn, smoke_sm, {"items": items}, timeout=60)

    assert ex.status == "FAILED", ex.dump()
    assert (ex.error, ex.cause) == ("MigrationFailed", "a migration failed")

    failed = ex.details("LambdaFunctionFailed")
    assert len(failed) == 1, ex.dump()
    assert failed[0]["error"] == "SqlFailed"
    cause = json.loads(failed[0]["cause"])
    assert cause == {"errorType": "SqlFailed", "errorMessage": 'relation "users" already exists'}

    # The Catch matched: the Fail state was entered with the error at $.error.
    entered = [e for e in ex.events_of("FailStateEntered")]
    assert len(entered) == 1, ex.event_types()
    fail_input = json.loads(entered[0]["stateEnteredEventDetails"]["input"])
    assert fail_input["error"]["Error"] == "SqlFailed"
    assert 'relation \\"users\\" already exists' in fail_input["error"]["Cause"]

    # MaxConcurrency 1: item 003 never ran after 002 failed, and no two calls overlapped.
    calls = stub_invocations(stub)
    assert [c["input"]["version"] for c in calls] == ["001", "002"]
    assert calls[0]["end"] <= calls[1]["start"]


def test_proxy_passes_other_services_through(sns, sqs, sns_topic_arn):
    """SNS -> SQS with raw delivery through the proxy, read with the alerts helper."""
    a = harness.Alerts.subscribe(sns, sqs, sns_topic_arn)
    try:
        sns.publish(TopicArn=sns_topic_arn, Message=json.dumps({"hello": "world"}), Subject="s",
                    MessageAttributes={"kind": {"DataType": "String", "StringValue": "smoke"}})
        msgs = a.messages(expect=1, timeout=10)
        assert [m["json"] for m in msgs] == [{"hello": "world"}]
        assert msgs[0]["attributes"]["kind"]["StringValue"] == "smoke"
    finally:
        a.close()
