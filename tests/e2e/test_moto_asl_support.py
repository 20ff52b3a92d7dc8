"""What moto's ASL interpreter (the engine of these tests) does with the features that the
stepmigrate definition uses, checked with a stub function. A moto upgrade that changes one of
these shows up here first, not as a puzzling failure of a scenario."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid

import pytest

import harness


@pytest.fixture(scope="module")
def fn(lambda_proxy, e2e_logs):
    """Two stub functions of this module's own stub, routed through the proxy, a name the stub
    does not serve (cargo lambda watch's 404), and a name routed to a closed port."""
    names = {k: f"asl-{k}-{uuid.uuid4().hex[:6]}" for k in ("a", "b", "dead", "missing")}
    proc, url = harness.start_stub_workers(e2e_logs / "asl_support_stub.log", [names["a"], names["b"]])
    harness.set_proxy_routes(lambda_proxy, {names["a"]: url, names["b"]: url, names["missing"]: url,
                                            names["dead"]: f"http://127.0.0.1:{harness.free_port()}"})
    try:
        yield {k: harness.function_arn(v) for k, v in names.items()} | {"url": url, "names": names}
    finally:
        for n in names.values():
            harness.delete_proxy_route(lambda_proxy, n)
        proc.stop()


def calls(fn) -> list[dict]:
    with urllib.request.urlopen(f"{fn['url']}/_stub/invocations", timeout=10) as r:
        return json.loads(r.read())


def run(sfn, definition: dict, input, fn, **kw) -> harness.Execution:
    arn = harness.create_state_machine(sfn, definition, {"A": fn["a"], "B": fn["b"], "Dead": fn["dead"],
                                                         "Missing": fn["missing"]})
    return harness.run_execution(sfn, arn, input, timeout=60, **kw)


def test_parameters_context_object_and_intrinsics(sfn, fn):
    definition = {
        "StartAt": "Call",
        "States": {
            "Call": {
                "Type": "Task",
                "Resource": "${A}",
                "Parameters": {
                    "execution_id.$": "$$.Execution.Id",
                    "execution_name.$": "$$.Execution.Name",
                    "execution_input.$": "$$.Execution.Input",
                    "start_time.$": "$$.Execution.StartTime",
                    "state_name.$": "$$.State.Name",
                    "state_machine_id.$": "$$.StateMachine.Id",
                    "action.$": "$.action",
                    "literal": {"nested": [1, 2]},
                    "formatted.$": "States.Format('run {} of {}', $.action, $$.Execution.Name)",
                    "as_json.$": "States.StringToJson($.json_text)",
                    "as_text.$": "States.JsonToString($.obj)",
                    "array.$": "States.Array($.action, 1)",
                    "length.$": "States.ArrayLength($.list)",
                    "merged.$": "States.JsonMerge($.obj, $.obj2, false)",
                    "uuid.$": "States.UUID()",
                },
                "ResultSelector": {"echo.$": "$.input", "fn.$": "$.function"},
                "ResultPath": "$.call",
                "OutputPath": "$.call",
                "End": True,
            }
        },
    }
    name = f"ctx-{uuid.uuid4().hex[:8]}"
    inp = {"action": "migrate", "json_text": '{"a": 1}', "obj": {"k": "v"}, "obj2": {"k2": 2}, "list": [1, 2, 3]}
    ex = run(sfn, definition, inp, fn, name=name)
    assert ex.status == "SUCCEEDED", ex.dump()
    got = ex.output
    assert got["fn"] == fn["names"]["a"]
    echo = got["echo"]
    assert echo["execution_id"] == ex.arn
    assert echo["execution_name"] == name
    assert echo["execution_input"] == inp
    assert echo["start_time"]  # an ISO timestamp
    assert echo["state_name"] == "Call"
    assert echo["state_machine_id"] == ex.description["stateMachineArn"]
    assert echo["action"] == "migrate"
    assert echo["literal"] == {"nested": [1, 2]}
    assert echo["formatted"] == f"run migrate of {name}"
    assert echo["as_json"] == {"a": 1}
    assert json.loads(echo["as_text"]) == {"k": "v"}
    assert echo["array"] == ["migrate", 1]
    assert echo["length"] == 3
    assert echo["merged"] == {"k": "v", "k2": 2}
    assert len(echo["uuid"]) == 36


def test_map_items_path_item_selector_max_concurrency(sfn, fn):
    definition = {
        "StartAt": "Each",
        "States": {
            "Each": {
                "Type": "Map",
                "ItemsPath": "$.plan.pending",
                "ItemSelector": {
                    "migration.$": "$$.Map.Item.Value",
                    "index.$": "$$.Map.Item.Index",
                    "run_id.$": "$.plan.run_id",
                    "execution.$": "$$.Execution.Id",
                },
                "MaxConcurrency": 1,
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "INLINE"},
                    "StartAt": "Apply",
                    "States": {
                        "Apply": {"Type": "Task", "Resource": "${A}", "ResultSelector": {"in.$": "$.input"},
                                  "ResultPath": "$.applied", "Next": "Record"},
                        "Record": {"Type": "Task", "Resource": "${B}", "OutputPath": "$.input", "End": True},
                    },
                },
                "ResultPath": "$.results",
                "Next": "Done",
            },
            "Done": {"Type": "Succeed"},
        },
    }
    pending = [{"version": f"00{i}", "sleep": 0.2} for i in range(1, 4)]
    ex = run(sfn, definition, {"plan": {"run_id": "r1", "pending": pending}}, fn)
    assert ex.status == "SUCCEEDED", ex.dump()
    results = ex.output["results"]
    assert [r["migration"]["version"] for r in results] == ["001", "002", "003"]
    assert [r["index"] for r in results] == [0, 1, 2]
    assert {r["run_id"] for r in results} == {"r1"}
    assert results[0]["applied"]["in"]["migration"]["version"] == "001"
    assert results[0]["execution"] == ex.arn
    mine = [c for c in calls(fn) if isinstance(c["input"], dict) and c["input"].get("run_id") == "r1"]
    assert len(mine) == 6
    for before, after in zip(mine, mine[1:]):  # strictly one at a time
        assert before["end"] <= after["start"]
    assert ex.events_of("MapStateStarted") and ex.events_of("MapIterationSucceeded")


