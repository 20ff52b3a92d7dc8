"""The StepMigrate construct: the workers, the state machine, alerts, a dashboard and the
deploy-time trigger that applies the pending migrations during `cdk deploy` whenever the
migration set changed."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aws_cdk import ArnFormat, Aws, CustomResource, Duration, Fn, Names, RemovalPolicy, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as events_targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import custom_resources as cr
from constructs import Construct, IConstruct

from . import nag
from .packaging import TASK_IMAGE_DIR_NAME, Architecture, WorkerPackages, parse_architecture, write_task_image

#: The definition this repository ships (statemachine/ at the repository's root).
DEFAULT_DEFINITION_FILE = Path(__file__).resolve().parents[2] / "statemachine" / "stepmigrate.asl.json"

#: The `${...}` placeholders of the definition that a worker's ARN replaces, and the worker:
#: the state machine may invoke exactly these functions.
FUNCTION_PLACEHOLDERS: Mapping[str, str] = {
    "PlanFunctionArn": "plan",
    "ApplyOneFunctionArn": "apply-one",
    "RecordFunctionArn": "record",
    "NotifyFunctionArn": "notify",
}
#: The placeholders of the long-migration route (ApplyTask, `ecs:runTask.sync`) and what
#: replaces each.
TASK_PLACEHOLDERS: Mapping[str, str] = {
    "TaskClusterArn": "the ECS cluster's ARN",
    "TaskDefinitionArn": "the task definition's ARN (with its revision)",
    "TaskSubnets": "the database workers' subnet ids, joined by ','",
    "TaskSecurityGroups": "the task's security group ids (the workers' and the task's own), joined by ','",
}
#: Every placeholder the construct substitutes, and what replaces it. The definition must use
#: each, and no other: a placeholder left unsubstituted fails the synth.
DEFINITION_PLACEHOLDERS: Mapping[str, str] = {
    **{placeholder: f"the {worker} function's ARN" for placeholder, worker in FUNCTION_PLACEHOLDERS.items()},
    **TASK_PLACEHOLDERS,
}
_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")

#: The task definition's container: the name the definition's ContainerOverrides use.
TASK_CONTAINER_NAME = "stepmigrate"
#: The Step Functions integrations that run an ECS task.
_ECS_RUN_TASK = re.compile(r"^arn:aws:states:::ecs:runTask(\.sync|\.waitForTaskToken)?$")

#: The input of the execution the after-deploy rule starts once a deploy of the stack
#: completed: a plain migrate, which applies what the deploy's own run (the trigger's
#: `skip_after_deploy`) left pending, `after-deploy` migrations first among them.
AFTER_DEPLOY_INPUT: Mapping[str, str] = {"action": "migrate", "source": "after-deploy"}
#: The stack statuses that end a deploy that succeeded (EventBridge's "CloudFormation Stack
#: Status Change" events, `detail.status-details.status`).
DEPLOY_COMPLETE_STATUSES = ("CREATE_COMPLETE", "UPDATE_COMPLETE")

#: The keys of `StepMigrate.functions`.
TRIGGER_ON_EVENT = "trigger-on-event"
TRIGGER_IS_COMPLETE = "trigger-is-complete"


class DefinitionError(ValueError):
    """The state machine definition does not fit the construct (e.g. an unknown placeholder)."""


class TimeoutsError(ValueError):
    """Configured timeouts that do not nest: a worker's connect timeout + lock wait + statement
    timeout (+ a margin) past its Lambda timeout, which would stop the worker before
    PostgreSQL's timeouts answer (`Lambda.Unknown`, nothing recorded); or a deploy-time run that
    cannot report within the Provider's wait."""


#: CloudFormation's limit for a custom resource, and the Provider's wait within it: the
#: deployment fails with the Provider's message, not CloudFormation's.
CLOUDFORMATION_CUSTOM_RESOURCE_LIMIT = Duration.hours(1)
PROVIDER_TOTAL_TIMEOUT = Duration.minutes(55)
PROVIDER_QUERY_INTERVAL = Duration.seconds(15)
#: The workers' connect timeout (STEPMIGRATE_CONNECT_TIMEOUT, not set by the construct).
WORKER_CONNECT_TIMEOUT_SECONDS = 5
#: What a worker keeps of its Lambda timeout for itself: a tenth, at least 5 s (the workers'
#: own `lambda::deadline_margin`, which caps the timeouts at run time the same way).
MIN_DEADLINE_MARGIN_SECONDS = 5


def parse_duration(text: str) -> float:
    """Seconds of a duration as the workers read it: `500ms`, `5s`, `15min`, `1h`, `0` (no limit)."""
    match = re.fullmatch(r"\s*(\d+)\s*(ms|s|min|h)?\s*", text)
    if not match or (match.group(2) is None and match.group(1) != "0"):
        raise TimeoutsError(f"`{text}` is not a duration; write e.g. 500ms, 5s, 15min, 1h")
    return int(match.group(1)) * {"ms": 0.001, "s": 1, "min": 60, "h": 3600, None: 0}[match.group(2)]


def deadline_margin(function_timeout_seconds: float) -> float:
    return max(MIN_DEADLINE_MARGIN_SECONDS, function_timeout_seconds / 10)


#: The memory sizes (MiB) Fargate accepts with each CPU size (units: 1024 = 1 vCPU).
FARGATE_MEMORY_MIB: Mapping[int, tuple[int, ...]] = {
    256: (512, 1024, 2048),
    512: tuple(range(1024, 4096 + 1, 1024)),
    1024: tuple(range(2048, 8192 + 1, 1024)),
    2048: tuple(range(4096, 16384 + 1, 1024)),
    4096: tuple(range(8192, 30720 + 1, 1024)),
    8192: tuple(range(16384, 61440 + 1, 4096)),
    16384: tuple(range(32768, 122880 + 1, 8192)),
}


def check_timeouts_nest(worker: str, function_timeout: Duration, *, lock_wait: str, statement_timeout: str,
                        lock_timeout: str | None = None) -> None:
    """Fails (TimeoutsError) unless connect timeout + lock wait + statement timeout + the margin
    fit in the worker's Lambda timeout, and the lock timeout in the statement timeout."""
    limit = function_timeout.to_seconds()
    wait, statement = parse_duration(lock_wait), parse_duration(statement_timeout)
    if statement == 0:
        raise TimeoutsError(f"{worker}: statement_timeout 0 (no limit) cannot fit in its Lambda timeout of "
                            f"{limit:.0f} s; set a limit")
    margin = deadline_margin(limit)
    total = WORKER_CONNECT_TIMEOUT_SECONDS + wait + statement + margin
    if total > limit:
        raise TimeoutsError(
            f"{worker}: lock_wait {lock_wait} + statement_timeout {statement_timeout} + connect timeout "
            f"{WORKER_CONNECT_TIMEOUT_SECONDS}s + margin {margin:.0f}s = {total:.0f} s, more than the function's "
            f"Lambda timeout of {limit:.0f} s: Lambda would stop the worker before PostgreSQL's timeouts answer "
            f"(Lambda.Unknown, nothing recorded). Lower statement_timeout or lock_wait (they must sum to at most "
            f"{limit - margin - WORKER_CONNECT_TIMEOUT_SECONDS:.0f} s).")
    if lock_timeout is not None and parse_duration(lock_timeout) > statement:
        raise TimeoutsError(f"{worker}: lock_timeout {lock_timeout} is longer than statement_timeout "
                            f"{statement_timeout}, which ends the statement first")


