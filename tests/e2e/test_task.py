"""Long migrations outside Lambda: a migration that says `-- stepmigrate: runner = task` (or
whose statement_timeout is longer than apply-one's) is planned alone in its Map item with
`task: true`; the definition runs it with `arn:aws:states:::ecs:runTask.sync` (ApplyTask), then
reads its outcome from the ledger (TaskOutcome, apply-one's `{"task_outcome": ...}`).

moto runs the `.sync` integration against its ECS, which records RunTask but runs no container.
`EcsAgent` plays the container's part: it watches the cluster and, for each task RunTask
started, runs its command here -- apply-one's own binary in task mode (`apply-one task`), the
build the workers are (harness.PROFILE), with the container's environment override
(STEPMIGRATE_TASK_INPUT) over the workers' environment -- then stops the task in moto, which
ends the `.sync` wait. Its `mode` "kill" stops a task without running it: a container killed
before a word."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

import harness
from test_migrations import (  # noqa: F401 - migrations_dir is a fixture
    DEFINITION, FUNCTIONS, ledger, migrations_dir, use_migrations, write)

APPLY_ONE = harness.BIN_DIR / "apply-one"
SETUP = ("CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL);\n"
         "INSERT INTO items SELECT g, g % 1000 FROM generate_series(1, 300000) g;\n")
LONG_INDEX = ("-- stepmigrate: runner = task\n-- stepmigrate: no-transaction\n"
              "CREATE INDEX CONCURRENTLY items_v ON items (v);\n")


class EcsAgent:
    """Runs the ECS tasks of moto's cluster as local processes (see the module's docstring)."""

    def __init__(self, ecs, cluster: str, env: dict[str, str], log_path: Path, mode: str = "run"):
        self.ecs, self.cluster, self.env, self.log_path, self.mode = ecs, cluster, env, log_path, mode
        self.seen: list[dict] = []
        self.exit_codes: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> "EcsAgent":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        done: set[str] = set()
        while not self._stop.is_set():
            arns = [a for a in self.ecs.list_tasks(cluster=self.cluster)["taskArns"] if a not in done]
            for arn in arns:
                done.add(arn)
                task = self.ecs.describe_tasks(cluster=self.cluster, tasks=[arn])["tasks"][0]
                self.seen.append(task)
                reason = "killed before it started"
                if self.mode == "run":
                    code = self._run(task)
                    self.exit_codes.append(code)
                    reason = f"Essential container in task exited (exit code {code})"
                self.ecs.stop_task(cluster=self.cluster, task=arn, reason=reason)
            time.sleep(0.2)

    def _run(self, task: dict) -> int:
        env = dict(os.environ, **self.env)
        for override in task.get("overrides", {}).get("containerOverrides", []):
            assert override["name"] == "stepmigrate", override
            for pair in override.get("environment", []):
                env[pair["name"]] = pair["value"]
        with open(self.log_path, "ab") as log:
            return subprocess.run([str(APPLY_ONE), "task"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                  timeout=600).returncode


@pytest.fixture
def ecs_route(moto_server, aws_endpoint):
    """A cluster, a Fargate task definition and a network in moto; the task transitions made
    manual, so that a task stays RUNNING until the agent stops it. Returns the definition's
    substitutions for the task route."""
    requests.post(f"{moto_server}/moto-api/state-manager/set-transition",
                  json={"model_name": "ecs::task", "transition": {"progression": "manual", "times": 10**9}},
                  timeout=10).raise_for_status()
    ecs, ec2 = harness.client("ecs", moto_server), harness.client("ec2", moto_server)
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    # As the database's VPC has them for the private DNS of its endpoints (and moto's awsvpc
    # tasks need their network interface's DNS name).
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsSupport={"Value": True})
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.9.{i}.0/24")["Subnet"]["SubnetId"] for i in (1, 2)]
    group = ec2.create_security_group(GroupName=f"task-{time.time_ns()}", Description="task", VpcId=vpc)["GroupId"]
    cluster = ecs.create_cluster(clusterName=f"stepmigrate-{time.time_ns()}")["cluster"]["clusterArn"]
    task_definition = ecs.register_task_definition(
        family="stepmigrate-task", networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="1024",
        memory="2048", runtimePlatform={"cpuArchitecture": "ARM64", "operatingSystemFamily": "LINUX"},
        # The container's own cpu and memory: moto's RunTask adds them up (a KeyError without).
        containerDefinitions=[{"name": "stepmigrate", "image": "stepmigrate-task", "essential": True,
                               "cpu": 1024, "memory": 2048, "command": ["task"]}])["taskDefinition"]["taskDefinitionArn"]
    return ecs, cluster, {**FUNCTIONS, "TaskClusterArn": cluster, "TaskDefinitionArn": task_definition,
                          "TaskSubnets": ",".join(subnets), "TaskSecurityGroups": group}


def entered(run, name: str) -> int:
    return sum(1 for e in run.events
               if e["type"].endswith("StateEntered") and e["stateEnteredEventDetails"]["name"] == name)


def test_a_long_migration_runs_as_an_ecs_task_with_index_progress_in_its_log(
        workers, fresh_database, migrations_dir, ecs_route, create_state_machine, run_execution, tmp_path):
    ecs, cluster, substitutions = ecs_route
    write(migrations_dir, {"001_items.sql": SETUP, "002_items_v.sql": LONG_INDEX,
                           "003_after.sql": "CREATE TABLE after_index (id int);\n"})
    use_migrations(workers, fresh_database, migrations_dir)
    sm = create_state_machine(DEFINITION, substitutions)
    task_log = tmp_path / "task.log"
    env = {**workers.env, "STEPMIGRATE_PROGRESS_INTERVAL": "10ms"}
    with EcsAgent(ecs, cluster, env, task_log) as agent:
        run = run_execution(sm, {}, timeout=300)
    assert run.status == "SUCCEEDED", run.dump()[-4000:]
    assert run.output["applied_count"] == 3

    # The plan put 002 alone, on the task route; the others went through ApplyOne.
    plan = next(json.loads(d["output"])["plan"] for d in run.details("TaskStateExited") if d["name"] == "Plan")
    assert [(i["first"], i.get("task", False)) for i in plan["pending"]] == [
        ("001", False), ("002", True), ("003", False)], plan["pending"]
    assert (entered(run, "ApplyTask"), entered(run, "TaskOutcome"), entered(run, "ApplyOne")) == (1, 1, 2)

    # RunTask as the definition asked: the cluster, Fargate, the network, the item as input.
    assert len(agent.seen) == 1 and agent.exit_codes == [0], (agent.seen, task_log.read_text())
    task = agent.seen[0]
    assert task["launchType"] == "FARGATE" and task["startedBy"] == "AWS Step Functions", task
    assert task["taskDefinitionArn"] == substitutions["TaskDefinitionArn"]
    item = json.loads(next(p["value"] for p in task["overrides"]["containerOverrides"][0]["environment"]
                           if p["name"] == "STEPMIGRATE_TASK_INPUT"))
    assert item["range"]["first"] == "002" and item["range"]["task"] is True, item
    assert item["run_id"] == run.output["run_id"], item

    # The task applied it once, in the run's name; the index is valid; its build was logged.
    assert ledger(fresh_database) == [("001", True, False), ("002", True, False), ("003", True, False)]
    assert fresh_database.query(
        "SELECT run_id FROM schema_migration_events WHERE version = '002' AND kind = 'applied'") == [
        (run.output["run_id"],)]
    assert fresh_database.query(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = 'items_v'::regclass") == [(True,)]
    log = task_log.read_text()
    assert "index build" in log.lower() or "create_index" in log.lower(), log[-3000:]


def test_a_failing_task_migration_is_recorded_once_and_alerted_once(
        workers, fresh_database, migrations_dir, ecs_route, create_state_machine, run_execution, alerts, tmp_path):
    ecs, cluster, substitutions = ecs_route
    write(migrations_dir, {"001_items.sql": "CREATE TABLE items (id int);\n",
                           "002_bad.sql": "-- stepmigrate: runner = task\nALTER TABLE items ADD COLUMN v int;\n"
                                          "SELECT no_such_column FROM items;\n"})
    use_migrations(workers, fresh_database, migrations_dir)
    sm = create_state_machine(DEFINITION, substitutions)
    with EcsAgent(ecs, cluster, workers.env, tmp_path / "task.log") as agent:
        run = run_execution(sm, {}, timeout=300)
    assert run.status == "FAILED", run.dump()[-4000:]
    assert agent.exit_codes == [1]
    assert run.error == "SqlFailed", (run.error, run.cause)
    assert "002_bad" in run.cause and "no_such_column" in run.cause, run.cause

    # One failed event (the task's; Record did not add a second), nothing half-applied.
    run_id = run.arn.rsplit(":", 1)[1]
    assert fresh_database.query(
        "SELECT kind, run_id FROM schema_migration_events WHERE version = '002' ORDER BY id") == [("failed", run_id)]
    assert ledger(fresh_database) == [("001", True, False), ("002", False, False)]
    assert fresh_database.query(
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'items' AND column_name = 'v'") == [(0,)]
    messages = alerts.messages(expect=1, timeout=30)
    assert len(messages) == 1 and "002_bad" in messages[0]["body"], messages


def test_a_task_that_stops_without_a_word_fails_as_task_failed(
        workers, fresh_database, migrations_dir, ecs_route, create_state_machine, run_execution, alerts, tmp_path):
    ecs, cluster, substitutions = ecs_route
    write(migrations_dir, {"001_slow.sql": "-- stepmigrate: statement_timeout = 2h\nCREATE TABLE slow (id int);\n"})
    use_migrations(workers, fresh_database, migrations_dir)
    sm = create_state_machine(DEFINITION, substitutions)
    with EcsAgent(ecs, cluster, workers.env, tmp_path / "task.log", mode="kill") as agent:
        run = run_execution(sm, {}, timeout=300)
    assert run.status == "FAILED", run.dump()[-4000:]
    assert len(agent.seen) == 1, "a statement_timeout above apply-one's routes it to the task"
    assert run.error == "TaskFailed", (run.error, run.cause)
    assert "001_slow" in run.cause and "killed before it started" in run.cause, run.cause
    assert "not applied" in run.cause, run.cause
    assert fresh_database.query("SELECT to_regclass('slow') IS NULL") == [(True,)]
    messages = alerts.messages(expect=1, timeout=30)
    assert len(messages) == 1 and "001_slow" in messages[0]["body"], messages
