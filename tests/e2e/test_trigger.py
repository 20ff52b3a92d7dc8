"""The deploy-time trigger (the `trigger` worker, the CDK Provider's onEvent and isComplete
functions) against moto's Step Functions and CloudFormation APIs, starting the real state
machine definition whose tasks are the real workers, on a real PostgreSQL; and
`stepmigrate remote` following the same executions.

CloudFormation's requests are built here the way the Provider framework hands them on
(https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/crpg-ref-requests.html):
onEvent gets the request; isComplete gets it plus what onEvent returned."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

import harness
from test_migrations import (  # noqa: F401 - migrations_dir is a fixture
    DEFINITION, FUNCTIONS, REPO_MIGRATIONS, applied_events, ledger, migrations_dir, use_migrations, write)

#: The trigger's execution input (trigger::EXECUTION_INPUT): the deploy's own run.
DEPLOY_INPUT = {"action": "migrate", "skip_after_deploy": True, "source": "cdk"}
#: What the construct's after-deploy rule starts once the deploy completed
#: (stepmigrate_cdk.AFTER_DEPLOY_INPUT; its target is asserted in infrastructure/tests).
AFTER_DEPLOY_INPUT = {"action": "migrate", "source": "after-deploy"}
STACK_TEMPLATE = json.dumps({"Resources": {"Queue": {"Type": "AWS::SQS::Queue"}}})
CLI = harness.BIN_DIR / "stepmigrate"


@pytest.fixture(scope="session")
def completion_workers(workers_env, e2e_logs, workers):
    """A second set of workers whose trigger is the isComplete function (a Lambda function's
    environment is fixed, and the Provider runs the two roles as two functions)."""
    w = harness.Workers({**workers_env, "STEPMIGRATE_TRIGGER_HANDLER": "is_complete"},
                        e2e_logs / "completion_workers.log")
    w.prebuilt = workers.prebuilt
    try:
        yield w.ensure()
    finally:
        w.stop()


@pytest.fixture
def state_machine(create_state_machine):
    return create_state_machine(DEFINITION, FUNCTIONS, name=f"migrations-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def stack_id(aws_endpoint):
    cfn = harness.client("cloudformation", aws_endpoint)
    name = f"BackendStack-e2e-{uuid.uuid4().hex[:6]}"
    return cfn.create_stack(StackName=name, TemplateBody=STACK_TEMPLATE)["StackId"]


def invoke(workers, event: dict) -> tuple[bool, dict]:
    """Invokes the `trigger` function of a set of workers: (succeeded, response or error)."""
    req = urllib.request.Request(f"{workers.url}/2015-03-31/functions/trigger/invocations",
                                 data=json.dumps(event).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return True, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        return False, json.loads(e.read() or b"{}")


def request(kind: str, stack_id: str, sm_arn: str, set_hash: str, request_id: str | None = None,
            physical_id: str | None = None, old: dict | None = None) -> dict:
    event = {
        "RequestType": kind,
        "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:provider-framework-onEvent",
        "ResponseURL": "https://cloudformation-custom-resource-response.invalid/",
        "StackId": stack_id,
        "RequestId": request_id or str(uuid.uuid4()),
        "LogicalResourceId": "StepMigrateMigrationsApplied5B1C2D",
        "ResourceType": "Custom::StepMigrateMigrations",
        "ResourceProperties": {"ServiceToken": "arn:aws:lambda:...", "StateMachineArn": sm_arn,
                               "MigrationSetHash": set_hash},
    }
    if physical_id:
        event["PhysicalResourceId"] = physical_id
    if old is not None:
        event["OldResourceProperties"] = old
    return event


def wait_complete(completion_workers, event: dict, on_event_response: dict, timeout: float = 180) -> tuple[bool, dict]:
    """Polls isComplete as the Provider's waiter does, until it is complete or fails."""
    polled = {**event, **on_event_response}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ok, answer = invoke(completion_workers, polled)
        if not ok or answer.get("IsComplete"):
            return ok, answer
        assert "Data" not in answer, "Data is only allowed once complete"
        time.sleep(0.5)
    raise TimeoutError(f"isComplete never completed for {on_event_response}")