def test_retry_with_jitter_and_max_delay_then_catch(sfn, fn):
    key = uuid.uuid4().hex
    definition = {
        "StartAt": "Call",
        "States": {
            "Call": {
                "Type": "Task",
                "Resource": "${A}",
                "Retry": [
                    {"ErrorEquals": ["LockTimeout", "ConnectionFailed"], "IntervalSeconds": 1,
                     "BackoffRate": 2.0, "MaxAttempts": 2, "MaxDelaySeconds": 1, "JitterStrategy": "FULL"},
                ],
                "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Caught"}],
                "End": True,
            },
            "Caught": {"Type": "Pass", "End": True},
        },
    }
    # Two LockTimeouts then success: retried, succeeds.
    t0 = time.monotonic()
    ex = run(sfn, definition, {"fail_times": 2, "key": key, "fail": "LockTimeout"}, fn)
    assert ex.status == "SUCCEEDED", ex.dump()
    assert len(ex.events_of("LambdaFunctionFailed")) == 2
    assert len(ex.events_of("LambdaFunctionSucceeded")) == 1
    assert "error" not in ex.output
    assert time.monotonic() - t0 < 10  # MaxDelaySeconds caps the (real) waits

    # Three LockTimeouts: retries exhausted after 2, then caught.
    ex = run(sfn, definition, {"fail_times": 3, "key": key + "x", "fail": "LockTimeout"}, fn)
    assert ex.status == "SUCCEEDED", ex.dump()
    assert len(ex.events_of("LambdaFunctionFailed")) == 3
    assert ex.output["error"]["Error"] == "LockTimeout"

    # SqlFailed is not retried.
    ex = run(sfn, definition, {"fail": "SqlFailed", "errorMessage": "boom"}, fn)
    assert len(ex.events_of("LambdaFunctionFailed")) == 1
    assert ex.output["error"] == {"Error": "SqlFailed",
                                  "Cause": json.dumps({"errorType": "SqlFailed", "errorMessage": "boom"},
                                                      separators=(",", ":"))}