@dataclass(frozen=True, kw_only=True)
class StepMigrateProps:
    """What `StepMigrate` is configured with (its constructor takes these as keyword arguments)."""

    #: The database's VPC: the database workers (plan, apply-one, record) run in it.
    vpc: ec2.IVpc
    #: The database (e.g. an `rds.DatabaseInstance`): its security group is opened to the
    #: workers' security group on its default port.
    database: ec2.IConnectable
    #: The database's Secrets Manager secret in the RDS format (JSON with `username`,
    #: `password`, `host`, `port`; its `dbname` is not used: see `database_name`), e.g.
    #: `rds.DatabaseInstance.secret`.
    database_secret: secretsmanager.ISecret
    #: The database to migrate: env `DB_NAME` of the database workers (which use it over the
    #: secret's `dbname`), and the `Database` dimension of the metrics they report, used by the
    #: alarm and the dashboard (the two always match).
    database_name: str
    #: The worker packages (`build_worker_packages` or `WorkerPackages.from_directory`).
    packages: WorkerPackages
    #: The subnets of the database workers and of the Secrets Manager endpoint. Default: the
    #: VPC's private subnets as CDK picks them (with egress if there are any, else isolated).
    vpc_subnets: ec2.SubnetSelection | None = None
    #: The workers' architecture; default (None) the packages'. It must match the packages.
    architecture: lambda_.Architecture | None = None
    #: Email addresses subscribed to the alert topic (each must confirm its subscription).
    alarm_emails: Sequence[str] = ()
    #: Retention of every log group the construct creates.
    log_retention: logs.RetentionDays = logs.RetentionDays.ONE_MONTH
    #: What happens to those log groups when they leave the stack; default RETAIN (CDK's).
    log_removal_policy: RemovalPolicy | None = None
    #: Default `lock_timeout` of each migration (STEPMIGRATE_LOCK_TIMEOUT, e.g. "5s"); None
    #: keeps the workers' default.
    lock_timeout: str | None = None
    #: Default `statement_timeout` of each migration (apply-one's STEPMIGRATE_STATEMENT_TIMEOUT,
    #: e.g. "10min"); None: 10min. With `lock_wait` it must fit in apply-one's 15-minute Lambda
    #: timeout (less a margin of 90 s and the 5 s connect timeout), or the synth fails.
    statement_timeout: str | None = None
    #: How long apply-one waits for another runner's migration lock (STEPMIGRATE_LOCK_WAIT);
    #: None: 3min.
    lock_wait: str | None = None
    #: The CloudWatch namespace of the workers' metrics (STEPMIGRATE_METRIC_NAMESPACE).
    metric_namespace: str = "Stepmigrate"
    #: Create an interface VPC endpoint for Secrets Manager in `vpc_subnets`: the database
    #: workers have no internet egress. Its private DNS answers `secretsmanager.<region>` for
    #: the whole VPC, so its security group admits 443 from the VPC's CIDR block (every other
    #: workload of the VPC keeps Secrets Manager; a secondary CIDR block is not admitted: add it
    #: to `secrets_manager_endpoint.connections`). Turn it off when the VPC has one already (a
    #: second endpoint with private DNS for the same service cannot be created), and let the
    #: workers reach it: `endpoint.connections.allow_default_port_from(stepmigrate.security_group)`.
    create_secrets_manager_endpoint: bool = True
    #: The long-migration route (a migration planned onto it runs as an ECS Fargate task of
    #: apply-one's binary): the task's CPU units (1024 = 1 vCPU) and memory (MiB), one of the
    #: combinations Fargate accepts.
    task_cpu: int = 1024
    task_memory_mib: int = 2048
    #: The `statement_timeout` of a migration that runs as a task without a directive of its
    #: own (the task's STEPMIGRATE_STATEMENT_TIMEOUT). A task has no Lambda deadline: this is
    #: what ends a runaway statement, so "0" (no limit) is refused, and with the lock wait and
    #: 15 minutes to start it must fit in ApplyTask's TimeoutSeconds (12 h: at most about 11 h).
    task_statement_timeout: str = "4h"
    #: Create what the task needs to start in subnets without internet egress: interface VPC
    #: endpoints for ECR (API and Docker registry) and CloudWatch Logs in `vpc_subnets`, and an
    #: S3 gateway endpoint (the image's layers) on their route tables. Off by default: these
    #: change the whole VPC, not only stepmigrate (private DNS sends every workload's ECR and
    #: Logs calls to the interface endpoints; the gateway endpoint's route carries all S3
    #: traffic of those route tables, and a bucket policy on `aws:SourceIp` no longer sees the
    #: NAT's address). When on, the interface endpoints admit 443 from the VPC's CIDR block and
    #: the S3 endpoint's policy is S3's default (full access), so the rest of the VPC keeps the
    #: services. Leave it off when the VPC has them already (a second one cannot be created) or
    #: the subnets have a NAT route; the task's security group already allows 443 out.
    create_task_endpoints: bool = False
    #: Start an execution once each deploy of the stack completed (an EventBridge rule on the
    #: stack's CREATE_COMPLETE and UPDATE_COMPLETE): it applies the `after-deploy` migrations
    #: (and those that require them), which the deploy's own run leaves pending so that a
    #: deploy never waits for a long data migration. Off: they wait for an operator's
    #: execution (the console's `{}`, `stepmigrate remote start`).
    run_after_deploy: bool = True
    #: How long one apply-one invocation runs batches of a batch migration
    #: (STEPMIGRATE_BATCH_BUDGET) before the loop calls it again. It holds the migration lock
    #: meanwhile: a deploy's run waits at most about this long for an after-deploy backfill.
    batch_budget: str = "2min"
    #: The Amazon States Language definition, with `${...}` placeholders (DEFINITION_PLACEHOLDERS).
    definition_file: Path = field(default=DEFAULT_DEFINITION_FILE)
    #: The dashboard's name; default (None) a name CloudFormation generates.
    dashboard_name: str | None = None

    def __post_init__(self) -> None:
        if not self.database_name:
            raise ValueError("database_name must not be empty: it is the metrics' Database dimension")
        if not self.metric_namespace:
            raise ValueError("metric_namespace must not be empty")
        self.check_timeouts()
        self.check_task()
        budget = parse_duration(self.batch_budget)
        if not 0 < budget <= APPLY_ONE_TIMEOUT_SECONDS - 60:
            raise TimeoutsError(f"batch_budget {self.batch_budget}: must be more than 0 and leave apply-one a minute "
                                f"of its {APPLY_ONE_TIMEOUT_SECONDS // 60}-minute timeout")
        if self.architecture is not None and self.architecture.name != self.packages.architecture:
            raise ValueError(f"architecture {self.architecture.name} does not match the worker packages, "
                             f"built for {self.packages.architecture}")

    def worker_timeouts(self, worker: str) -> dict[str, str]:
        """The timeouts of a database worker (its STEPMIGRATE_* variables): apply-one runs the
        migrations with the configured ones; plan and record run only the ledger's bookkeeping
        in their 2 minutes."""
        if worker == "apply-one":
            timeouts = {"lock_wait": self.lock_wait or APPLY_ONE_LOCK_WAIT,
                        "statement_timeout": self.statement_timeout or APPLY_ONE_STATEMENT_TIMEOUT}
        else:
            timeouts = {"lock_wait": BOOKKEEPING_LOCK_WAIT, "statement_timeout": BOOKKEEPING_STATEMENT_TIMEOUT}
        if self.lock_timeout is not None:
            timeouts["lock_timeout"] = self.lock_timeout
        return timeouts

    @property
    def task_threshold(self) -> str:
        """apply-one's statement timeout: plan's STEPMIGRATE_TASK_THRESHOLD. A migration whose
        own statement_timeout directive is longer (or 0, none), or that says
        `-- stepmigrate: runner = task`, is planned onto the task route."""
        return self.statement_timeout or APPLY_ONE_STATEMENT_TIMEOUT

    def task_timeouts(self) -> dict[str, str]:
        """The task's timeouts: apply-one's, but `task_statement_timeout` for the statements."""
        return {**self.worker_timeouts("apply-one"), "statement_timeout": self.task_statement_timeout}

    def check_task(self) -> None:
        """Fails (ValueError) on a task size Fargate refuses; (TimeoutsError) on a task
        statement timeout that is not a duration, or shorter than the lock timeout."""
        memory = FARGATE_MEMORY_MIB.get(self.task_cpu)
        if memory is None:
            raise ValueError(f"task_cpu {self.task_cpu} is not a Fargate CPU size: use one of "
                             f"{', '.join(map(str, FARGATE_MEMORY_MIB))} (1024 = 1 vCPU)")
        if self.task_memory_mib not in memory:
            raise ValueError(f"task_memory_mib {self.task_memory_mib} does not go with task_cpu {self.task_cpu} "
                             f"on Fargate: use one of {', '.join(map(str, memory))}")
        statement = parse_duration(self.task_statement_timeout)
        if statement == 0:
            # A task has no Lambda deadline: without a statement timeout a hung statement holds
            # the execution (until ApplyTask's TimeoutSeconds) and the migration lock.
            raise TimeoutsError(f"task_statement_timeout {self.task_statement_timeout}: 0 (no limit) is refused: a "
                                "hung statement would hold the execution and the migration lock until ApplyTask's "
                                "TimeoutSeconds; give a duration, e.g. 4h (a migration that needs longer says so "
                                "with its own `-- stepmigrate: statement_timeout = ...` directive)")
        if self.lock_timeout is not None and parse_duration(self.lock_timeout) > statement:
            raise TimeoutsError(f"task: lock_timeout {self.lock_timeout} is longer than task_statement_timeout "
                                f"{self.task_statement_timeout}, which ends the statement first")

    def check_timeouts(self) -> None:
        """Fails the synth (TimeoutsError) when a database worker's timeouts do not nest in its
        Lambda timeout."""
        for spec in _WORKER_SPECS:
            if spec.in_vpc:
                check_timeouts_nest(spec.key, spec.timeout, **self.worker_timeouts(spec.key))

    @property
    def lambda_architecture(self) -> lambda_.Architecture:
        return self.architecture or _lambda_architecture(self.packages.architecture)


