"""The after-deploy run: the deploy's own execution leaves `after-deploy` migrations pending
(the trigger's `skip_after_deploy`, tests/e2e/test_trigger.py), and an EventBridge rule on the
stack's own "deploy completed" events starts the execution that applies them."""

from __future__ import annotations

import json

import pytest
from conftest import Synth
from test_stack import migrations_from, of_type, only, resources, statements_of_role, statements_with

from stepmigrate_cdk import AFTER_DEPLOY_INPUT, TimeoutsError
from stepmigrate_cdk.construct import DEFAULT_DEFINITION_FILE
from aws_cdk.assertions import Template


def test_the_rule_starts_the_state_machine_when_this_stacks_deploy_completed(backend: Synth) -> None:
    rule = backend.stack.stepmigrate.after_deploy_rule
    assert rule is not None
    rule_id, props = only(of_type(backend, "AWS::Events::Rule"))
    assert rule_id == backend.logical_id(rule)
    props = props["Properties"]
    assert props["State"] == "ENABLED"
    # The event as CloudFormation sends it to the default bus (docs: "Stack Status Change
    # event detail"): this stack's id only, and only the two statuses of a deploy that
    # succeeded (a rollback ends in UPDATE_ROLLBACK_COMPLETE, which starts nothing).
    assert props["EventPattern"] == {
        "source": ["aws.cloudformation"],
        "detail-type": ["CloudFormation Stack Status Change"],
        "detail": {"stack-id": [{"Ref": "AWS::StackId"}],
                   "status-details": {"status": ["CREATE_COMPLETE", "UPDATE_COMPLETE"]}},
    }
    assert "EventBusName" not in props, "CloudFormation's events go to the default bus"
    (target,) = props["Targets"]
    sm_ref = {"Ref": backend.logical_id(backend.stack.stepmigrate.state_machine)}
    assert target["Arn"] == sm_ref
    # A plain migrate: everything pending, the after-deploy migrations among them.
    assert json.loads(target["Input"]) == {"action": "migrate", "source": "after-deploy"} == AFTER_DEPLOY_INPUT
    assert "skip_after_deploy" not in target["Input"]
    assert target["RetryPolicy"] == {"MaximumRetryAttempts": 185, "MaximumEventAgeInSeconds": 86400}
    # Its role may start this state machine and nothing else.
    role_id = target["RoleArn"]["Fn::GetAtt"][0]
    statements = statements_of_role(backend, role_id)
    assert [s["Action"] for s in statements] == ["states:StartExecution"]
    assert [resources(s) for s in statements_with(statements, "states:StartExecution")] == [[sm_ref]]


def test_a_failed_start_raises_an_alarm_on_the_topic(backend: Synth) -> None:
    rule_ref = {"Ref": backend.logical_id(backend.stack.stepmigrate.after_deploy_rule)}
    topic_ref = {"Ref": backend.logical_id(backend.stack.stepmigrate.topic)}
    alarms = [a["Properties"] for a in of_type(backend, "AWS::CloudWatch::Alarm").values()
              if a["Properties"]["MetricName"] == "FailedInvocations"]
    assert len(alarms) == 1
    (alarm,) = alarms
    assert alarm["Namespace"] == "AWS/Events"
    assert alarm["Dimensions"] == [{"Name": "RuleName", "Value": rule_ref}]
    assert alarm["AlarmActions"] == [topic_ref]
    assert "after-deploy" in alarm["AlarmDescription"]


def test_without_the_after_deploy_run_there_is_no_rule(fake_packages) -> None:
    migrations = migrations_from(DEFAULT_DEFINITION_FILE, fake_packages, run_after_deploy=False)
    assert migrations.after_deploy_rule is None
    template = Template.from_stack(migrations.node.scope).to_json()["Resources"]
    assert not [r for r in template.values() if r["Type"] == "AWS::Events::Rule"]
    assert not [r for r in template.values()
                if r["Type"] == "AWS::CloudWatch::Alarm" and r["Properties"]["MetricName"] == "FailedInvocations"]


def test_apply_one_runs_batches_for_two_minutes_at_a_time(backend: Synth) -> None:
    """A batch invocation holds the migration lock: a short budget lets a deploy's run in
    between the invocations of an after-deploy backfill."""
    ids = {k: backend.logical_id(f) for k, f in backend.stack.stepmigrate.functions.items()}
    env = backend.resources[ids["apply-one"]]["Properties"]["Environment"]["Variables"]
    assert env["STEPMIGRATE_BATCH_BUDGET"] == "2min"
    for other in ("plan", "record"):
        assert "STEPMIGRATE_BATCH_BUDGET" not in backend.resources[ids[other]]["Properties"]["Environment"]["Variables"]


@pytest.mark.parametrize("budget", ["0", "15min", "soon"])
def test_a_batch_budget_apply_one_cannot_give_fails_the_synth(fake_packages, budget: str) -> None:
    with pytest.raises(TimeoutsError, match="batch_budget|not a duration"):
        migrations_from(DEFAULT_DEFINITION_FILE, fake_packages, batch_budget=budget)
