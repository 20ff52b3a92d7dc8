"""The cdk-nag (AwsSolutions) findings the StepMigrate construct accepts, each on the resources
it concerns and, for wildcard findings, on the exact wildcard (`applies_to`).

Everything else the pack checks is fixed in the construct: each function has a role of its own
with its log group only (no AWSLambdaBasicExecutionRole), the topic is KMS-encrypted and
TLS-only, the key rotates, both state machines log ALL events, the main one is traced.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from aws_cdk import aws_ec2 as ec2
from cdk_nag import NagPackSuppression, NagSuppressions, RegexAppliesTo
from constructs import IConstruct

if TYPE_CHECKING:
    from .construct import StepMigrate

_XRAY = ("X-Ray's PutTraceSegments and PutTelemetryRecords (added by tracing ACTIVE) take no resource-level "
         "permissions: their resource must be *")

# The one wildcard each finding may cover, as cdk-nag writes it.
_ANY_RESOURCE = "Resource::*"
_EXECUTIONS = RegexAppliesTo(regex=r"/^Resource::arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:"
                                   r"execution:<[A-Za-z0-9]+\.Name>:\*$/g")
_FUNCTION_VERSIONS = RegexAppliesTo(regex=r"/^Resource::<[A-Za-z0-9]+\.Arn>:\*$/g")
# The ECS task route: any revision of the construct's task definition family, the tasks of its
# cluster (the cluster's name is its logical id's Ref). Partition, region and account as
# cdk-nag writes them for an environment-agnostic stack, or literal.
_ARN_PREFIX = r"arn:(<AWS::Partition>|[a-z-]+):ecs:(<AWS::Region>|[a-z0-9-]+):(<AWS::AccountId>|[0-9]{12}):"


def _task_definition_revisions(family: str) -> RegexAppliesTo:
    return RegexAppliesTo(regex=f"/^Resource::{_ARN_PREFIX}task-definition\\/{re.escape(family)}:\\*$/g")


_CLUSTER_TASKS = RegexAppliesTo(regex=f"/^Resource::{_ARN_PREFIX}task\\/<[A-Za-z0-9]+>\\/\\*$/g")
_BASIC_EXECUTION_ROLE = ("Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                         "AWSLambdaBasicExecutionRole")


def suppress_construct_findings(stepmigrate: StepMigrate) -> None:
    """Adds the suppressions to the construct's resources."""
    for key in ("plan", "apply-one", "record"):
        _suppress(stepmigrate.functions[key].role, NagPackSuppression(
            id="AwsSolutions-IAM5", applies_to=[_ANY_RESOURCE],
            reason=("Lambda creates and deletes the function's VPC network interfaces with its role; the EC2 "
                    "Describe* calls take no resource-level permissions (the AWSLambdaVPCAccessExecutionRole "
                    "statement, inline). " + _XRAY)))

    _suppress(stepmigrate.functions["notify"].role,
              NagPackSuppression(id="AwsSolutions-IAM5", applies_to=[_ANY_RESOURCE], reason=(
                  "cloudwatch:PutMetricData takes no resource: the statement is limited by the condition "
                  "cloudwatch:namespace = the metric namespace. " + _XRAY)),
              NagPackSuppression(id="AwsSolutions-IAM5", applies_to=["Action::kms:GenerateDataKey*"], reason=(
                  "Publishing to the KMS-encrypted alert topic needs kms:GenerateDataKey* (SNS picks the "
                  "variant); granted by topic.grant_publish on the topic's key only")))

    for key in ("trigger-on-event", "trigger-is-complete"):
        _suppress(stepmigrate.functions[key].role,
                  NagPackSuppression(id="AwsSolutions-IAM5", applies_to=[_EXECUTIONS], reason=(
                      "states:DescribeExecution on the executions of this construct's state machine only "
                      "(execution:<its name>:*): the execution names are chosen at deploy time")),
                  NagPackSuppression(id="AwsSolutions-IAM5", applies_to=[_ANY_RESOURCE], reason=_XRAY))

    _suppress(stepmigrate.state_machine.role,
              NagPackSuppression(id="AwsSolutions-IAM5", applies_to=[_ANY_RESOURCE], reason=(
                  "Step Functions logging to CloudWatch Logs uses the log-delivery APIs (logs:CreateLogDelivery, "
                  "...), which take no resource-level permissions; " + _XRAY)),
              NagPackSuppression(
                  id="AwsSolutions-IAM5", applies_to=[_task_definition_revisions(stepmigrate.task_definition.family)],
                  reason=("ecs:RunTask on any revision (<family>:*) of the construct's own task definition family, "
                          "conditioned on its cluster (ecs:cluster): a deploy registers a new revision")),
              NagPackSuppression(id="AwsSolutions-IAM5", applies_to=[_CLUSTER_TASKS], reason=(
                  "ecs:StopTask and ecs:DescribeTasks for runTask.sync on the tasks of the construct's cluster "
                  "(task/<cluster>/*): a task's id exists only once it runs (Step Functions' own example "
                  "policy grants them on *)")))

    # The long-migration task (ECS Fargate).
    _suppress(stepmigrate.task_definition,
              NagPackSuppression(id="AwsSolutions-ECS2", reason=(
                  "The container's environment holds no secret: the database secret's ARN (the worker reads the "
                  "secret itself, with the task role), the database name, the metric namespace and the timeouts, "
                  "the same settings as the apply-one function's environment")))
    _suppress(stepmigrate.task_definition.obtain_execution_role(),
              NagPackSuppression(id="AwsSolutions-IAM5", applies_to=[_ANY_RESOURCE], reason=(
                  "The task execution role CDK makes for an image asset: ecr:GetAuthorizationToken takes no "
                  "resource; the image pull itself is granted on the bootstrap stack's container-assets "
                  "repository only, and the logs on the task's log group only")))

    _suppress(stepmigrate.trigger_provider,
              NagPackSuppression(id="AwsSolutions-IAM4", applies_to=[_BASIC_EXECUTION_ROLE], reason=(
                  "CDK's custom-resource Provider framework functions (not ours) come with the "
                  "AWSLambdaBasicExecutionRole managed policy; the Provider has no option to replace it")),
              NagPackSuppression(id="AwsSolutions-IAM5", applies_to=[_FUNCTION_VERSIONS], reason=(
                  "The Provider framework invokes the trigger functions (and its own) by ARN including their "
                  "versions (<function ARN>:*): lambda:InvokeFunction on those functions only")),
              NagPackSuppression(id="AwsSolutions-IAM5", applies_to=[_ANY_RESOURCE], reason=(
                  "The Provider framework's waiter state machine logs to CloudWatch Logs through the "
                  "log-delivery APIs, which take no resource-level permissions")),
              NagPackSuppression(id="AwsSolutions-SF2", reason=(
                  "The Provider framework's waiter state machine (it polls is_complete) has no X-Ray option; "
                  "the migrations' own state machine and the trigger functions are traced")))
    # An interface endpoint with private DNS serves the whole VPC: its group admits the VPC's
    # CIDR block (a CloudFormation attribute, which EC23's 0.0.0.0/0 check cannot read).
    endpoints = [stepmigrate.secrets_manager_endpoint,
                 *(e for e in stepmigrate.task_endpoints.values() if isinstance(e, ec2.InterfaceVpcEndpoint))]
    for group in {g.node.path: g for e in endpoints if e is not None for g in e.connections.security_groups}.values():
        _suppress(group, NagPackSuppression(
            id="CdkNagValidationFailure", applies_to=["AwsSolutions-EC23"], reason=(
                "The ingress CIDR is the VPC's own CIDR block (Fn::GetAtt Vpc.CidrBlock), never 0.0.0.0/0: the "
                "endpoint's private DNS answers for the whole VPC, whose workloads must keep the service")))


def _suppress(construct: IConstruct | None, *suppressions: NagPackSuppression) -> None:
    if construct is None:
        raise ValueError("no construct to suppress cdk-nag findings on")
    NagSuppressions.add_resource_suppressions(construct, list(suppressions), apply_to_children=True)