def _lambda_architecture(architecture: Architecture) -> lambda_.Architecture:
    return lambda_.Architecture.ARM_64 if parse_architecture(architecture) == "arm64" else lambda_.Architecture.X86_64


@dataclass(frozen=True)
class _WorkerSpec:
    """How one Lambda function of the construct is configured."""

    key: str  # the key in StepMigrate.functions
    construct_id: str
    package: str  # the worker package it runs
    description: str
    memory_mb: int
    timeout: Duration
    in_vpc: bool
    extra_env: Mapping[str, str] = field(default_factory=dict)


#: apply-one's Lambda timeout (Lambda's maximum).
APPLY_ONE_TIMEOUT_SECONDS = 15 * 60
#: apply-one's default timeouts: 3 min + 10 min + 5 s + 90 s margin = 14 min 35 s of its 15 min.
APPLY_ONE_LOCK_WAIT = "3min"
APPLY_ONE_STATEMENT_TIMEOUT = "10min"
#: plan's and record's: 20 s + 60 s + 5 s + 12 s margin = 97 s of their 2 min.
BOOKKEEPING_LOCK_WAIT = "20s"
BOOKKEEPING_STATEMENT_TIMEOUT = "1min"

_WORKER_SPECS: tuple[_WorkerSpec, ...] = (
    _WorkerSpec("plan", "Plan", "plan", "stepmigrate plan: validates the migration set, reads the ledger, plans",
                256, Duration.minutes(2), in_vpc=True),
    # A migration may run long (an index build, a backfill): Lambda's maximum.
    _WorkerSpec("apply-one", "ApplyOne", "apply-one", "stepmigrate apply-one: applies one Map item's migrations",
                256, Duration.seconds(APPLY_ONE_TIMEOUT_SECONDS), in_vpc=True),
    _WorkerSpec("record", "Record", "record", "stepmigrate record: records a failed migration in the ledger",
                256, Duration.minutes(2), in_vpc=True),
    _WorkerSpec("notify", "Notify", "notify", "stepmigrate notify: publishes the failure alert",
                128, Duration.seconds(30), in_vpc=False),
    _WorkerSpec(TRIGGER_ON_EVENT, "TriggerOnEvent", "trigger",
                "stepmigrate trigger (custom resource on_event): starts the migrations' execution",
                128, Duration.minutes(1), in_vpc=False, extra_env={"STEPMIGRATE_TRIGGER_HANDLER": "on_event"}),
    _WorkerSpec(TRIGGER_IS_COMPLETE, "TriggerIsComplete", "trigger",
                "stepmigrate trigger (custom resource is_complete): reports the execution's outcome",
                128, Duration.minutes(1), in_vpc=False, extra_env={"STEPMIGRATE_TRIGGER_HANDLER": "is_complete"}),
)


