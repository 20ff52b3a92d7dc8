"""Static checks of statemachine/stepmigrate.asl.json against what the real service does, read
from the JSON (no server): retries of the errors Lambda raises before or around an invocation,
the Notify task never retried on its own errors (a retry would publish the alert again), the
Map's iterations returning nothing, and no empty database name handed to notify."""

from __future__ import annotations

import json
from typing import Any, Iterator

import harness

#: Lambda's errors that Step Functions recommends retrying, plus the ones the real service raises
#: for an idle VPC function (Inactive until it is invoked again: ResourceNotReady, for minutes),
#: for a function that is Pending (just created or updated by a deploy, or an Inactive one being
#: brought back: "Lambda does not invoke a function during pending state. Any invocations ...
#: will fail", https://docs.aws.amazon.com/lambda/latest/dg/functions-states.html; Invoke's
#: ResourceConflictException, "another operation is in progress") and for a slow invocation
#: (ClientExecutionTimeout). Step Functions names them `Lambda.<exception>`
#: (https://docs.aws.amazon.com/step-functions/latest/dg/bp-lambda-serviceexception.html).
LAMBDA_SERVICE_ERRORS = {
    "Lambda.ServiceException", "Lambda.AWSLambdaException", "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException", "Lambda.ResourceNotReadyException",
    "Lambda.ResourceConflictException", "Lambda.ClientExecutionTimeoutException",
}
#: What `ecs:runTask.sync` raises when ECS refuses to start the task: a RunTask that returns
#: failures (no capacity in the zone, ...) fails the state with `AmazonECS.Unknown`
#: (https://docs.aws.amazon.com/step-functions/latest/dg/connect-ecs.html, "If a non-empty
#: Failures field is encountered, the task is failed with an AmazonECS.Unknown error"); an error
#: of the RunTask call itself (throttling; "Capacity is unavailable at this time") is
#: `ECS.AmazonECSException` (https://repost.aws/knowledge-center/ecs-fargate-runtask-capacity:
#: "Step Functions records ECS.AmazonECSException in its ErrorEquals field").
ECS_START_ERRORS = {"ECS.AmazonECSException", "AmazonECS.Unknown"}
#: Capacity comes back in minutes: retry for at least five.
MIN_ECS_RETRY_SECONDS = 300
#: The longest any Task state may take: a Task with no TimeoutSeconds waits up to the execution's
#: year (https://docs.aws.amazon.com/step-functions/latest/dg/sfn-stuck-execution.html). ApplyTask
#: (a long migration's ECS task) has the longest: 12 h.
MAX_TASK_SECONDS = 12 * 3600
#: The longest a Wait state may wait (BatchWait: the worker's STEPMIGRATE_BATCH_WAIT, which the
#: worker refuses past 15 minutes: `lambda::env`, batch_settings_from).
MAX_WAIT_SECONDS = 15 * 60
#: Lambda needs minutes to bring an Inactive function back: retry for at least two.
MIN_LAMBDA_RETRY_SECONDS = 120


def definition() -> dict[str, Any]:
    return json.loads(harness.DEFINITION.read_text())


def asl_files() -> list[Any]:
    """Every Amazon States Language file of the repository (the definition, and any other)."""
    root = harness.DEFINITION.parents[1]
    found = sorted(p for p in root.rglob("*.asl.json")
                   if not any(part in {"node_modules", ".venv", "target", "cdk.out"} for part in p.parts))
    assert harness.DEFINITION in found, found
    return found