def executions_of(sfn, sm_arn: str) -> list[dict]:
    return sfn.list_executions(stateMachineArn=sm_arn)["executions"]


def test_create_delivered_twice_starts_one_execution_that_completes(e2e_workers, completion_workers, fresh_database,
                                                                   state_machine, stack_id, sfn):
    event = request("Create", stack_id, state_machine, "9f86d081884c7d659a2f")
    ok, first = invoke(e2e_workers, event)
    assert ok, first
    ok, again = invoke(e2e_workers, event)  # CloudFormation or Lambda delivering it again
    assert ok, again
    assert again == first
    assert first["PhysicalResourceId"].startswith("stepmigrate:BackendStack-e2e-")
    arn = first["Data"]["ExecutionArn"]
    assert len(executions_of(sfn, state_machine)) == 1

    ok, done = wait_complete(completion_workers, event, first)
    assert ok, done
    assert done == {"IsComplete": True, "Data": {"ExecutionArn": arn, "AppliedCount": str(len(REPO_MIGRATIONS)),
                                                 "DeferredCount": "0"}}
    assert applied_events(fresh_database) == [n[:3] for n in REPO_MIGRATIONS]
    assert sfn.describe_execution(executionArn=arn)["input"] and json.loads(
        sfn.describe_execution(executionArn=arn)["input"]) == DEPLOY_INPUT

    # A late third delivery, after the execution closed: still that one execution.
    ok, late = invoke(e2e_workers, event)
    assert ok, late
    assert late["Data"]["ExecutionArn"] == arn
    assert len(executions_of(sfn, state_machine)) == 1

    # The next deploy is a new request: a new run, which finds nothing to do.
    update = request("Update", stack_id, state_machine, "9f86d081884c7d659a2f",
                     physical_id=first["PhysicalResourceId"], old=event["ResourceProperties"])
    ok, second = invoke(e2e_workers, update)
    assert ok, second
    assert second["PhysicalResourceId"] == first["PhysicalResourceId"], "never a replacement"
    assert second["Data"]["ExecutionArn"] != arn
    ok, done = wait_complete(completion_workers, update, second)
    assert ok and done["Data"]["AppliedCount"] == "0", done
    assert len(applied_events(fresh_database)) == len(REPO_MIGRATIONS), "nothing applied twice"


def test_a_failed_migration_fails_the_deploy_with_its_name_and_the_database_error(
        workers, completion_workers, fresh_database, migrations_dir, state_machine, stack_id, sfn):
    write(migrations_dir, {
        "001_create_users.sql": "CREATE TABLE users (id int);\n",
        "002_add_new_feature.sql": "ALTER TABLE users ADD COLUMN email text;\nINSERT INTO no_such_table VALUES (1);\n",
    })
    use_migrations(workers, fresh_database, migrations_dir)
    event = request("Create", stack_id, state_machine, "aaaa1111")
    ok, started = invoke(workers, event)
    assert ok, started
    ok, error = wait_complete(completion_workers, event, started)
    assert not ok, error
    assert error["errorType"] == "ExecutionFailed"
    message = error["errorMessage"]
    # What CloudFormation shows: plain text, the migration, the database's error, the run.
    assert message.startswith("SqlFailed: 002_add_new_feature failed: relation \"no_such_table\" does not exist"), message
    assert "42P01" in message and "line 2" in message, message
    assert started["Data"]["ExecutionArn"] in message
    assert ledger(fresh_database) == [("001", True, False), ("002", False, False)]

    # Fixed and deployed again: a new request runs again instead of finding the failure.
    write(migrations_dir, {"002_add_new_feature.sql": "ALTER TABLE users ADD COLUMN email text;\n"})
    use_migrations(workers, fresh_database, migrations_dir)
    update = request("Update", stack_id, state_machine, "bbbb2222", physical_id=started["PhysicalResourceId"],
                     old=event["ResourceProperties"])
    ok, restarted = invoke(workers, update)
    assert ok, restarted
    ok, done = wait_complete(completion_workers, update, restarted)
    assert ok and done["Data"]["AppliedCount"] == "1", done
    assert ledger(fresh_database) == [("001", True, False), ("002", True, False)]