def test_choice_and_fail_with_error_path_and_cause_path(sfn, fn):
    definition = {
        "StartAt": "Route",
        "States": {
            "Route": {
                "Type": "Choice",
                "Choices": [
                    {"Variable": "$.action", "StringEquals": "status", "Next": "Ok"},
                    {"And": [{"Variable": "$.action", "StringEquals": "migrate"},
                             {"Or": [{"Not": {"Variable": "$.dry_run", "IsPresent": True}},
                                     {"Variable": "$.dry_run", "BooleanEquals": False}]}],
                     "Next": "Ok"},
                ],
                "Default": "BadInput",
            },
            "Ok": {"Type": "Succeed"},
            "BadInput": {
                "Type": "Fail",
                "ErrorPath": "States.Format('{}', 'InvalidInput')",
                "CausePath": "States.Format('unknown action {}: accepted: status, migrate', $.action)",
            },
        },
    }
    assert run(sfn, definition, {"action": "status"}, fn).status == "SUCCEEDED"
    assert run(sfn, definition, {"action": "migrate"}, fn).status == "SUCCEEDED"
    ex = run(sfn, definition, {"action": "drop"}, fn)
    assert ex.status == "FAILED", ex.dump()
    assert (ex.error, ex.cause) == ("InvalidInput", "unknown action drop: accepted: status, migrate")


def test_map_failure_error_and_cause_reach_the_catch(sfn, fn):
    definition = {
        "StartAt": "Each",
        "States": {
            "Each": {
                "Type": "Map",
                "ItemsPath": "$.items",
                "MaxConcurrency": 1,
                "ItemProcessor": {"ProcessorConfig": {"Mode": "INLINE"}, "StartAt": "Apply",
                                  "States": {"Apply": {"Type": "Task", "Resource": "${A}", "End": True}}},
                "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.failure", "Next": "Notify"}],
                "End": True,
            },
            "Notify": {
                "Type": "Task",
                "Resource": "${B}",
                "Parameters": {"error.$": "$.failure.Error", "cause.$": "States.StringToJson($.failure.Cause)"},
                "ResultPath": None,  # null: discard the result
                "Next": "Fail",
            },
            "Fail": {"Type": "Fail", "ErrorPath": "$.failure.Error", "CausePath": "$.failure.Cause"},
        },
    }
    ex = run(sfn, definition, {"items": [{"v": 1}, {"v": 2, "fail": {"errorType": "ChecksumMismatch",
                                                                      "errorMessage": "002 changed"}}]}, fn)
    assert ex.status == "FAILED", ex.dump()
    assert ex.error == "ChecksumMismatch"
    assert json.loads(ex.cause) == {"errorType": "ChecksumMismatch", "errorMessage": "002 changed"}
    notify = [c for c in calls(fn) if isinstance(c["input"], dict) and c["input"].get("error") == "ChecksumMismatch"]
    assert notify and notify[-1]["input"]["cause"]["errorMessage"] == "002 changed"