def states(states_map: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every state, those of Map iterations and Parallel branches included."""
    for name, state in states_map.items():
        yield name, state
        if "ItemProcessor" in state or "Iterator" in state:
            yield from states((state.get("ItemProcessor") or state["Iterator"])["States"])
        for branch in state.get("Branches", []):
            yield from states(branch["States"])


def lambda_tasks() -> dict[str, dict[str, Any]]:
    tasks = {name: s for name, s in states(definition()["States"])
             if s["Type"] == "Task" and "FunctionArn}" in s["Resource"]}
    assert set(tasks) >= {"Plan", "ApplyOne", "ApplyBatch", "Record", "NotifyFailure", "NotifyPlanFailure", "RevertOne",
                          "RecordRevertFailure", "NotifyRevertFailure"}, tasks
    return tasks


def retry_delays(retrier: dict[str, Any]) -> list[float]:
    """The waits before each retry as the service computes them (without jitter)."""
    interval = retrier.get("IntervalSeconds", 1)
    rate = retrier.get("BackoffRate", 2.0)
    cap = retrier.get("MaxDelaySeconds")
    delays = [interval * rate ** i for i in range(retrier.get("MaxAttempts", 3))]
    return [min(d, cap) if cap else d for d in delays]


def test_every_lambda_task_retries_lambdas_own_errors_for_at_least_two_minutes():
    for name, task in lambda_tasks().items():
        # The first retrier whose ErrorEquals names the error is the one that applies.
        for error in sorted(LAMBDA_SERVICE_ERRORS):
            retrier = next((r for r in task.get("Retry", [])
                            if error in r["ErrorEquals"] or "States.ALL" in r["ErrorEquals"]), None)
            assert retrier is not None, f"{name} does not retry {error}"
            total = sum(retry_delays(retrier))
            assert total >= MIN_LAMBDA_RETRY_SECONDS, (
                f"{name} retries {error} for {total:.0f} s at most, less than {MIN_LAMBDA_RETRY_SECONDS} s")
            # FULL jitter waits a random part of each delay: the minimum would be ~0.
            assert retrier.get("JitterStrategy", "NONE") == "NONE", (name, error, retrier)


def test_notify_is_retried_only_on_lambdas_errors_never_its_own():
    for name in ("NotifyFailure", "NotifyPlanFailure", "NotifyRevertFailure"):
        task = lambda_tasks()[name]
        retried = {e for r in task.get("Retry", []) for e in r["ErrorEquals"]}
        assert retried <= LAMBDA_SERVICE_ERRORS, (
            f"{name} retries {sorted(retried - LAMBDA_SERVICE_ERRORS)}: a retry after the alert was "
            "published publishes it again")


def test_map_iterations_return_nothing_the_definition_does_not_need():
    """The Map collects every iteration's output; ApplyOne (BatchApplied for a batch migration,
    TaskOutcome for one run as an ECS task) ends the iteration on success, and with `ResultPath: null` alone its output is its whole
    input (~400 bytes a item, 1 MB at 2,500 items: past the 256 KB payload limit, an error no
    Catch sees)."""
    for map_state, enders in (("ApplyEach", {"ApplyOne", "BatchApplied", "TaskOutcome"}), ("RevertEach", {"RevertOne"})):
        processor = definition()["States"][map_state]["ItemProcessor"]["States"]
        ends = {name: s for name, s in processor.items()
                if (s.get("End") or s["Type"] == "Succeed") and s["Type"] != "Fail"}
        assert set(ends) == enders, ends
        for name in enders:
            assert "OutputPath" in ends[name] and ends[name]["OutputPath"] is None, ends[name]


def test_a_batch_migration_loops_retried_and_caught_like_an_apply():
    """ApplyBatch is ApplyOne's worker, retries and catch; only a batch item reaches it."""
    processor = definition()["States"]["ApplyEach"]["ItemProcessor"]
    assert processor["StartAt"] == "Batch?"
    states_ = processor["States"]
    apply_one, apply_batch = lambda_tasks()["ApplyOne"], lambda_tasks()["ApplyBatch"]
    assert apply_batch["Retry"] == apply_one["Retry"] and apply_batch["Catch"] == apply_one["Catch"]
    assert apply_batch["Resource"] == apply_one["Resource"]
    retried = {e for r in apply_batch["Retry"] for e in r["ErrorEquals"]}
    assert not retried & {"BatchStalled", "BatchLoopLimit", "SqlFailed"}, retried
    assert apply_batch["ResultPath"] == "$.batch" and apply_batch["Next"] == "BatchDone?"
    assert states_["BatchDone?"]["Choices"] == [
        {"Variable": "$.batch.continue_execution", "BooleanEquals": True, "Next": "ContinueInNewExecution"},
        {"Variable": "$.batch.done", "BooleanEquals": False, "Next": "BatchWait"}]
    assert states_["BatchWait"]["Next"] == "ApplyBatch"


def test_state_names_are_unique_across_the_definition():
    """Step Functions requires it (a Map's states included); the CDK construct's timeout check
    also looks states up by name."""
    names = [name for name, _ in states(definition()["States"])]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