class StepMigrate(Construct):
    """Applies a repository's PostgreSQL migrations through a Step Functions state machine
    of Rust Lambda workers, during the deployment that changes the migration set, and alerts
    when one fails.

    Creates: the workers (plan, apply-one and record in the database's VPC; notify and the
    trigger outside it), the long-migration route (an ECS cluster and a Fargate task definition
    running apply-one's binary in task mode, in the database's VPC, with the endpoints it needs
    to start there), a Standard state machine from the ASL definition (X-Ray, logging of
    everything), an SNS alert topic encrypted with a customer-managed key, alarms on failed
    executions and on the `MigrationFailures` metric, a dashboard, and a custom resource that
    starts an execution and waits for it (at most 55 minutes) when it is created and whenever
    its properties change: the migration set's digest (a migration added or edited) or the
    state machine's ARN. A deployment that changes neither (only the workers' code, or the
    application) starts no execution. The deployment fails when a migration fails.

    Application resources that need the migrated schema deploy after it with
    `stepmigrate.run_after(fn)` (or `fn.node.add_dependency(stepmigrate.migrations_applied)`).

    Keyword arguments: the fields of `StepMigrateProps`.
    """

    props: StepMigrateProps
    #: The Lambda functions by step: plan, apply-one, record, notify, trigger-on-event,
    #: trigger-is-complete.
    functions: dict[str, lambda_.Function]
    state_machine: sfn.StateMachine
    #: The alert topic: `notify` publishes each failed migration, the alarms their state.
    topic: sns.Topic
    alarms: list[cloudwatch.Alarm]
    dashboard: cloudwatch.Dashboard
    #: The security group of the database workers (outbound: the database and the endpoint).
    security_group: ec2.SecurityGroup
    #: The Secrets Manager endpoint, unless `create_secrets_manager_endpoint` is False.
    secrets_manager_endpoint: ec2.InterfaceVpcEndpoint | None
    #: The CDK Provider that runs the trigger functions for the custom resource.
    trigger_provider: cr.Provider
    #: The long-migration route: the ECS cluster (in the database's VPC) and the Fargate task
    #: definition the state machine runs (container `stepmigrate`: apply-one's binary, command
    #: `bootstrap task`), its role (reads the database secret, nothing else) and log group.
    cluster: ecs.Cluster
    task_definition: ecs.FargateTaskDefinition
    task_role: iam.Role
    task_log_group: logs.LogGroup
    #: The task's own security group (443 out: ECR, CloudWatch Logs, S3); the task also has
    #: `security_group`, the workers', for the database and Secrets Manager.
    task_security_group: ec2.SecurityGroup
    #: The endpoints the task needs to start without internet egress (ECR API, ECR Docker,
    #: CloudWatch Logs, S3 gateway), by service; empty when `create_task_endpoints` is False.
    task_endpoints: dict[str, ec2.InterfaceVpcEndpoint | ec2.GatewayVpcEndpoint]
    #: The custom resource that completes when the pending migrations are applied (but the
    #: `after-deploy` ones).
    migrations_applied: CustomResource
    #: What lets the state machine start its own next execution (StartContinuation).
    continuation_policy: iam.Policy
    #: The EventBridge rule that starts the after-deploy execution once a deploy completed;
    #: None when `run_after_deploy` is False.
    after_deploy_rule: events.Rule | None

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        database: ec2.IConnectable,
        database_secret: secretsmanager.ISecret,
        database_name: str,
        packages: WorkerPackages,
        vpc_subnets: ec2.SubnetSelection | None = None,
        architecture: lambda_.Architecture | None = None,
        alarm_emails: Sequence[str] = (),
        log_retention: logs.RetentionDays = logs.RetentionDays.ONE_MONTH,
        log_removal_policy: RemovalPolicy | None = None,
        lock_timeout: str | None = None,
        statement_timeout: str | None = None,
        lock_wait: str | None = None,
        metric_namespace: str = "Stepmigrate",
        create_secrets_manager_endpoint: bool = True,
        task_cpu: int = 1024,
        task_memory_mib: int = 2048,
        task_statement_timeout: str = "4h",
        create_task_endpoints: bool = False,
        run_after_deploy: bool = True,
        batch_budget: str = "2min",
        definition_file: Path = DEFAULT_DEFINITION_FILE,
        dashboard_name: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.props = StepMigrateProps(
            vpc=vpc, database=database, database_secret=database_secret, database_name=database_name,
            packages=packages, vpc_subnets=vpc_subnets, architecture=architecture, alarm_emails=alarm_emails,
            log_retention=log_retention, log_removal_policy=log_removal_policy, lock_timeout=lock_timeout,
            statement_timeout=statement_timeout, lock_wait=lock_wait, metric_namespace=metric_namespace,
            create_secrets_manager_endpoint=create_secrets_manager_endpoint, task_cpu=task_cpu,
            task_memory_mib=task_memory_mib, task_statement_timeout=task_statement_timeout,
            create_task_endpoints=create_task_endpoints, run_after_deploy=run_after_deploy,
            batch_budget=batch_budget, definition_file=definition_file,
            dashboard_name=dashboard_name)
        # Read first: a definition that does not fit fails the synth before anything is built.
        definition = load_definition(self.props.definition_file)
        check_task_route(json.loads(definition))
        check_deploy_time_run(json.loads(definition))
        check_state_timeouts(json.loads(definition), self.props)

        self.security_group = self._worker_security_group()
        self.secrets_manager_endpoint = self._secrets_manager_endpoint()
        self.topic = self._alert_topic()
        self.functions = {spec.key: self._worker(spec) for spec in _WORKER_SPECS}
        self._grant_workers()
        self._task_route()
        self.state_machine = self._state_machine(definition)
        self._grant_trigger()
        self.alarms = self._alarms()
        self.dashboard = self._dashboard()
        self.after_deploy_rule = self._after_deploy_rule() if self.props.run_after_deploy else None
        self.migrations_applied = self._trigger()
        nag.suppress_construct_findings(self)

    # --- public helpers ------------------------------------------------------------------------

    def run_after(self, *constructs: IConstruct) -> None:
        """Deploys `constructs` (e.g. the application's Lambda functions) only after the
        pending migrations are applied."""
        for construct in constructs:
            construct.node.add_dependency(self.migrations_applied)

    def metric(self, metric_name: str, *, statistic: str = "Sum", period: Duration | None = None,
               label: str | None = None) -> cloudwatch.Metric:
        """A metric the workers report (namespace `metric_namespace`, dimension `Database`),
        by default summed over 5 minutes."""
        return cloudwatch.Metric(namespace=self.props.metric_namespace, metric_name=metric_name,
                                 dimensions_map={"Database": self.props.database_name},
                                 statistic=statistic, period=period or Duration.minutes(5), label=label)

    # --- networking ----------------------------------------------------------------------------

    def _worker_security_group(self) -> ec2.SecurityGroup:
        # No outbound rule but those added below: the database's port and the endpoint's 443.
        sg = ec2.SecurityGroup(self, "WorkerSecurityGroup", vpc=self.props.vpc, allow_all_outbound=False,
                               description="stepmigrate database workers (plan, apply-one, record)")
        self.props.database.connections.allow_default_port_from(sg, "stepmigrate database workers")
        return sg

    def _secrets_manager_endpoint(self) -> ec2.InterfaceVpcEndpoint | None:
        if not self.props.create_secrets_manager_endpoint:
            return None
        endpoint_sg = ec2.SecurityGroup(self, "SecretsManagerEndpointSecurityGroup", vpc=self.props.vpc,
                                        allow_all_outbound=False,
                                        description="Secrets Manager endpoint of the stepmigrate workers")
        endpoint = ec2.InterfaceVpcEndpoint(
            self, "SecretsManagerEndpoint", vpc=self.props.vpc,
            service=ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
            # An interface endpoint takes one subnet per availability zone.
            subnets=ec2.SubnetSelection(subnets=self._worker_subnets().subnets, one_per_az=True),
            private_dns_enabled=True, open=False, security_groups=[endpoint_sg])
        endpoint.connections.allow_default_port_from(self.security_group, "stepmigrate database workers")
        self._admit_the_vpc(endpoint)
        return endpoint

    def _admit_the_vpc(self, endpoint: ec2.InterfaceVpcEndpoint) -> None:
        """An interface endpoint with private DNS answers the service's name for the whole VPC
        ("When you enable private DNS ... requests to the default public DNS name of the service
        resolve to the private IP addresses of the endpoint network interfaces",
        https://docs.aws.amazon.com/vpc/latest/privatelink/privatelink-access-aws-services.html):
        its security group must admit every workload of the VPC, or they lose the service."""
        endpoint.connections.allow_from(ec2.Peer.ipv4(self.props.vpc.vpc_cidr_block), ec2.Port.tcp(443),
                                        "the whole VPC: private DNS resolves the service to this endpoint")

    def _worker_subnets(self) -> ec2.SelectedSubnets:
        """The database workers' subnets (`vpc_subnets`, or CDK's default selection as the
        functions make it): also the endpoints' and the task's."""
        selection = self.props.vpc_subnets or ec2.SubnetSelection()
        return self.props.vpc.select_subnets(
            availability_zones=selection.availability_zones, one_per_az=selection.one_per_az,
            subnet_filters=selection.subnet_filters, subnet_group_name=selection.subnet_group_name,
            subnets=selection.subnets, subnet_type=selection.subnet_type)

    # --- alerts ------------------------------------------------------------------------------------

    def _alert_topic(self) -> sns.Topic:
        key = kms.Key(self, "AlertKey", enable_key_rotation=True,
                      description="Encrypts the stepmigrate alert topic")
        # CloudWatch alarms publish to an encrypted topic only if the key lets them. The
        # statement is AWS's documented one, without conditions: whether CloudWatch sends
        # aws:SourceAccount on its KMS calls is not documented, and an alarm that cannot
        # publish fails silently. Which alarms may publish is limited on the topic instead.
        key.add_to_resource_policy(iam.PolicyStatement(
            sid="AllowCloudWatchAlarmsToPublish",
            principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
            actions=["kms:Decrypt", "kms:GenerateDataKey*"],
            resources=["*"]))  # in a key policy, "*" is this key
        topic = sns.Topic(self, "AlertTopic", display_name="stepmigrate alerts", master_key=key, enforce_ssl=True)
        # enforce_ssl gives the topic a policy holding only its Deny statement, which replaces
        # the default policy that let CloudWatch alarms publish: allow this account's alarms.
        topic.add_to_resource_policy(iam.PolicyStatement(
            sid="AllowCloudWatchAlarmsToPublish",
            principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
            actions=["sns:Publish"],
            resources=[topic.topic_arn],
            conditions={
                "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID},
                "ArnLike": {"aws:SourceArn": f"arn:{Aws.PARTITION}:cloudwatch:{Aws.REGION}:{Aws.ACCOUNT_ID}:alarm:*"},
            }))
        for email in self.props.alarm_emails:
            topic.add_subscription(subscriptions.EmailSubscription(email))
        return topic

    # --- the workers -----------------------------------------------------------------------------

    def _worker(self, spec: _WorkerSpec) -> lambda_.Function:
        log_group = logs.LogGroup(self, f"{spec.construct_id}LogGroup", retention=self.props.log_retention,
                                  removal_policy=self.props.log_removal_policy)
        environment = {"STEPMIGRATE_METRIC_NAMESPACE": self.props.metric_namespace, **spec.extra_env}
        if spec.in_vpc:
            environment.update(self._database_environment(self.props.worker_timeouts(spec.key)))
        if spec.key == "plan":
            # A migration that needs longer than apply-one's statement timeout (its directive
            # says so, or 0) or says `runner = task` is planned onto the task route.
            environment["STEPMIGRATE_TASK_THRESHOLD"] = self.props.task_threshold
        if spec.key == "apply-one":
            # A batch migration's invocation holds the migration lock while it runs batches:
            # a short one lets the deploy's own run in between (an after-deploy backfill may
            # loop for hours while deploys go on).
            environment["STEPMIGRATE_BATCH_BUDGET"] = self.props.batch_budget
        return lambda_.Function(
            self, spec.construct_id,
            description=spec.description,
            runtime=lambda_.Runtime.PROVIDED_AL2023,
            handler="bootstrap",
            architecture=self.props.lambda_architecture,
            code=lambda_.Code.from_asset(str(self.props.packages.directory(spec.package))),
            memory_size=spec.memory_mb,
            timeout=spec.timeout,
            tracing=lambda_.Tracing.ACTIVE,
            log_group=log_group,
            role=self._worker_role(spec, log_group),
            environment=environment,
            vpc=self.props.vpc if spec.in_vpc else None,
            vpc_subnets=self.props.vpc_subnets if spec.in_vpc else None,
            security_groups=[self.security_group] if spec.in_vpc else None,
        )

    def _database_environment(self, timeouts: Mapping[str, str]) -> dict[str, str]:
        """How a database worker (or the task) reaches the database: the secret's ARN (never
        its value: the worker reads it from Secrets Manager), the database, the timeouts."""
        # DB_NAME wins over the secret's dbname (which a secret generated by RDS may lack): the
        # database the workers migrate is the one the metrics' Database dimension names.
        env = {"DB_SECRET_ARN": self.props.database_secret.secret_arn, "DB_NAME": self.props.database_name}
        # The functions' timeouts nest in their Lambda timeout (checked by StepMigrateProps; the
        # workers also cap them at run time from the invocation's deadline).
        variables = {"lock_wait": "STEPMIGRATE_LOCK_WAIT", "statement_timeout": "STEPMIGRATE_STATEMENT_TIMEOUT",
                     "lock_timeout": "STEPMIGRATE_LOCK_TIMEOUT"}
        for key, value in timeouts.items():
            env[variables[key]] = value
        return env

    def _worker_role(self, spec: _WorkerSpec, log_group: logs.LogGroup) -> iam.Role:
        """A role of its own per function, with its log group only (rather than the
        AWSLambdaBasicExecutionRole managed policy: logs on every log group)."""
        role = iam.Role(self, f"{spec.construct_id}Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                        description=f"stepmigrate {spec.key} worker")
        role.add_to_policy(iam.PolicyStatement(actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                                               resources=[log_group.log_group_arn]))
        if spec.in_vpc:
            # What AWSLambdaVPCAccessExecutionRole grants: Lambda manages the function's network
            # interfaces with the role. EC2 supports no resource scoping for the Describe calls.
            role.add_to_policy(iam.PolicyStatement(
                actions=["ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets",
                         "ec2:DeleteNetworkInterface", "ec2:AssignPrivateIpAddresses",
                         "ec2:UnassignPrivateIpAddresses"],
                resources=["*"]))
        return role

    def _grant_workers(self) -> None:
        for key in ("plan", "apply-one", "record"):
            self.props.database_secret.grant_read(self.functions[key])
        notify = self.functions["notify"]
        notify.add_environment("SNS_TOPIC_ARN", self.topic.topic_arn)
        # The database a plan failure's alert and metric name (the failure has none): the
        # alarm's Database dimension.
        notify.add_environment("DB_NAME", self.props.database_name)
        self.topic.grant_publish(notify)
        # PutMetricData takes no resource; the condition keeps it to our namespace.
        notify.add_to_role_policy(iam.PolicyStatement(
            actions=["cloudwatch:PutMetricData"], resources=["*"],
            conditions={"StringEquals": {"cloudwatch:namespace": self.props.metric_namespace}}))

    # --- the long-migration route ------------------------------------------------------------------

    def _task_route(self) -> None:
        """The ECS side of ApplyTask: a cluster in the database's VPC and a Fargate task
        definition whose one container runs apply-one's package in task mode."""
        self.task_security_group = self._task_security_group()
        self.task_endpoints = self._task_endpoints()
        self.cluster = ecs.Cluster(self, "TaskCluster", vpc=self.props.vpc,
                                   container_insights_v2=ecs.ContainerInsights.ENABLED)
        self.task_log_group = logs.LogGroup(self, "TaskLogGroup", retention=self.props.log_retention,
                                            removal_policy=self.props.log_removal_policy)
        # What the migration may do in AWS: read the database secret, nothing else.
        self.task_role = iam.Role(self, "TaskRole", assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
                                  description="stepmigrate apply-one task (long migrations)")
        self.props.database_secret.grant_read(self.task_role)
        arm64 = parse_architecture(self.props.packages.architecture) == "arm64"
        self.task_definition = ecs.FargateTaskDefinition(
            self, "TaskDefinition",
            cpu=self.props.task_cpu, memory_limit_mib=self.props.task_memory_mib,
            runtime_platform=ecs.RuntimePlatform(
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
                cpu_architecture=ecs.CpuArchitecture.ARM64 if arm64 else ecs.CpuArchitecture.X86_64),
            task_role=self.task_role)
        # An execution that outlives a deploy (a long backfill, a task past the Provider's
        # hour) runs the task definition revision its plan was made with: its image holds the
        # migrations of that plan's set (a newer revision's would be refused as another set).
        # CloudFormation deregisters a replaced revision, and RunTask refuses an INACTIVE one
        # ("You can't use an INACTIVE task definition to run new tasks",
        # https://docs.aws.amazon.com/AmazonECS/latest/developerguide/deregister-task-definition-v2.html),
        # which would fail the execution with TaskFailed: old revisions are retained (ACTIVE, free).
        self.task_definition.apply_removal_policy(RemovalPolicy.RETAIN)
        # The image's build context, beside the packages; CDK stages it at synth (no Docker),
        # `cdk deploy` builds it for the packages' platform and pushes it to the bootstrap
        # stack's repository. The execution role CDK makes pulls it and writes the log group.
        apply_one = self.props.packages.apply_one
        image_dir = write_task_image(apply_one, apply_one.parent / TASK_IMAGE_DIR_NAME)
        self.task_definition.add_container(
            "Container",
            container_name=TASK_CONTAINER_NAME,
            image=ecs.ContainerImage.from_asset(
                str(image_dir),
                platform=ecr_assets.Platform.LINUX_ARM64 if arm64 else ecr_assets.Platform.LINUX_AMD64),
            essential=True,
            logging=ecs.LogDrivers.aws_logs(stream_prefix="task", log_group=self.task_log_group),
            environment={"STEPMIGRATE_METRIC_NAMESPACE": self.props.metric_namespace,
                         **self._database_environment(self.props.task_timeouts())},
        )

    def _task_security_group(self) -> ec2.SecurityGroup:
        sg = ec2.SecurityGroup(self, "TaskSecurityGroup", vpc=self.props.vpc, allow_all_outbound=False,
                               description="stepmigrate task: 443 out for its image (ECR, S3) and its logs")
        # Fargate pulls the image and ships the logs through the task's network interface. The
        # layers come from S3, whose gateway endpoint has no address a rule could name (the S3
        # prefix list's id is not a CloudFormation attribute): 443 to any address, which in
        # subnets without internet egress reaches only the VPC's endpoints and S3.
        sg.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(443),
                           "ECR, its image layers in S3, CloudWatch Logs (the awslogs driver)")
        return sg

    def _task_endpoints(self) -> dict[str, ec2.InterfaceVpcEndpoint | ec2.GatewayVpcEndpoint]:
        if not self.props.create_task_endpoints:
            return {}
        endpoint_sg = ec2.SecurityGroup(self, "TaskEndpointSecurityGroup", vpc=self.props.vpc,
                                        allow_all_outbound=False,
                                        description="ECR and CloudWatch Logs endpoints of the stepmigrate task")
        endpoint_sg.add_ingress_rule(self.task_security_group, ec2.Port.tcp(443),
                                     "stepmigrate task: its image and its logs")
        endpoint_sg.add_ingress_rule(ec2.Peer.ipv4(self.props.vpc.vpc_cidr_block), ec2.Port.tcp(443),
                                     "the whole VPC: private DNS resolves the service to this endpoint")
        subnets = self._worker_subnets()
        endpoints: dict[str, ec2.InterfaceVpcEndpoint | ec2.GatewayVpcEndpoint] = {
            key: ec2.InterfaceVpcEndpoint(
                self, construct_id, vpc=self.props.vpc, service=service,
                subnets=ec2.SubnetSelection(subnets=subnets.subnets, one_per_az=True),
                private_dns_enabled=True, open=False, security_groups=[endpoint_sg])
            for key, construct_id, service in (
                ("ecr", "EcrApiEndpoint", ec2.InterfaceVpcEndpointAwsService.ECR),
                ("ecr-docker", "EcrDockerEndpoint", ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER),
                ("logs", "LogsEndpoint", ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS))
        }
        s3 = ec2.GatewayVpcEndpoint(self, "S3Endpoint", vpc=self.props.vpc,
                                    service=ec2.GatewayVpcEndpointAwsService.S3,
                                    subnets=[ec2.SubnetSelection(subnets=subnets.subnets)])
        # No policy of ours: the route serves every workload in those route tables' subnets, and
        # a gateway endpoint's policy restricts all of their S3 calls (ECR's layer bucket alone
        # would cut every other workload off S3). S3's default policy is full access.
        endpoints["s3"] = s3
        return endpoints

    def _task_substitutions(self) -> dict[str, str]:
        """What replaces TASK_PLACEHOLDERS: ApplyTask runs the task definition in the cluster,
        in the workers' subnets, with the workers' security group (the database, Secrets
        Manager) and the task's own (its image and logs)."""
        return {
            "TaskClusterArn": self.cluster.cluster_arn,
            "TaskDefinitionArn": self.task_definition.task_definition_arn,
            "TaskSubnets": Fn.join(",", self._worker_subnets().subnet_ids),
            "TaskSecurityGroups": Fn.join(",", [self.security_group.security_group_id,
                                                self.task_security_group.security_group_id]),
        }

    def _grant_task_route(self, state_machine: sfn.StateMachine) -> None:
        """What ApplyTask (`ecs:runTask.sync`) needs, as Step Functions' "IAM policies for
        Amazon ECS/AWS Fargate" lists it, scoped further where ECS allows."""
        stack = Stack.of(self)
        # Any revision of our task definition's family, in our cluster only.
        state_machine.add_to_role_policy(iam.PolicyStatement(
            actions=["ecs:RunTask"],
            resources=[stack.format_arn(service="ecs", resource="task-definition",
                                        resource_name=f"{self.task_definition.family}:*")],
            conditions={"ArnEquals": {"ecs:cluster": self.cluster.cluster_arn}}))
        # The task's id is known only once it runs: the cluster's tasks (task/<cluster>/<id>,
        # the task ARN format of every account since 2021), where AWS's example has `*`.
        state_machine.add_to_role_policy(iam.PolicyStatement(
            actions=["ecs:StopTask", "ecs:DescribeTasks"],
            resources=[stack.format_arn(service="ecs", resource="task",
                                        resource_name=f"{self.cluster.cluster_name}/*")]))
        state_machine.add_to_role_policy(iam.PolicyStatement(
            actions=["iam:PassRole"],
            resources=[self.task_role.role_arn, self.task_definition.obtain_execution_role().role_arn],
            conditions={"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}))
        # .sync learns that the task stopped from this EventBridge rule, managed by Step Functions.
        state_machine.add_to_role_policy(iam.PolicyStatement(
            actions=["events:PutTargets", "events:PutRule", "events:DescribeRule"],
            resources=[stack.format_arn(service="events", resource="rule",
                                        resource_name="StepFunctionsGetEventsForECSTaskRule")]))

    # --- the state machine -------------------------------------------------------------------------

    def _state_machine(self, definition: str) -> sfn.StateMachine:
        log_group = logs.LogGroup(
            self, "StateMachineLogGroup",
            # Step Functions' vended-logs prefix keeps the CloudWatch Logs resource policy small.
            # The stack's UUID makes the name unique per stack instance (see _vended_log_group_name).
            log_group_name=self._vended_log_group_name("StateMachine"),
            retention=self.props.log_retention, removal_policy=self.props.log_removal_policy)
        state_machine = sfn.StateMachine(
            self, "StateMachine",
            comment="stepmigrate: applies the pending PostgreSQL migrations, one traced step per migration",
            definition_body=sfn.DefinitionBody.from_string(definition),
            definition_substitutions=self._definition_substitutions(),
            state_machine_type=sfn.StateMachineType.STANDARD,
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=True),
        )
        # Exactly the four functions the definition invokes, unqualified as it names them.
        state_machine.add_to_role_policy(iam.PolicyStatement(
            actions=["lambda:InvokeFunction"],
            resources=[self.functions[worker].function_arn for worker in FUNCTION_PLACEHOLDERS.values()]))
        self._grant_task_route(state_machine)
        # StartContinuation (`states:startExecution`): a migrate whose batch migration used its
        # share of the history budget continues in a new execution of this state machine, as
        # Step Functions' "IAM policies for starting a new execution" lists it (Request
        # Response: StartExecution on the state machine). A policy of its own: the role's
        # default policy cannot name the state machine, which depends on it (a cycle).
        self.continuation_policy = iam.Policy(
            self, "ContinuationPolicy", roles=[state_machine.role],
            statements=[iam.PolicyStatement(actions=["states:StartExecution"],
                                            resources=[state_machine.state_machine_arn])])
        return state_machine

    def _definition_substitutions(self) -> dict[str, str]:
        substitutions = {placeholder: self.functions[worker].function_arn
                         for placeholder, worker in FUNCTION_PLACEHOLDERS.items()}
        substitutions.update(self._task_substitutions())
        # load_definition checked the definition against DEFINITION_PLACEHOLDERS: each of them
        # must be substituted here, or CloudFormation would leave a `${...}` in the definition.
        if substitutions.keys() != DEFINITION_PLACEHOLDERS.keys():
            raise DefinitionError(f"the construct substitutes {sorted(substitutions)}, not the placeholders it "
                                  f"declares: {sorted(DEFINITION_PLACEHOLDERS)}")
        return substitutions

    def _grant_trigger(self) -> None:
        on_event, is_complete = self.functions[TRIGGER_ON_EVENT], self.functions[TRIGGER_IS_COMPLETE]
        self.state_machine.grant_start_execution(on_event)
        executions = Stack.of(self).format_arn(
            service="states", resource="execution",
            resource_name=f"{self.state_machine.state_machine_name}:*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME)
        for fn in (on_event, is_complete):
            fn.add_to_role_policy(iam.PolicyStatement(actions=["states:DescribeExecution"], resources=[executions]))
        # on_event never fails a rollback: it asks whether its own stack is rolling back.
        on_event.add_to_role_policy(iam.PolicyStatement(actions=["cloudformation:DescribeStacks"],
                                                        resources=[Aws.STACK_ID]))

    # --- alarms and dashboard ----------------------------------------------------------------------

    def _alarms(self) -> list[cloudwatch.Alarm]:
        five_minutes = Duration.minutes(5)
        sm = self.state_machine
        # One alarm per way an execution can end badly: the alarm's name says which.
        executions = (
            ("ExecutionsFailed", "failed", sm.metric_failed(period=five_minutes, statistic="Sum")),
            ("ExecutionsTimedOut", "timed out", sm.metric_timed_out(period=five_minutes, statistic="Sum")),
            ("ExecutionsAborted", "was aborted", sm.metric_aborted(period=five_minutes, statistic="Sum")),
        )
        alarms = [self._alarm(f"{name}Alarm", metric,
                              f"A stepmigrate execution {what}: see the state machine's executions")
                  for name, what, metric in executions]
        alarms.append(self._alarm(
            "MigrationFailuresAlarm", self.metric("MigrationFailures"),
            f"A migration of {self.props.database_name} failed (MigrationFailures, reported by notify)"))
        return alarms

    def _alarm(self, construct_id: str, metric: cloudwatch.IMetric, description: str) -> cloudwatch.Alarm:
        alarm = cloudwatch.Alarm(
            self, construct_id, metric=metric, alarm_description=description, threshold=1, evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING)
        alarm.add_alarm_action(cw_actions.SnsAction(self.topic))
        return alarm

    def _dashboard(self) -> cloudwatch.Dashboard:
        sm = self.state_machine
        workers = [self.functions[key] for key in ("plan", "apply-one", "record", "notify")]
        dashboard = cloudwatch.Dashboard(self, "Dashboard", dashboard_name=self.props.dashboard_name)
        dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Executions", width=12, left=[
                sm.metric_started(statistic="Sum"), sm.metric_succeeded(statistic="Sum"),
                sm.metric_failed(statistic="Sum"), sm.metric_timed_out(statistic="Sum"),
                sm.metric_aborted(statistic="Sum")]),
            cloudwatch.GraphWidget(title=f"Migration duration (ms), {self.props.database_name}", width=12, left=[
                self.metric("MigrationDuration", statistic="Average", label="average"),
                self.metric("MigrationDuration", statistic="p99", label="p99"),
                self.metric("MigrationDuration", statistic="Maximum", label="maximum")]),
        )
        dashboard.add_widgets(
            cloudwatch.GraphWidget(title=f"Migrations, {self.props.database_name}", width=12, left=[
                self.metric("MigrationsApplied", label="applied"),
                self.metric("MigrationsFailed", label="failed"),
                self.metric("MigrationFailures", label="alerted failures")]),
            cloudwatch.GraphWidget(title=f"Pending migrations at plan, {self.props.database_name}", width=12, left=[
                self.metric("PendingMigrations", statistic="Maximum", label="pending")]),
        )
        dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Worker errors", width=12,
                                   left=[fn.metric_errors(statistic="Sum") for fn in workers]),
            cloudwatch.GraphWidget(title="Worker duration (p99, ms)", width=12,
                                   left=[fn.metric_duration(statistic="p99") for fn in workers]),
        )
        return dashboard

    # --- the deploy-time trigger -------------------------------------------------------------------

    def _trigger(self) -> CustomResource:
        provider_logs = logs.LogGroup(self, "TriggerProviderLogGroup", retention=self.props.log_retention,
                                      removal_policy=self.props.log_removal_policy)
        waiter_logs = logs.LogGroup(
            self, "TriggerWaiterLogGroup",
            log_group_name=self._vended_log_group_name("TriggerWaiter"),
            retention=self.props.log_retention, removal_policy=self.props.log_removal_policy)
        self.trigger_provider = provider = cr.Provider(
            self, "TriggerProvider",
            on_event_handler=self.functions[TRIGGER_ON_EVENT],
            is_complete_handler=self.functions[TRIGGER_IS_COMPLETE],
            query_interval=PROVIDER_QUERY_INTERVAL,
            # CloudFormation gives a custom resource one hour: the Provider gives up first, so
            # the deployment fails with its timeout message rather than CloudFormation's. The
            # execution is NOT stopped when the Provider gives up: it runs on, and its outcome
            # is in the state machine's executions (console, `aws stepfunctions list-executions
            # --state-machine-arn <MigrationsStateMachineArn>`; the execution's name starts with
            # the stack's name), its log group and the alarms.
            total_timeout=PROVIDER_TOTAL_TIMEOUT,
            log_group=provider_logs,
            # CDK leaves the waiter's logging off unless told otherwise.
            disable_waiter_state_machine_logging=False,
            waiter_state_machine_log_options=cr.LogOptions(destination=waiter_logs, level=sfn.LogLevel.ALL))
        resource = CustomResource(
            self, "MigrationsApplied",
            service_token=provider.service_token,
            resource_type="Custom::StepMigrateMigrations",
            # Only a change of these properties is an update (and starts an execution): a
            # deployment that changes only the workers' code or the application runs nothing.
            properties={
                "StateMachineArn": self.state_machine.state_machine_arn,
                # A new digest (a migration added or edited) is an update: a new execution.
                "MigrationSetHash": self.props.packages.migration_set_digest,
                # The after-deploy rule's ARN ("" without one). A rule created in this very
                # deploy may not be delivering events yet when the deploy completes (EventBridge
                # changes are eventually consistent): on that deploy (the first, or the one that
                # turns it on) the trigger does not defer the after-deploy migrations but runs
                # them all, so none waits for an event the rule might miss.
                "AfterDeployRule": self.after_deploy_rule.rule_arn if self.after_deploy_rule else "",
            })
        # The execution needs more than the state machine it names: the workers' policies, the
        # database itself and the network paths to it and to Secrets Manager, none of which the
        # properties reference.
        for dependency in self._execution_prerequisites():
            resource.node.add_dependency(dependency)
        return resource

    def _after_deploy_rule(self) -> events.Rule:
        """Starts the after-deploy execution when the stack's deploy completed: the new
        workers (and their migrations) are in place then, and nothing waits for it. A deploy
        that rolled back ends in another status and starts nothing. A failed start (after
        EventBridge's retries) raises the `AfterDeployStartFailed` alarm."""
        rule = events.Rule(
            self, "AfterDeployRule",
            description="stepmigrate: applies the after-deploy migrations once a deploy of the stack completed",
            event_pattern=events.EventPattern(
                source=["aws.cloudformation"],
                detail_type=["CloudFormation Stack Status Change"],
                detail={"stack-id": [Aws.STACK_ID],
                        "status-details": {"status": list(DEPLOY_COMPLETE_STATUSES)}}),
            targets=[events_targets.SfnStateMachine(
                self.state_machine, input=events.RuleTargetInput.from_object(dict(AFTER_DEPLOY_INPUT)),
                retry_attempts=185, max_event_age=Duration.hours(24))])
        failed = cloudwatch.Metric(namespace="AWS/Events", metric_name="FailedInvocations",
                                   dimensions_map={"RuleName": rule.rule_name}, statistic="Sum",
                                   period=Duration.minutes(5))
        self.alarms.append(self._alarm(
            "AfterDeployStartFailedAlarm", failed,
            "EventBridge could not start the after-deploy execution: the after-deploy migrations wait "
            "(start an execution with input {} from the console or `stepmigrate remote start`)"))
        return rule

    def _vended_log_group_name(self, suffix: str) -> str:
        """`/aws/vendedlogs/states/<unique id>-<suffix>-<the stack's UUID>`. The log groups are
        retained by default: with a fixed name, a stack whose first deployment rolled back (or
        that was deleted) could not be created again ("already exists"). The UUID of the stack
        id (`arn:...:stack/<name>/<uuid>`) is new for every stack instance."""
        stack_uuid = Fn.select(2, Fn.split("/", Aws.STACK_ID))
        return f"/aws/vendedlogs/states/{Names.unique_id(self)}-{suffix}-{stack_uuid}"

    def _execution_prerequisites(self) -> list[IConstruct]:
        prerequisites: list[IConstruct] = [self.state_machine, self.continuation_policy, self.security_group,
                                           *self.functions.values()]
        if self.secrets_manager_endpoint is not None:
            prerequisites.append(self.secrets_manager_endpoint)
            prerequisites.extend(self.secrets_manager_endpoint.connections.security_groups)
        # A long migration runs as a task: its cluster, definition (with its execution role),
        # role, security group and the endpoints it starts through.
        prerequisites += [self.cluster, self.task_definition, self.task_role, self.task_security_group]
        for endpoint in self.task_endpoints.values():
            prerequisites.append(endpoint)
            if isinstance(endpoint, ec2.InterfaceVpcEndpoint):
                prerequisites.extend(endpoint.connections.security_groups)
        for candidate in (self.props.database, self.props.database_secret):
            if isinstance(candidate, Construct):
                prerequisites.append(candidate)
        prerequisites.extend(self.props.database.connections.security_groups)
        return prerequisites



