"""What the real service does that the emulator does not show (the issue "On the real service, a
review against the AWS documentation"): every Task state's TimeoutSeconds nested around its
Lambda's timeout and the task's statement timeout, the VPC endpoints leaving the rest of the VPC
alone, the task route's retry as long as the README says, and an execution that outlives a
deploy still able to run its task definition revision."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Template
from conftest import REPO_ROOT, Synth
from test_stack import ASL_FILE, migrations_from, minimal_database_stack

from stepmigrate_cdk import StepMigrate, TimeoutsError, WorkerPackages
from stepmigrate_cdk.construct import (
    _WORKER_SPECS,
    APPLY_ONE_LOCK_WAIT,
    FUNCTION_PLACEHOLDERS,
    WORKER_CONNECT_TIMEOUT_SECONDS,
    _retry_delays,
    _states,
    parse_duration,
)


def document() -> dict[str, Any]:
    return json.loads(ASL_FILE.read_text())


def tasks(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in _states(doc["States"]).items() if s["Type"] == "Task"}


# --- 1. every Task state has a timeout, nested: state > Lambda > database ----------------------


def test_every_task_state_outlasts_its_lambdas_timeout() -> None:
    """A Task state with no TimeoutSeconds waits up to the execution's year
    (https://docs.aws.amazon.com/step-functions/latest/dg/sfn-stuck-execution.html)."""
    lambda_timeouts = {spec.key: spec.timeout.to_seconds() for spec in _WORKER_SPECS}
    for name, state in tasks(document()).items():
        assert isinstance(state.get("TimeoutSeconds"), int), name
        assert "HeartbeatSeconds" not in state, name
        placeholder = state["Resource"].strip("${}")
        if placeholder in FUNCTION_PLACEHOLDERS:
            assert state["TimeoutSeconds"] > lambda_timeouts[FUNCTION_PLACEHOLDERS[placeholder]], name


def test_a_task_state_without_a_timeout_fails_the_synth(tmp_path: Path, fake_packages: Path) -> None:
    doc = document()
    del tasks(doc)["Record"]["TimeoutSeconds"]
    definition = tmp_path / "no-timeout.asl.json"
    definition.write_text(json.dumps(doc))
    with pytest.raises(TimeoutsError, match="Task state Record has no TimeoutSeconds"):
        migrations_from(definition, fake_packages)


def test_a_task_state_shorter_than_its_lambda_fails_the_synth(tmp_path: Path, fake_packages: Path) -> None:
    doc = document()
    tasks(doc)["ApplyOne"]["TimeoutSeconds"] = 900
    definition = tmp_path / "short.asl.json"
    definition.write_text(json.dumps(doc))
    with pytest.raises(TimeoutsError, match="ApplyOne: TimeoutSeconds 900 must be longer than the apply-one"):
        migrations_from(definition, fake_packages)


@pytest.mark.parametrize("value, message", [
    ("0", r"0 \(no limit\) is refused"),
    ("12h", r"does not fit in the definition's ApplyTask TimeoutSeconds \(43200 s\)"),
])
def test_an_unbounded_or_too_long_task_statement_timeout_is_refused(fake_packages: Path, value: str,
                                                                    message: str) -> None:
    stack, vpc, database, secret = minimal_database_stack()
    with pytest.raises(TimeoutsError, match=message):
        StepMigrate(stack, "Migrations", vpc=vpc, database=database, database_secret=secret, database_name="db",
                    packages=WorkerPackages.from_directory(fake_packages), task_statement_timeout=value)


def test_the_longest_task_statement_timeout_that_fits_is_accepted(fake_packages: Path) -> None:
    # 43200 s - 15 min to start - 5 s connect - 3 min lock wait = 41,095 s: 11 h fits.
    stack, vpc, database, secret = minimal_database_stack()
    StepMigrate(stack, "Migrations", vpc=vpc, database=database, database_secret=secret, database_name="db",
                packages=WorkerPackages.from_directory(fake_packages), task_statement_timeout="11h")


# --- 2. the VPC endpoints leave the rest of the VPC its services -------------------------------


def vpc_cidr_ingress(template: dict[str, Any], group_id: str) -> list[dict[str, Any]]:
    group = template["Resources"][group_id]["Properties"]
    return [rule for rule in group.get("SecurityGroupIngress", [])
            if rule.get("CidrIp") == {"Fn::GetAtt": ["Vpc8378EB38", "CidrBlock"]}]


def endpoints_of(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {lid: r["Properties"] for lid, r in template["Resources"].items() if r["Type"] == "AWS::EC2::VPCEndpoint"}


@pytest.mark.parametrize("task_endpoints", [False, True])
def test_every_interface_endpoint_with_private_dns_admits_the_whole_vpc(fake_packages: Path,
                                                                        task_endpoints: bool) -> None:
    """Private DNS makes the endpoint answer the service's name for every workload of the VPC
    (https://docs.aws.amazon.com/vpc/latest/privatelink/privatelink-access-aws-services.html):
    a security group that admitted only stepmigrate would cut the others off the service."""
    stack, vpc, database, secret = minimal_database_stack()
    StepMigrate(stack, "Migrations", vpc=vpc, database=database, database_secret=secret, database_name="db",
                packages=WorkerPackages.from_directory(fake_packages), create_task_endpoints=task_endpoints)
    template = Template.from_stack(stack).to_json()
    interface = {lid: p for lid, p in endpoints_of(template).items() if p["VpcEndpointType"] == "Interface"}
    assert len(interface) == (4 if task_endpoints else 1)
    for lid, props in interface.items():
        assert props["PrivateDnsEnabled"] is True
        (group,) = props["SecurityGroupIds"]
        rules = vpc_cidr_ingress(template, group["Fn::GetAtt"][0])
        assert [(r["FromPort"], r["ToPort"], r["IpProtocol"]) for r in rules] == [(443, 443, "tcp")], lid


def test_the_task_endpoints_are_off_by_default_and_s3s_leaves_other_buckets_alone(fake_packages: Path) -> None:
    """A gateway endpoint's policy applies to every S3 call through the route tables it is on
    ("When you create a gateway endpoint ... the endpoint policy controls access",
    https://docs.aws.amazon.com/vpc/latest/privatelink/vpc-endpoints-s3.html): one that allowed
    only ECR's layer bucket would deny every other workload of those subnets its buckets."""
    stack, vpc, database, secret = minimal_database_stack()
    StepMigrate(stack, "Migrations", vpc=vpc, database=database, database_secret=secret, database_name="db",
                packages=WorkerPackages.from_directory(fake_packages))
    gateway = [p for p in endpoints_of(Template.from_stack(stack).to_json()).values()
               if p["VpcEndpointType"] == "Gateway"]
    assert gateway == []
    stack, vpc, database, secret = minimal_database_stack()
    StepMigrate(stack, "Migrations", vpc=vpc, database=database, database_secret=secret, database_name="db",
                packages=WorkerPackages.from_directory(fake_packages), create_task_endpoints=True)
    (s3,) = [p for p in endpoints_of(Template.from_stack(stack).to_json()).values()
             if p["VpcEndpointType"] == "Gateway"]
    assert "PolicyDocument" not in s3


# --- 5. the task route's LockTimeout retry lasts what the README says ---------------------------


def lock_retry_seconds(state: dict[str, Any], lock_wait_seconds: float) -> float:
    """The longest a state keeps retrying LockTimeout: every attempt waits the lock wait (plus the
    connection) before it fails with LockTimeout, and the retrier's delays (without jitter) come
    between them."""
    (retrier,) = [r for r in state["Retry"] if "LockTimeout" in r["ErrorEquals"]]
    attempts = 1 + retrier["MaxAttempts"]
    return attempts * (lock_wait_seconds + WORKER_CONNECT_TIMEOUT_SECONDS) + _retry_delays(retrier)


def test_the_task_outcomes_lock_retry_lasts_what_the_readme_says() -> None:
    total = lock_retry_seconds(tasks(document())["TaskOutcome"], parse_duration(APPLY_ONE_LOCK_WAIT))
    readme = (REPO_ROOT / "statemachine" / "README.md").read_text()
    match = re.search(r"`LockTimeout` is retried for at most about (\d+)\s+minutes", readme)
    assert match, "statemachine/README.md no longer says how long TaskOutcome retries LockTimeout"
    assert int(match.group(1)) == round(total / 60), (total, match.group(0))
    comment = tasks(document())["TaskOutcome"]["Comment"]
    assert f"at most about {round(total / 60)} minutes" in comment, comment


# --- 6. an execution that outlives a deploy; a rule new in the deploy it must catch ------------


def test_a_replaced_task_definition_revision_stays_runnable(backend: Synth) -> None:
    """An execution that outlives a deploy runs the revision its plan was made with (its image
    holds that plan's migrations). CloudFormation deregisters a replaced one, and RunTask refuses an
    INACTIVE revision: retained, it stays ACTIVE."""
    task_definition = backend.resources[backend.logical_id(backend.stack.stepmigrate.task_definition)]
    assert task_definition["UpdateReplacePolicy"] == "Retain"
    assert task_definition["DeletionPolicy"] == "Retain"


def test_the_trigger_knows_the_after_deploy_rule(backend: Synth, fake_packages: Path) -> None:
    """A deploy that creates the rule runs every migration itself (the trigger, `trigger.rs`
    execution_input): the new rule may miss that deploy's completion."""
    stepmigrate = backend.stack.stepmigrate
    assert stepmigrate.after_deploy_rule is not None
    (custom,) = [r for r in backend.resources.values() if r["Type"] == "Custom::StepMigrateMigrations"]
    assert custom["Properties"]["AfterDeployRule"] == {
        "Fn::GetAtt": [backend.logical_id(stepmigrate.after_deploy_rule), "Arn"]}
    stack, vpc, database, secret = minimal_database_stack()
    StepMigrate(stack, "Migrations", vpc=vpc, database=database, database_secret=secret, database_name="db",
                packages=WorkerPackages.from_directory(fake_packages), run_after_deploy=False)
    (custom,) = [r for r in Template.from_stack(stack).to_json()["Resources"].values()
                 if r["Type"] == "Custom::StepMigrateMigrations"]
    assert custom["Properties"]["AfterDeployRule"] == ""


# --- 8. a long backfill continues in a new execution -------------------------------------------


def test_the_state_machine_may_start_its_own_next_execution_and_nothing_else(backend: Synth) -> None:
    """StartContinuation (`states:startExecution`, Request Response) needs StartExecution on the
    state machine it starts: this one. A policy of its own (the role's default policy cannot
    name the state machine, which depends on it), which the deploy-time run waits for."""
    stepmigrate = backend.stack.stepmigrate
    props = backend.resources[backend.logical_id(stepmigrate.continuation_policy)]["Properties"]
    (statement,) = props["PolicyDocument"]["Statement"]
    assert statement["Action"] == "states:StartExecution" and statement["Effect"] == "Allow"
    assert statement["Resource"] == {"Ref": backend.logical_id(stepmigrate.state_machine)}
    assert props["Roles"] == [{"Ref": backend.logical_id(stepmigrate.state_machine.role)}]
    (custom,) = [r for r in backend.resources.values() if r["Type"] == "Custom::StepMigrateMigrations"]
    assert backend.logical_id(stepmigrate.continuation_policy) in custom["DependsOn"]