def test_lambda_service_failure_error_names(sfn, fn):
    """The workers unreachable: the Task fails with Lambda.ServiceException, for a bare function
    ARN (moto alone would say "Exception": the proxy answers with a function error of that name)
    and for the arn:aws:states:::lambda:invoke integration."""
    catch = [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Caught"}]
    bare = {"StartAt": "Call", "States": {
        "Call": {"Type": "Task", "Resource": "${Dead}", "Catch": catch, "End": True},
        "Caught": {"Type": "Pass", "End": True}}}
    ex = run(sfn, bare, {}, fn)
    assert ex.output["error"]["Error"] == "Lambda.ServiceException", ex.dump()

    integration = {"StartAt": "Call", "States": {
        "Call": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
                 "Parameters": {"FunctionName": "${Dead}", "Payload.$": "$"}, "Catch": catch, "End": True},
        "Caught": {"Type": "Pass", "End": True}}}
    ex = run(sfn, integration, {}, fn)
    assert ex.output["error"]["Error"] == "Lambda.ServiceException", ex.dump()

    # No such function (cargo lambda watch: no binary of that name).
    integration["States"]["Call"]["Parameters"]["FunctionName"] = "${Missing}"
    ex = run(sfn, integration, {}, fn)
    assert ex.output["error"]["Error"] == "Lambda.ResourceNotFoundException", ex.dump()
    bare["States"]["Call"]["Resource"] = "${Missing}"
    ex = run(sfn, bare, {}, fn)
    assert ex.output["error"]["Error"] == "Exception", ex.dump()  # moto's name for any failed call

    # ... and a function error through the integration: errorType, Payload in the output.
    integration["States"]["Call"]["Parameters"]["FunctionName"] = "${A}"
    ex = run(sfn, integration, {"fail": "SqlFailed"}, fn)
    assert ex.output["error"]["Error"] == "SqlFailed", ex.dump()
    ex = run(sfn, integration, {"result": {"ok": 1}}, fn)
    assert ex.output["Payload"] == {"ok": 1}, ex.dump()
    assert ex.output["StatusCode"] == 200


def test_sns_publish_integration(sfn, fn, sns, sqs, sns_topic_arn):
    alerts = harness.Alerts.subscribe(sns, sqs, sns_topic_arn)
    try:
        definition = {"StartAt": "Publish", "States": {"Publish": {
            "Type": "Task", "Resource": "arn:aws:states:::sns:publish",
            "Parameters": {"TopicArn": sns_topic_arn, "Subject": "stepmigrate",
                           "Message.$": "States.Format('migration {} failed', $.version)"},
            "End": True}}}
        ex = run(sfn, definition, {"version": "002"}, fn)
        assert ex.status == "SUCCEEDED", ex.dump()
        assert [m["body"] for m in alerts.messages(expect=1)] == ["migration 002 failed"]
    finally:
        alerts.close()


def test_task_timeout_seconds(sfn, fn):
    definition = {"StartAt": "Call", "States": {
        "Call": {"Type": "Task", "Resource": "${A}", "TimeoutSeconds": 1,
                 "Catch": [{"ErrorEquals": ["States.Timeout"], "ResultPath": "$.error", "Next": "Caught"}],
                 "End": True},
        "Caught": {"Type": "Pass", "End": True}}}
    ex = run(sfn, definition, {"sleep": 3}, fn)
    assert ex.status == "SUCCEEDED", ex.dump()
    assert ex.output["error"]["Error"] == "States.Timeout"


def test_idempotent_start_by_name_and_tracing_logging_config(sfn, fn):
    definition = {"StartAt": "Call", "States": {"Call": {"Type": "Task", "Resource": "${A}", "End": True}}}
    arn = harness.create_state_machine(
        sfn, definition, {"A": fn["a"]},
        tracingConfiguration={"enabled": True},
        loggingConfiguration={"level": "ALL", "includeExecutionData": True, "destinations": [
            {"cloudWatchLogsLogGroup": {"logGroupArn": f"arn:aws:logs:us-east-1:{harness.ACCOUNT}:log-group:sm:*"}}]},
    )
    name = f"idem-{uuid.uuid4().hex[:8]}"
    inp = json.dumps({"sleep": 1})
    first = sfn.start_execution(stateMachineArn=arn, name=name, input=inp)["executionArn"]
    again = sfn.start_execution(stateMachineArn=arn, name=name, input=inp)["executionArn"]
    assert first == again  # same name and input while RUNNING: the same execution
    with pytest.raises(sfn.exceptions.ExecutionAlreadyExists):
        sfn.start_execution(stateMachineArn=arn, name=name, input=json.dumps({"other": 1}))