def test_a_revert_is_retried_like_an_apply_and_never_on_a_failed_down():
    apply_one, revert_one = lambda_tasks()["ApplyOne"], lambda_tasks()["RevertOne"]
    assert revert_one["Retry"] == apply_one["Retry"]
    assert revert_one["Resource"] == apply_one["Resource"], "the apply-one worker reverts too"
    assert "SqlFailed" not in {e for r in revert_one["Retry"] for e in r["ErrorEquals"]}
    revert_each = definition()["States"]["RevertEach"]
    assert revert_each["MaxConcurrency"] == 1 and revert_each["ItemsPath"] == "$.plan.pending"


def test_no_state_hands_notify_an_empty_database_name():
    """An empty `Database` dimension makes PutMetricData fail; notify fills the name from its
    DB_NAME when the failure has none."""
    for name, state in states(definition()["States"]):
        params = state.get("Parameters") or {}
        assert params.get("database", "x") != "", f"{name} sets database to an empty string"


def test_every_task_has_a_bounded_timeout_and_every_wait_a_bounded_wait():
    """Timeouts nest, state > Lambda > database: the CDK construct checks each Lambda Task's
    TimeoutSeconds against its function's timeout, and ApplyTask's against the task's statement
    timeout (infrastructure/tests/test_real_service.py); here, that none is missing or unbounded,
    in every ASL file. No HeartbeatSeconds: neither a Lambda invocation nor `ecs:runTask.sync`
    sends heartbeats."""
    for path in asl_files():
        for name, state in states(json.loads(path.read_text())["States"]):
            if state["Type"] == "Task":
                seconds = state.get("TimeoutSeconds")
                assert isinstance(seconds, int) and 0 < seconds <= MAX_TASK_SECONDS, (path.name, name, seconds)
                assert "TimeoutSecondsPath" not in state and "HeartbeatSeconds" not in state, (path.name, name)
            if state["Type"] == "Wait":
                assert not {"Timestamp", "TimestampPath"} & set(state), (path.name, name)
                if "Seconds" in state:
                    assert state["Seconds"] <= MAX_WAIT_SECONDS, (path.name, name)
                else:
                    # The only path a Wait reads: apply-one's wait_seconds, bounded by the worker.
                    assert state["SecondsPath"] == "$.batch.wait_seconds", (path.name, name)


def test_the_task_route_retries_ecs_refusals_for_minutes():
    apply_task = dict(states(definition()["States"]))["ApplyTask"]
    for error in sorted(ECS_START_ERRORS):
        retrier = next((r for r in apply_task["Retry"] if error in r["ErrorEquals"]), None)
        assert retrier is not None, f"ApplyTask does not retry {error}"
        assert retrier.get("JitterStrategy", "NONE") == "NONE", retrier
        assert sum(retry_delays(retrier)) >= MIN_ECS_RETRY_SECONDS, retrier


def test_a_batch_loop_past_its_history_share_continues_in_a_new_execution():
    """An execution holds at most 25,000 history events
    (https://docs.aws.amazon.com/step-functions/latest/dg/service-quotas.html): a batch migration
    that used its share (`max_invocations`) ends the Map with BatchContinues, which the Map
    catches to start the same migrate again (`states:startExecution`, the plan's
    `continuation`) and succeed: a backfill of any length ends on its own."""
    d = definition()
    apply_batch = lambda_tasks()["ApplyBatch"]
    assert apply_batch["ResultSelector"]["continue_execution.$"] == "$.continue_execution"
    processor = d["States"]["ApplyEach"]["ItemProcessor"]["States"]
    assert processor["ContinueInNewExecution"] == {**processor["ContinueInNewExecution"], "Type": "Fail",
                                                   "Error": "BatchContinues"}
    (catch,) = d["States"]["ApplyEach"]["Catch"]
    assert catch["ErrorEquals"] == ["BatchContinues"] and catch["Next"] == "StartContinuation"
    start = d["States"]["StartContinuation"]
    assert start["Resource"] == "arn:aws:states:::states:startExecution"
    assert start["Parameters"] == {"StateMachineArn.$": "$.plan.continuation.state_machine",
                                   "Name.$": "$.plan.continuation.name",
                                   "Input.$": "$.plan.continuation.input"}
    assert start["Next"] == "Continued" and d["States"]["Continued"]["End"] is True
    assert start["Catch"][0]["Next"] == "ReportContinuationFailure"
    # Nothing in the definition raises BatchLoopLimit any more: the worker continues instead.
    assert "BatchLoopLimit" not in json.dumps(d["States"]["ApplyEach"]["Catch"])