def load_definition(path: Path) -> str:
    """The definition as a compact JSON string, checked against the placeholders the
    construct substitutes (DEFINITION_PLACEHOLDERS): an unknown placeholder, which
    CloudFormation would leave in the definition, or a missing one, fails the synth."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DefinitionError(f"cannot read the state machine definition {path}: {err}") from err
    text = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
    found = set(_PLACEHOLDER.findall(text))
    unknown = sorted(found - DEFINITION_PLACEHOLDERS.keys())
    missing = [p for p in DEFINITION_PLACEHOLDERS if p not in found]
    if unknown:
        raise DefinitionError(
            f"{path} has placeholders that StepMigrate does not substitute: "
            f"{', '.join('${' + p + '}' for p in unknown)}; it substitutes "
            f"{', '.join('${' + p + '}' for p in DEFINITION_PLACEHOLDERS)} "
            "(stepmigrate_cdk/construct.py, DEFINITION_PLACEHOLDERS)")
    if missing:
        raise DefinitionError(
            f"{path} does not use {', '.join('${' + p + '}' for p in missing)}: the construct would grant "
            "the state machine what it never uses (a function it never invokes, a task it never runs); "
            "update FUNCTION_PLACEHOLDERS / TASK_PLACEHOLDERS with the definition")
    return text


def _task_states(states: Mapping[str, Mapping[str, object]]) -> dict[str, Mapping[str, object]]:
    return {name: state for name, state in states.items()
            if isinstance(state.get("Resource"), str) and _ECS_RUN_TASK.match(str(state["Resource"]))}


def check_task_route(definition: Mapping[str, object]) -> None:
    """Fails the synth (DefinitionError) unless each state that runs an ECS task runs it on
    Fargate and overrides only the task definition's container (`stepmigrate`): ECS refuses
    an override of a container the task definition does not have, at run time."""
    for name, state in _task_states(_states(definition["States"])).items():  # type: ignore[arg-type]
        parameters = state.get("Parameters")
        if not isinstance(parameters, Mapping):
            raise DefinitionError(f"the definition's state {name} runs an ECS task without Parameters")
        if parameters.get("LaunchType") != "FARGATE":
            raise DefinitionError(f"the definition's state {name} must run its task with LaunchType FARGATE "
                                  "(the construct's task definition is a Fargate one)")
        overrides = parameters.get("Overrides", {})
        containers = overrides.get("ContainerOverrides", []) if isinstance(overrides, Mapping) else []
        names = {c.get("Name") for c in containers if isinstance(c, Mapping)}  # type: ignore[union-attr]
        if names - {TASK_CONTAINER_NAME}:
            raise DefinitionError(f"the definition's state {name} overrides the container(s) "
                                  f"{', '.join(sorted(map(str, names - {TASK_CONTAINER_NAME})))}: the task "
                                  f"definition's only container is `{TASK_CONTAINER_NAME}`")


def _retry_delays(retrier: Mapping[str, object]) -> float:
    """The longest a retrier waits in all, without jitter."""
    interval = float(retrier.get("IntervalSeconds", 1))  # type: ignore[arg-type]
    rate = float(retrier.get("BackoffRate", 2.0))  # type: ignore[arg-type]
    cap = retrier.get("MaxDelaySeconds")
    delays = (interval * rate ** i for i in range(int(retrier.get("MaxAttempts", 3))))  # type: ignore[call-overload]
    return sum(min(d, float(cap)) if cap else d for d in delays)  # type: ignore[arg-type]


def _states(states: Mapping[str, object]) -> dict[str, Mapping[str, object]]:
    found: dict[str, Mapping[str, object]] = {}
    for name, state in states.items():
        assert isinstance(state, Mapping)
        found[name] = state
        processor = state.get("ItemProcessor") or state.get("Iterator")
        if isinstance(processor, Mapping):
            found.update(_states(processor["States"]))
    return found


#: The Task states a deploy-time run that fails on its first migration goes through, and the
#: worker each invokes.
_FAILING_RUN_PATH: Mapping[str, str] = {"Plan": "plan", "ApplyOne": "apply-one", "Record": "record",
                                        "NotifyFailure": "notify"}


def check_deploy_time_run(definition: Mapping[str, object]) -> None:
    """Fails the synth (TimeoutsError) unless the Provider gives up within CloudFormation's hour,
    and a deploy-time run whose first migration fails can report it within the Provider's wait:
    onEvent, then one attempt of each step on that path (plan, apply-one, record, notify: their
    Lambda timeouts) and every retry delay the definition gives those steps, then one poll."""
    if PROVIDER_TOTAL_TIMEOUT.to_seconds() + PROVIDER_QUERY_INTERVAL.to_seconds() > \
            CLOUDFORMATION_CUSTOM_RESOURCE_LIMIT.to_seconds():
        raise TimeoutsError("the Provider's total timeout must end within CloudFormation's hour")
    states = _states(definition["States"])  # type: ignore[arg-type]
    timeouts = {spec.key: spec.timeout.to_seconds() for spec in _WORKER_SPECS}
    parts = [("onEvent", timeouts[TRIGGER_ON_EVENT]), ("one poll", PROVIDER_QUERY_INTERVAL.to_seconds())]
    for state_name, worker in _FAILING_RUN_PATH.items():
        state = states.get(state_name)
        if state is None:
            raise TimeoutsError(f"the definition has no state {state_name}")
        retries = sum(_retry_delays(r) for r in state.get("Retry", []))  # type: ignore[union-attr]
        parts.append((f"{state_name} ({worker} {timeouts[worker]:.0f} s + retries {retries:.0f} s)",
                      timeouts[worker] + retries))
    total = sum(seconds for _, seconds in parts)
    if total > PROVIDER_TOTAL_TIMEOUT.to_seconds():
        raise TimeoutsError(
            f"a deploy-time run that fails on its first migration may take {total:.0f} s ("
            + " + ".join(name for name, _ in parts)
            + f"), more than the Provider's {PROVIDER_TOTAL_TIMEOUT.to_seconds():.0f} s: CloudFormation would "
            "fail the deployment without the migration's error. Shorten the definition's retries.")


#: What the task needs beyond its lock wait and statement timeout before ApplyTask's
#: TimeoutSeconds: Fargate's provisioning and image pull, the connection, its bookkeeping.
TASK_START_MARGIN_SECONDS = 15 * 60


def _lambda_worker_of(resource: object) -> str | None:
    """The worker a Lambda Task state's Resource (`${PlanFunctionArn}`, ...) invokes."""
    match = _PLACEHOLDER.fullmatch(resource) if isinstance(resource, str) else None
    return FUNCTION_PLACEHOLDERS.get(match.group(1)) if match else None