def test_a_deploy_leaves_after_deploy_migrations_and_what_requires_them_for_the_run_after_it(
        workers, completion_workers, fresh_database, migrations_dir, state_machine, stack_id, sfn, run_execution):
    """The deploy waits for schema migrations only: an `after-deploy` backfill and the
    migration that requires it are left pending (newer ones are applied past them), and the
    execution started once the deploy completed applies them, in order, without calling them
    out of order."""
    write(migrations_dir, {
        "001_items.sql": "CREATE TABLE items (id int PRIMARY KEY, flag int);\n"
                         "INSERT INTO items (id) SELECT g FROM generate_series(1, 250) g;\n",
        "002_backfill_flag.sql": "-- stepmigrate: after-deploy\n-- stepmigrate: batch\n-- stepmigrate: batch_size = 100\n"
                                 "UPDATE items SET flag = 1\n"
                                 "WHERE id IN (SELECT id FROM items WHERE flag IS NULL ORDER BY id LIMIT :batch_size);\n",
        "003_add_note.sql": "ALTER TABLE items ADD COLUMN note text;\n",
        "004_flag_not_null.sql": "-- stepmigrate: requires = 002\nALTER TABLE items ALTER flag SET NOT NULL;\n",
    })
    use_migrations(workers, fresh_database, migrations_dir)
    event = request("Create", stack_id, state_machine, "after-deploy-1")
    ok, started = invoke(workers, event)
    assert ok, started
    ok, done = wait_complete(completion_workers, event, started)
    assert ok, done
    assert done["Data"]["AppliedCount"] == "2" and done["Data"]["DeferredCount"] == "2", done
    assert ledger(fresh_database) == [("001", True, False), ("003", True, False)]
    assert fresh_database.query("SELECT count(*) FROM items WHERE flag IS NULL") == [(250,)]
    deploy_run = sfn.describe_execution(executionArn=started["Data"]["ExecutionArn"])
    assert json.loads(deploy_run["output"])["deferred"] == ["002_backfill_flag", "004_flag_not_null"]

    after = run_execution(state_machine, AFTER_DEPLOY_INPUT, timeout=180)
    assert after.status == "SUCCEEDED", after.dump()[-4000:]
    assert after.output["applied_count"] == 2 and after.output["deferred"] == [], after.output
    assert ledger(fresh_database) == [(v, True, False) for v in ("001", "002", "003", "004")]
    assert applied_events(fresh_database) == ["001", "003", "002", "004"], "recorded in the order they ran"
    assert fresh_database.query("SELECT count(*) FROM items WHERE flag = 1") == [(250,)]


def test_delete_does_nothing(e2e_workers, completion_workers, fresh_database, state_machine, stack_id, sfn):
    event = request("Delete", stack_id, state_machine, "cccc3333", physical_id="stepmigrate:BackendStack-e2e:X")
    ok, answer = invoke(e2e_workers, event)
    assert ok, answer
    assert answer == {"PhysicalResourceId": "stepmigrate:BackendStack-e2e:X"}
    ok, done = wait_complete(completion_workers, event, answer)
    assert ok and done == {"IsComplete": True}, done
    assert executions_of(sfn, state_machine) == []
    assert fresh_database.query("SELECT to_regclass('schema_migrations') IS NULL") == [(True,)]


