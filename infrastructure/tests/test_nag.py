"""cdk-nag's AwsSolutions checks pass, and every finding that is accepted says why."""

from __future__ import annotations

from typing import Any

from aws_cdk import App, Aspects, Stack
from aws_cdk import aws_sns as sns
from aws_cdk.assertions import Annotations, Match
from cdk_nag import AwsSolutionsChecks
from conftest import Synth, SynthFn

AWS_SOLUTIONS = Match.string_like_regexp("AwsSolutions-.*")

#: What may be accepted at all (each rule's reasons are in the resources' metadata and in
#: README.md). A new rule id here needs a reason that holds for the resources it is put on.
ACCEPTED_RULES = {
    "AwsSolutions-IAM4",   # the CDK Provider framework's functions: AWSLambdaBasicExecutionRole
    "AwsSolutions-IAM5",   # wildcards AWS requires (X-Ray, log delivery, ENIs, PutMetricData, ECR's token),
                           # executions, the task definition's revisions, the cluster's tasks
    "AwsSolutions-SF2",    # the Provider framework's waiter state machine cannot be traced
    "AwsSolutions-ECS2",   # the task's environment: settings and the secret's ARN, no secret value
    "CdkNagValidationFailure",  # EC23 cannot read the endpoints' ingress CIDR: the VPC's own block
    "AwsSolutions-RDS3", "AwsSolutions-RDS6", "AwsSolutions-RDS10",  # development settings
    "AwsSolutions-RDS11", "AwsSolutions-SMG4",
}


def findings(synthesized: Synth) -> list[str]:
    annotations = Annotations.from_stack(synthesized.stack)
    return [f"{m.id}: {m.entry.data}" for m in
            annotations.find_error("*", AWS_SOLUTIONS) + annotations.find_warning("*", AWS_SOLUTIONS)]


def suppressions(synthesized: Synth) -> list[tuple[str, dict[str, Any]]]:
    """(logical id, suppression) of every resource's cdk_nag metadata."""
    return [(lid, rule) for lid, resource in synthesized.resources.items()
            for rule in resource.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", [])]


def test_no_unsuppressed_finding(backend: Synth) -> None:
    assert findings(backend) == []


def test_every_suppression_is_specific_and_says_why(backend: Synth) -> None:
    accepted = suppressions(backend)
    assert accepted, "the cdk_nag metadata was not found: the check below would be vacuous"
    for lid, rule in accepted:
        assert rule["id"] in ACCEPTED_RULES, (lid, rule)
        assert len(rule["reason"]) >= 60 and " " in rule["reason"], (lid, rule)
        if rule["id"] == "AwsSolutions-IAM5":
            # A wildcard is accepted for named wildcards only, never for a whole policy.
            assert rule.get("applies_to"), (lid, rule)
    # Nothing is accepted for the whole stack.
    assert "cdk_nag" not in backend.template.to_json().get("Metadata", {})


def test_production_settings_need_no_database_suppression(synth: SynthFn) -> None:
    production = synth(multi_az=True, deletion_protection=True, iam_authentication=True)
    assert findings(production) == []
    accepted = {rule["id"] for _, rule in suppressions(production)}
    assert not accepted & {"AwsSolutions-RDS3", "AwsSolutions-RDS6", "AwsSolutions-RDS10"}


def test_the_checks_are_live() -> None:
    """A topic that accepts publishing without TLS is reported: the checks above are not vacuous."""
    app = App()
    stack = Stack(app, "Plain")
    sns.Topic(stack, "Topic")
    Aspects.of(app).add(AwsSolutionsChecks())
    app.synth()
    errors = Annotations.from_stack(stack).find_error("*", AWS_SOLUTIONS)
    assert any("AwsSolutions-SNS3" in str(m.entry.data) for m in errors)