def check_state_timeouts(definition: Mapping[str, object], props: StepMigrateProps) -> None:
    """Fails the synth (TimeoutsError) unless every Task state has a TimeoutSeconds and the
    timeouts nest: state > Lambda > database. Step Functions gives a Task state with no
    TimeoutSeconds no limit but the execution's year ("By default, the Amazon States Language
    doesn't specify timeouts ... an execution is stuck waiting for a response that will never
    come": https://docs.aws.amazon.com/step-functions/latest/dg/sfn-stuck-execution.html).
    A Lambda Task's TimeoutSeconds must outlast its function's timeout (Lambda's own timeout,
    then the worker's database timeouts inside it, answer first); ApplyTask's must outlast the
    task's lock wait + task_statement_timeout + connect timeout + TASK_START_MARGIN_SECONDS.
    No HeartbeatSeconds: neither a Lambda invocation nor `ecs:runTask.sync` sends heartbeats
    (SendTaskHeartbeat is for task tokens), so one would fail every long task."""
    timeouts = {spec.key: spec.timeout.to_seconds() for spec in _WORKER_SPECS}
    task = props.task_timeouts()
    task_needs = (parse_duration(task["lock_wait"]) + parse_duration(task["statement_timeout"])
                  + WORKER_CONNECT_TIMEOUT_SECONDS + TASK_START_MARGIN_SECONDS)
    for name, state in _states(definition["States"]).items():  # type: ignore[arg-type]
        if state.get("Type") != "Task":
            continue
        seconds = state.get("TimeoutSeconds")
        if not isinstance(seconds, int) or isinstance(seconds, bool) or seconds <= 0:
            raise TimeoutsError(f"the definition's Task state {name} has no TimeoutSeconds (or not a positive integer): "
                                "without one a hung task holds the execution for up to a year")
        if "HeartbeatSeconds" in state:
            raise TimeoutsError(f"the definition's Task state {name} has HeartbeatSeconds: nothing sends it heartbeats")
        worker = _lambda_worker_of(state.get("Resource"))
        if worker is not None and seconds <= timeouts[worker]:
            raise TimeoutsError(f"the definition's Task state {name}: TimeoutSeconds {seconds} must be longer than "
                                f"the {worker} function's timeout of {timeouts[worker]:.0f} s (state > Lambda > database)")
        if _ECS_RUN_TASK.match(str(state.get("Resource"))) and seconds < task_needs:
            raise TimeoutsError(
                f"task_statement_timeout {props.task_statement_timeout}: the task's lock wait "
                f"{task['lock_wait']} + statement timeout + connect timeout + {TASK_START_MARGIN_SECONDS // 60} min to "
                f"start ({task_needs:.0f} s) does not fit in the definition's {name} TimeoutSeconds ({seconds} s): "
                f"Step Functions would give up on the task while its statement may still run. Lower "
                f"task_statement_timeout to at most {(seconds - task_needs + parse_duration(task['statement_timeout'])) / 3600:.2f} h")