def test_older_code_after_a_rollback_sees_newer_migrations_as_unknown_not_an_error(
        workers, completion_workers, fresh_database, migrations_dir, tmp_path, state_machine, stack_id):
    """CloudFormation rolling back sends an Update with the previous properties once the
    previous workers are back. Whether or not the trigger can tell it is a rollback, the older
    run must succeed: the database is past its migration set."""
    write(migrations_dir, {
        "001_create_users.sql": "CREATE TABLE users (id int);\n",
        "002_add_email.sql": "ALTER TABLE users ADD COLUMN email text;\n",
    })
    use_migrations(workers, fresh_database, migrations_dir)
    forward = request("Update", stack_id, state_machine, "new-set", physical_id="stepmigrate:s:l")
    ok, started = invoke(workers, forward)
    ok, done = wait_complete(completion_workers, forward, started)
    assert ok and done["Data"]["AppliedCount"] == "2", done

    older = tmp_path / "older"
    older.mkdir()
    write(older, {"001_create_users.sql": "CREATE TABLE users (id int);\n"})
    use_migrations(workers, fresh_database, older)
    back = request("Update", stack_id, state_machine, "old-set", physical_id="stepmigrate:s:l",
                   old=forward["ResourceProperties"])
    ok, started = invoke(workers, back)
    assert ok, started
    ok, done = wait_complete(completion_workers, back, started)
    assert ok and done["IsComplete"] and done["Data"]["AppliedCount"] == "0", done
    assert ledger(fresh_database) == [("001", True, False), ("002", True, False)]


def test_a_bad_request_is_named(e2e_workers, stack_id):
    event = request("Create", stack_id, "", "dddd")
    ok, error = invoke(e2e_workers, event)
    assert not ok
    assert error["errorType"] == "InvalidInput"
    assert "ResourceProperties.StateMachineArn" in error["errorMessage"]


def test_create_fails_at_once_when_the_stack_status_cannot_be_read(e2e_workers, state_machine, sfn):
    """The rollback check must work before it is needed: on Create, a stack the trigger cannot
    describe (here: one that does not exist) fails the deploy with what is missing."""
    missing = "arn:aws:cloudformation:us-east-1:123456789012:stack/NoSuchStack/00000000-0000-0000-0000-000000000000"
    ok, error = invoke(e2e_workers, request("Create", missing, state_machine, "eeee"))
    assert not ok
    assert error["errorType"] == "ServiceError"
    assert "cloudformation:DescribeStacks" in error["errorMessage"] and "NoSuchStack" in error["errorMessage"]
    assert executions_of(sfn, state_machine) == []


def remote(aws_endpoint, *args: str, state_machine: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ENDPOINT_URL=aws_endpoint, AWS_REGION=harness.REGION, AWS_ACCESS_KEY_ID="testing",
               AWS_SECRET_ACCESS_KEY="testing", NO_COLOR="1")
    if state_machine:
        env["STEPMIGRATE_STATE_MACHINE_ARN"] = state_machine
    return subprocess.run([str(CLI), "remote", *args], env=env, capture_output=True, text=True, timeout=300)


def test_remote_start_watch_and_status(workers, fresh_database, migrations_dir, state_machine, aws_endpoint):
    write(migrations_dir, {
        "001_create_users.sql": "CREATE TABLE users (id int);\n",
        "002_add_email.sql": "ALTER TABLE users ADD COLUMN email text;\n",
    })
    use_migrations(workers, fresh_database, migrations_dir)
    missing = remote(aws_endpoint, "start")
    assert missing.returncode == 2 and "STEPMIGRATE_STATE_MACHINE_ARN" in missing.stderr, missing

    dry = remote(aws_endpoint, "--json", "start", "--dry-run", "--watch", "--poll", "0.2", state_machine=state_machine)
    assert dry.returncode == 0, dry
    doc = json.loads(dry.stdout)
    assert doc["ok"] and doc["execution"]["status"] == "SUCCEEDED"
    assert {"event": "planned", "database": fresh_database.name, "to_apply": 0, "pending": 2, "dry_run": True,
            "report_only": True} in doc["milestones"]
    assert fresh_database.query("SELECT to_regclass('schema_migrations') IS NULL") == [(True,)]

    run = remote(aws_endpoint, "start", "--watch", "--poll", "0.2", state_machine=state_machine)
    assert run.returncode == 0, run
    lines = run.stdout.splitlines()
    assert lines[0].startswith("following arn:aws:states:"), run.stdout
    assert any("plan: 2 migration(s) to apply to " + fresh_database.name in l for l in lines), run.stdout
    assert any("[1/2] 001_create_users ... applied" in l for l in lines), run.stdout
    assert any("[2/2] 002_add_email ... applied" in l for l in lines), run.stdout
    assert lines[-1] == "succeeded: 2 migration(s) applied", run.stdout

    status = remote(aws_endpoint, "--json", "status", state_machine=state_machine)
    assert status.returncode == 0, status
    assert json.loads(status.stdout)["execution"]["status"] == "SUCCEEDED"

    write(migrations_dir, {"003_broken.sql": "SELECT * FROM no_such_table;\n"})
    use_migrations(workers, fresh_database, migrations_dir)
    started = remote(aws_endpoint, "start", "--name", "broken-run", state_machine=state_machine)
    assert started.returncode == 0 and "started arn:aws:states:" in started.stdout, started
    reused = remote(aws_endpoint, "start", "--name", "broken-run", "--dry-run", state_machine=state_machine)
    assert reused.returncode == 2 and "already exists with another input" in reused.stderr, reused
    watched = remote(aws_endpoint, "watch", "broken-run", "--poll", "0.2", state_machine=state_machine)
    assert watched.returncode == 10, watched
    assert "FAILED: SqlFailed: 003_broken failed: relation \"no_such_table\" does not exist" in watched.stderr, watched
    again = remote(aws_endpoint, "start", "--name", "broken-run", state_machine=state_machine)
    assert again.returncode == 2 and "already ran (FAILED)" in again.stderr, again
    status = remote(aws_endpoint, "status", state_machine=state_machine)
    assert status.returncode == 10, status
    assert "FAILED" in status.stdout and "003_broken" in status.stdout, status


def test_the_constructs_set_hash_is_the_digest_the_plan_reports(e2e_workers, state_machine, run_execution):
    """The custom resource's MigrationSetHash (computed in Python at synth) is the digest the
    workers compute of the same files, so the hash names the set that runs."""
    import importlib.util
    import sys

    # packaging.py alone (the package's __init__ imports aws_cdk, not installed here).
    spec = importlib.util.spec_from_file_location(
        "stepmigrate_packaging", harness.REPO / "infrastructure" / "stepmigrate_cdk" / "packaging.py")
    packaging = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = packaging  # its dataclasses look themselves up there
    spec.loader.exec_module(packaging)
    migration_set_digest = packaging.migration_set_digest

    report = run_execution(state_machine, {"action": "migrate", "dry_run": True})
    assert report.status == "SUCCEEDED", report.dump()
    assert report.output["set_digest"] == migration_set_digest(harness.REPO / "migrations")


def test_a_transient_describe_failure_is_not_complete_yet_not_a_failed_deploy(
        e2e_workers, workers_env, fresh_database, state_machine, stack_id, e2e_logs, sfn):
    """isComplete polls every 15 s for 55 minutes: one throttled or lost DescribeExecution must
    not fail the deployment. Step Functions unreachable (a closed port): not complete yet; a
    permanent error (the execution does not exist) still fails."""
    event = request("Create", stack_id, state_machine, "dddd4444")
    ok, started = invoke(e2e_workers, event)
    assert ok, started
    unreachable = harness.Workers({**workers_env, "STEPMIGRATE_TRIGGER_HANDLER": "is_complete",
                                   "AWS_ENDPOINT_URL": f"http://127.0.0.1:{harness.free_port()}",
                                   "AWS_MAX_ATTEMPTS": "1"},
                                  e2e_logs / "unreachable_completion_workers.log")
    unreachable.prebuilt = True
    try:
        unreachable.ensure()
        ok, answer = invoke(unreachable, {**event, **started})
        assert ok, answer
        assert answer == {"IsComplete": False}, answer
    finally:
        unreachable.stop()


def test_an_execution_that_does_not_exist_fails_is_complete(completion_workers, state_machine, stack_id):
    event = request("Create", stack_id, state_machine, "eeee5555")
    gone = {"PhysicalResourceId": "stepmigrate:x:y",
            "Data": {"ExecutionArn": state_machine.replace(":stateMachine:", ":execution:") + ":never-started"}}
    ok, error = invoke(completion_workers, {**event, **gone})
    assert not ok, error
    assert error["errorType"] == "ServiceError", error
    assert "ExecutionDoesNotExist" in error["errorMessage"], error
