"""The synthesized backend stack: the workers, the state machine, alerts, the trigger and the
least-privilege IAM, checked on the CloudFormation template (placeholder packages, no cargo)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_rds as rds
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk.assertions import Match
from conftest import REPO_MIGRATIONS, REPO_ROOT, Synth, SynthFn, make_fake_packages

from stepmigrate_cdk import DEFINITION_PLACEHOLDERS, DefinitionError, StepMigrate, WorkerPackages
from stepmigrate_cdk.construct import load_definition
from stepmigrate_cdk.packaging import migration_set_digest

ASL_FILE = REPO_ROOT / "statemachine" / "stepmigrate.asl.json"
WORKER_KEYS = ("plan", "apply-one", "record", "notify", "trigger-on-event", "trigger-is-complete")
DB_WORKER_KEYS = ("plan", "apply-one", "record")


# --- helpers -------------------------------------------------------------------------------------


def function_ids(backend: Synth) -> dict[str, str]:
    """Logical id of each worker function, from the construct (not hard-coded)."""
    return {key: backend.logical_id(fn) for key, fn in backend.stack.stepmigrate.functions.items()}


def of_type(backend: Synth, cfn_type: str) -> dict[str, dict[str, Any]]:
    return {lid: r for lid, r in backend.resources.items() if r["Type"] == cfn_type}


def only(resources: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    assert len(resources) == 1, list(resources)
    return next(iter(resources.items()))


def role_id_of(backend: Synth, function_id: str) -> str:
    role = backend.resources[function_id]["Properties"]["Role"]
    return role["Fn::GetAtt"][0]


def statements_of_role(backend: Synth, role_id: str) -> list[dict[str, Any]]:
    """Every statement of every AWS::IAM::Policy attached to the role, plus inline ones."""
    statements: list[dict[str, Any]] = []
    for policy in of_type(backend, "AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            statements += policy["Properties"]["PolicyDocument"]["Statement"]
    for inline in backend.resources[role_id]["Properties"].get("Policies", []):
        statements += inline["PolicyDocument"]["Statement"]
    return statements


def actions(statement: dict[str, Any]) -> list[str]:
    value = statement["Action"]
    return [value] if isinstance(value, str) else list(value)


def resources(statement: dict[str, Any]) -> list[Any]:
    value = statement["Resource"]
    return value if isinstance(value, list) else [value]


def statements_with(statements: list[dict[str, Any]], action: str) -> list[dict[str, Any]]:
    return [s for s in statements if s["Effect"] == "Allow" and action in actions(s)]


def granted_actions(backend: Synth, function_key: str) -> set[str]:
    fid = function_ids(backend)[function_key]
    return {a for s in statements_of_role(backend, role_id_of(backend, fid)) for a in actions(s)}


# --- the workers ---------------------------------------------------------------------------------


def test_the_workers_are_provided_al2023_arm64_functions(backend: Synth) -> None:
    ids = function_ids(backend)
    assert set(ids) == set(WORKER_KEYS)
    for key, fid in ids.items():
        props = backend.resources[fid]["Properties"]
        assert props["Runtime"] == "provided.al2023", key
        assert props["Handler"] == "bootstrap", key
        assert props["Architectures"] == ["arm64"], key
        assert props["TracingConfig"] == {"Mode": "Active"}, key
        assert props["Environment"]["Variables"]["STEPMIGRATE_METRIC_NAMESPACE"] == "Stepmigrate", key
        assert 128 <= props["MemorySize"] <= 256, key
        log_group = props["LoggingConfig"]["LogGroup"]["Ref"]
        assert backend.resources[log_group]["Properties"]["RetentionInDays"] == 30, key
    timeouts = {key: backend.resources[fid]["Properties"]["Timeout"] for key, fid in ids.items()}
    assert timeouts == {"plan": 120, "apply-one": 900, "record": 120, "notify": 30,
                        "trigger-on-event": 60, "trigger-is-complete": 60}
    # Ours, the example application function and the Provider framework's three: nothing else.
    functions = of_type(backend, "AWS::Lambda::Function")
    assert sum(f["Properties"].get("Runtime") == "provided.al2023" for f in functions.values()) == 6
    assert len(functions) == 10


def test_x86_64_when_the_packages_are(synth: SynthFn, tmp_path: Path) -> None:
    packages = WorkerPackages.from_directory(make_fake_packages(tmp_path / "p", "x86_64"))
    backend = synth(packages, nag=False)
    for fid in function_ids(backend).values():
        assert backend.resources[fid]["Properties"]["Architectures"] == ["x86_64"]


def test_an_architecture_that_contradicts_the_packages_is_refused(tmp_path: Path) -> None:
    packages = WorkerPackages.from_directory(make_fake_packages(tmp_path / "p", "arm64"))
    stack, vpc, database, secret = minimal_database_stack()
    with pytest.raises(ValueError, match="does not match the worker packages"):
        StepMigrate(stack, "Migrations", vpc=vpc, database=database, database_secret=secret,
                    database_name="db", packages=packages, architecture=lambda_.Architecture.X86_64)


def test_database_workers_run_in_the_vpc_and_the_others_do_not(backend: Synth) -> None:
    ids = function_ids(backend)
    worker_sg = backend.logical_id(backend.stack.stepmigrate.security_group)
    secret_ref = {"Ref": backend.logical_id(backend.stack.database.secret)}  # the attached secret
    for key in WORKER_KEYS:
        props = backend.resources[ids[key]]["Properties"]
        env = props["Environment"]["Variables"]
        if key in DB_WORKER_KEYS:
            assert props["VpcConfig"]["SecurityGroupIds"] == [{"Fn::GetAtt": [worker_sg, "GroupId"]}], key
            assert len(props["VpcConfig"]["SubnetIds"]) == 2, key
            assert env["DB_SECRET_ARN"] == secret_ref, key
            # The database they migrate is the one the metrics' Database dimension names.
            assert env["DB_NAME"] == "tutor_system", key
            # The stack leaves the workers' default lock_timeout alone; the lock wait and the
            # statement timeout are the construct's, which nest in the function's timeout
            # (test_the_database_workers_timeouts_nest_in_their_lambda_timeouts).
            assert "STEPMIGRATE_LOCK_TIMEOUT" not in env
            assert {"STEPMIGRATE_LOCK_WAIT", "STEPMIGRATE_STATEMENT_TIMEOUT"} <= set(env), key
        else:
            assert "VpcConfig" not in props, key
            assert "DB_SECRET_ARN" not in env, key
            # notify names the database of a plan failure's alert; the trigger needs none.
            assert ("DB_NAME" in env) == (key == "notify"), key
    assert backend.resources[ids["notify"]]["Properties"]["Environment"]["Variables"]["SNS_TOPIC_ARN"] == {
        "Ref": backend.logical_id(backend.stack.stepmigrate.topic)}
    handlers = {key: backend.resources[ids[key]]["Properties"]["Environment"]["Variables"]
                ["STEPMIGRATE_TRIGGER_HANDLER"] for key in ("trigger-on-event", "trigger-is-complete")}
    assert handlers == {"trigger-on-event": "on_event", "trigger-is-complete": "is_complete"}


def test_the_network_paths_of_the_database_workers(backend: Synth) -> None:
    worker_sg = backend.logical_id(backend.stack.stepmigrate.security_group)
    db_sg = backend.logical_id(backend.stack.database.connections.security_groups[0])
    ingress = [r["Properties"] for r in of_type(backend, "AWS::EC2::SecurityGroupIngress").values()
               if r["Properties"]["GroupId"] == {"Fn::GetAtt": [db_sg, "GroupId"]}]
    assert len(ingress) == 1
    assert ingress[0]["SourceSecurityGroupId"] == {"Fn::GetAtt": [worker_sg, "GroupId"]}
    assert ingress[0]["FromPort"] == {"Fn::GetAtt": [backend.logical_id(backend.stack.database), "Endpoint.Port"]}
    # Outbound: the database and the Secrets Manager endpoint only.
    egress = [r["Properties"] for r in of_type(backend, "AWS::EC2::SecurityGroupEgress").values()
              if r["Properties"]["GroupId"] == {"Fn::GetAtt": [worker_sg, "GroupId"]}]
    assert sorted(str(e.get("FromPort")) for e in egress) == sorted(
        [str(ingress[0]["FromPort"]), "443"])
    # (The task's endpoints, ECR, CloudWatch Logs and S3: tests/test_task.py.)
    endpoint = backend.resources[backend.logical_id(backend.stack.stepmigrate.secrets_manager_endpoint)]
    assert endpoint["Properties"]["VpcEndpointType"] == "Interface"
    assert endpoint["Properties"]["PrivateDnsEnabled"] is True
    assert "secretsmanager" in json.dumps(endpoint["Properties"]["ServiceName"])
    assert not of_type(backend, "AWS::EC2::NatGateway")


# --- the state machine ---------------------------------------------------------------------------


def test_the_definition_is_inline_with_the_workers_substituted(backend: Synth) -> None:
    sm_id = backend.logical_id(backend.stack.stepmigrate.state_machine)
    props = backend.resources[sm_id]["Properties"]
    assert "DefinitionS3Location" not in props and "Definition" not in props
    assert isinstance(props["DefinitionString"], str)
    assert json.loads(props["DefinitionString"]) == json.loads(ASL_FILE.read_text())
    ids = function_ids(backend)
    expected = {"PlanFunctionArn": "plan", "ApplyOneFunctionArn": "apply-one",
                "RecordFunctionArn": "record", "NotifyFunctionArn": "notify"}
    substitutions = props["DefinitionSubstitutions"]
    assert {placeholder: substitutions[placeholder] for placeholder in expected} == {
        placeholder: {"Fn::GetAtt": [ids[key], "Arn"]} for placeholder, key in expected.items()}
    # The others are the task route's (tests/test_task.py).
    assert set(substitutions) == set(DEFINITION_PLACEHOLDERS) == set(expected) | {
        "TaskClusterArn", "TaskDefinitionArn", "TaskSubnets", "TaskSecurityGroups"}
    assert props["StateMachineType"] == "STANDARD"
    assert props["TracingConfiguration"] == {"Enabled": True}
    logging = props["LoggingConfiguration"]
    assert logging["Level"] == "ALL" and logging["IncludeExecutionData"] is True
    log_group = logging["Destinations"][0]["CloudWatchLogsLogGroup"]["LogGroupArn"]["Fn::GetAtt"][0]
    assert backend.resources[log_group]["Properties"]["RetentionInDays"] == 30


def test_the_named_log_groups_are_unique_per_stack_instance(backend: Synth) -> None:
    """Retained log groups with fixed names would make a stack that rolled back or was deleted
    impossible to create again: their names end with the stack's UUID."""
    named = {lid: r["Properties"]["LogGroupName"] for lid, r in of_type(backend, "AWS::Logs::LogGroup").items()
             if "LogGroupName" in r["Properties"]}
    assert len(named) == 2, named
    for lid, name in named.items():
        text = json.dumps(name)
        assert "/aws/vendedlogs/states/" in text, lid
        assert {"Fn::Select": [2, {"Fn::Split": ["/", {"Ref": "AWS::StackId"}]}]} in name["Fn::Join"][1], lid
    suffixes = sorted(suffix for name in named.values() for suffix in ("-StateMachine-", "-TriggerWaiter-")
                      if suffix in json.dumps(name))
    assert suffixes == ["-StateMachine-", "-TriggerWaiter-"]


def test_the_state_machine_invokes_exactly_the_four_step_functions(backend: Synth) -> None:
    sm_role = backend.logical_id(backend.stack.stepmigrate.state_machine.role)
    invokes = statements_with(statements_of_role(backend, sm_role), "lambda:InvokeFunction")
    targets = [r for s in invokes for r in resources(s)]
    ids = function_ids(backend)
    assert sorted(json.dumps(t) for t in targets) == sorted(
        json.dumps({"Fn::GetAtt": [ids[k], "Arn"]}) for k in ("plan", "apply-one", "record", "notify"))


def test_the_definition_placeholders_are_checked(tmp_path: Path) -> None:
    document = json.loads(ASL_FILE.read_text())
    assert set(DEFINITION_PLACEHOLDERS) == {"PlanFunctionArn", "ApplyOneFunctionArn", "RecordFunctionArn",
                                            "NotifyFunctionArn", "TaskClusterArn", "TaskDefinitionArn",
                                            "TaskSubnets", "TaskSecurityGroups"}
    assert json.loads(load_definition(ASL_FILE)) == document

    def refused(name: str, old: str, new: str, match: str, count: int = -1) -> None:
        edited = tmp_path / f"{name}.asl.json"
        edited.write_text(ASL_FILE.read_text().replace(old, new, count))
        with pytest.raises(DefinitionError, match=match):
            load_definition(edited)

    refused("unknown", "${NotifyFunctionArn}", "${AlertTopicArn}", r"does not substitute: \$\{AlertTopicArn\}", 1)
    refused("missing", "${RecordFunctionArn}", "arn:aws:lambda:x", r"does not use \$\{RecordFunctionArn\}")
    # The task route's placeholders are checked alike.
    refused("no-task", "${TaskClusterArn}", "arn:aws:ecs:x:1:cluster/c",
            r"does not use \$\{TaskClusterArn\}.*a task it never runs")
    refused("misspelt", "${TaskSubnets}", "${TaskSubnetIds}", r"does not substitute: \$\{TaskSubnetIds\}")


def test_an_unknown_placeholder_fails_the_synth(tmp_path: Path, fake_packages: Path) -> None:
    definition = tmp_path / "def.asl.json"
    definition.write_text(ASL_FILE.read_text().replace("${PlanFunctionArn}", "${PlanFunctionAlias}"))
    with pytest.raises(DefinitionError, match="PlanFunctionAlias"):
        migrations_from(definition, fake_packages)


# --- alerts --------------------------------------------------------------------------------------


def test_the_topic_is_encrypted_tls_only_and_usable_by_alarms(backend: Synth) -> None:
    topic_id = backend.logical_id(backend.stack.stepmigrate.topic)
    topic = backend.resources[topic_id]["Properties"]
    key_id = topic["KmsMasterKeyId"]["Fn::GetAtt"][0]
    key = backend.resources[key_id]
    assert key["Type"] == "AWS::KMS::Key" and key["Properties"]["EnableKeyRotation"] is True
    alarms_statement = [s for s in key["Properties"]["KeyPolicy"]["Statement"]
                        if s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}]
    assert len(alarms_statement) == 1
    assert sorted(actions(alarms_statement[0])) == ["kms:Decrypt", "kms:GenerateDataKey*"]
    assert "Condition" not in alarms_statement[0], "AWS's documented statement: an unmet condition silences alarms"
    _, policy = only(of_type(backend, "AWS::SNS::TopicPolicy"))
    assert policy["Properties"]["Topics"] == [{"Ref": topic_id}]
    deny = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
    assert len(deny) == 1 and "sns:Publish" in actions(deny[0])
    assert deny[0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_the_topic_policy_lets_this_accounts_alarms_publish(backend: Synth) -> None:
    """enforce_ssl's topic policy replaces SNS's default one: without an Allow for CloudWatch,
    the alarms could not publish."""
    topic_id = backend.logical_id(backend.stack.stepmigrate.topic)
    _, policy = only(of_type(backend, "AWS::SNS::TopicPolicy"))
    allow = [s for s in policy["Properties"]["PolicyDocument"]["Statement"]
             if s["Effect"] == "Allow" and s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}]
    assert len(allow) == 1
    assert actions(allow[0]) == ["sns:Publish"]
    assert resources(allow[0]) == [{"Ref": topic_id}]
    condition = allow[0]["Condition"]
    assert condition["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    source_arn = json.dumps(condition["ArnLike"]["aws:SourceArn"])
    for needle in ("AWS::Partition", ":cloudwatch:", "AWS::Region", "AWS::AccountId", ":alarm:*"):
        assert needle in source_arn, needle


def test_the_alarms_publish_to_the_topic(backend: Synth) -> None:
    topic_ref = {"Ref": backend.logical_id(backend.stack.stepmigrate.topic)}
    sm_ref = {"Ref": backend.logical_id(backend.stack.stepmigrate.state_machine)}
    alarms = list(of_type(backend, "AWS::CloudWatch::Alarm").values())
    by_metric = {a["Properties"]["MetricName"]: a["Properties"] for a in alarms}
    assert set(by_metric) == {"ExecutionsFailed", "ExecutionsTimedOut", "ExecutionsAborted", "MigrationFailures",
                              "FailedInvocations"}
    for name, alarm in by_metric.items():
        assert alarm["AlarmActions"] == [topic_ref], name
        assert alarm["Threshold"] == 1 and alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold", name
        assert alarm["TreatMissingData"] == "notBreaching", name
        assert alarm["Statistic"] == "Sum" and alarm["Period"] == 300, name
    for name in ("ExecutionsFailed", "ExecutionsTimedOut", "ExecutionsAborted"):
        assert by_metric[name]["Namespace"] == "AWS/States"
        assert by_metric[name]["Dimensions"] == [{"Name": "StateMachineArn", "Value": sm_ref}]
    failures = by_metric["MigrationFailures"]
    assert failures["Namespace"] == "Stepmigrate"
    assert failures["Dimensions"] == [{"Name": "Database", "Value": "tutor_system"}]


def test_the_dashboard_shows_executions_migrations_and_workers(backend: Synth) -> None:
    _, dashboard = only(of_type(backend, "AWS::CloudWatch::Dashboard"))
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    for needle in ("ExecutionsStarted", "ExecutionsSucceeded", "ExecutionsFailed", "MigrationDuration", "p99",
                   "Maximum", "MigrationsApplied", "MigrationsFailed", "PendingMigrations", "tutor_system",
                   "AWS/Lambda", "Errors", "Duration"):
        assert needle in body, needle


# --- the deploy-time trigger ---------------------------------------------------------------------


def test_the_custom_resource_carries_the_migration_set_hash(backend: Synth) -> None:
    cr_id, custom = only(of_type(backend, "Custom::StepMigrateMigrations"))
    assert cr_id == backend.logical_id(backend.stack.stepmigrate.migrations_applied)
    props = custom["Properties"]
    assert props["MigrationSetHash"] == migration_set_digest(REPO_MIGRATIONS)
    assert props["StateMachineArn"] == {"Ref": backend.logical_id(backend.stack.stepmigrate.state_machine)}
    # It runs after everything an execution needs, not only what its properties reference.
    depends_on = set(custom["DependsOn"])
    ids = function_ids(backend)
    assert set(ids.values()) <= depends_on
    assert backend.logical_id(backend.stack.database) in depends_on
    assert backend.logical_id(backend.stack.stepmigrate.secrets_manager_endpoint) in depends_on
    db_ingress = [lid for lid, r in of_type(backend, "AWS::EC2::SecurityGroupIngress").items()
                  if "Database" in lid]
    assert db_ingress and set(db_ingress) <= depends_on


def test_the_provider_gives_up_before_cloudformation(backend: Synth) -> None:
    provider = backend.stack.stepmigrate.trigger_provider
    on_event = provider.on_event_handler
    is_complete = provider.is_complete_handler
    assert on_event is backend.stack.stepmigrate.functions["trigger-on-event"]
    assert is_complete is backend.stack.stepmigrate.functions["trigger-is-complete"]
    waiter = [r for lid, r in of_type(backend, "AWS::StepFunctions::StateMachine").items() if "waiter" in lid]
    assert len(waiter) == 1
    definition = json.dumps(waiter[0]["Properties"]["DefinitionString"])
    # 15 s between polls, 220 attempts: 55 minutes, within CloudFormation's hour for a custom
    # resource, so the deployment fails with the Provider's message.
    assert '\\"IntervalSeconds\\":15' in definition and '\\"MaxAttempts\\":220' in definition
    assert waiter[0]["Properties"]["LoggingConfiguration"]["Level"] == "ALL"


def test_the_application_function_deploys_after_the_migrations(backend: Synth) -> None:
    cr_id = backend.logical_id(backend.stack.stepmigrate.migrations_applied)
    api_id = backend.logical_id(backend.stack.api_function)
    assert cr_id in backend.resources[api_id]["DependsOn"]


def test_outputs(backend: Synth) -> None:
    outputs = backend.template.to_json()["Outputs"]
    assert {"MigrationsStateMachineArn", "MigrationsAlertTopicArn", "MigrationsDashboardName",
            "MigrationsDashboardUrl"} <= set(outputs)


def test_the_hash_and_the_assets_follow_the_migrations(synth: SynthFn, tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    shutil.copytree(REPO_MIGRATIONS, migrations)

    def synthesize() -> tuple[str, str]:
        root = make_fake_packages(tmp_path / "packages", migrations=migrations)
        backend = synth(WorkerPackages.from_directory(root), nag=False)
        _, custom = only(of_type(backend, "Custom::StepMigrateMigrations"))
        plan = backend.resources[function_ids(backend)["plan"]]["Properties"]["Code"]["S3Key"]
        return custom["Properties"]["MigrationSetHash"], plan

    hash_before, asset_before = synthesize()
    # A down file ships with the workers (a rollback runs it) but does not start a migrate run.
    first_down = sorted(migrations.glob("*.down.sql"))[0]
    first_down.write_text(first_down.read_text() + "\n-- edited\n")
    hash_down_edited, asset_down_edited = synthesize()
    assert hash_down_edited == hash_before
    assert asset_down_edited != asset_before

    first = sorted(p for p in migrations.glob("*.sql") if not p.name.endswith(".down.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited\n")
    hash_after, asset_after = synthesize()
    assert hash_before == migration_set_digest(REPO_MIGRATIONS)
    assert hash_after == migration_set_digest(migrations) != hash_before
    assert asset_after != asset_down_edited


# --- least privilege -----------------------------------------------------------------------------


def test_the_trigger_can_start_only_its_state_machine(backend: Synth) -> None:
    ids = function_ids(backend)
    sm_ref = {"Ref": backend.logical_id(backend.stack.stepmigrate.state_machine)}
    on_event = statements_of_role(backend, role_id_of(backend, ids["trigger-on-event"]))
    starts = statements_with(on_event, "states:StartExecution")
    assert [resources(s) for s in starts] == [[sm_ref]]
    describe = statements_with(on_event, "states:DescribeExecution")
    assert len(describe) == 1
    execution_arn = json.dumps(resources(describe[0]))
    assert ":execution:" in execution_arn
    assert backend.logical_id(backend.stack.stepmigrate.state_machine) in execution_arn
    stacks = statements_with(on_event, "cloudformation:DescribeStacks")
    assert [resources(s) for s in stacks] == [[{"Ref": "AWS::StackId"}]]
    assert granted_actions(backend, "trigger-on-event") == {
        "logs:CreateLogStream", "logs:PutLogEvents", "xray:PutTraceSegments", "xray:PutTelemetryRecords",
        "states:StartExecution", "states:DescribeExecution", "cloudformation:DescribeStacks"}
    assert granted_actions(backend, "trigger-is-complete") == {
        "logs:CreateLogStream", "logs:PutLogEvents", "xray:PutTraceSegments", "xray:PutTelemetryRecords",
        "states:DescribeExecution"}


def test_notify_publishes_and_puts_metrics_in_its_namespace_only(backend: Synth) -> None:
    ids = function_ids(backend)
    statements = statements_of_role(backend, role_id_of(backend, ids["notify"]))
    put = statements_with(statements, "cloudwatch:PutMetricData")
    assert len(put) == 1
    assert put[0]["Condition"] == {"StringEquals": {"cloudwatch:namespace": "Stepmigrate"}}
    publish = statements_with(statements, "sns:Publish")
    assert [resources(s) for s in publish] == [[{"Ref": backend.logical_id(backend.stack.stepmigrate.topic)}]]
    assert "secretsmanager:GetSecretValue" not in granted_actions(backend, "notify")


def test_database_workers_read_the_secret_and_cannot_publish(backend: Synth) -> None:
    for key in DB_WORKER_KEYS:
        granted = granted_actions(backend, key)
        assert "secretsmanager:GetSecretValue" in granted, key
        assert not {a for a in granted if a.startswith(("sns:", "states:", "cloudwatch:"))}, key
    # Each function has a role of its own with its log group only: no managed policies.
    for fid in function_ids(backend).values():
        assert "ManagedPolicyArns" not in backend.resources[role_id_of(backend, fid)]["Properties"]


# --- the database --------------------------------------------------------------------------------


def test_the_database_requires_tls_and_is_encrypted(backend: Synth) -> None:
    db = backend.resources[backend.logical_id(backend.stack.database)]["Properties"]
    # The major version only: a retired minor version cannot break a deploy.
    assert db["Engine"] == "postgres" and db["EngineVersion"] == "16"
    assert db["StorageEncrypted"] is True and db["DBName"] == "tutor_system"
    assert db["MultiAZ"] is False and db["DeletionProtection"] is False
    params = backend.resources[db["DBParameterGroupName"]["Ref"]]["Properties"]["Parameters"]
    assert params == {"rds.force_ssl": "1"}
    backend.template.has_resource_properties("AWS::SecretsManager::Secret", {
        "GenerateSecretString": Match.object_like({"SecretStringTemplate": Match.any_value()})})


def test_the_database_secret_names_the_database(backend: Synth) -> None:
    """The secret carries dbname (Credentials.from_generated_secret's does not), and it is the
    one the instance attaches (which adds host and port) and the workers read."""
    secret = backend.stack.database_secret
    secret_id = backend.logical_id(secret)
    only_id, only_secret = only(of_type(backend, "AWS::SecretsManager::Secret"))
    assert only_id == secret_id
    template = json.loads(only_secret["Properties"]["GenerateSecretString"]["SecretStringTemplate"])
    assert template == {"username": "tutor_admin", "dbname": "tutor_system"}
    db_id = backend.logical_id(backend.stack.database)
    _, attachment = only(of_type(backend, "AWS::SecretsManager::SecretTargetAttachment"))
    assert attachment["Properties"] == {"SecretId": {"Ref": secret_id}, "TargetId": {"Ref": db_id},
                                        "TargetType": "AWS::RDS::DBInstance"}
    password = json.dumps(backend.resources[db_id]["Properties"]["MasterUserPassword"])
    assert secret_id in password


def test_only_the_major_engine_version_is_pinned_and_only_w3691_is_ignored(backend: Synth) -> None:
    """cfn-lint's W3691 takes a major version for deprecated as soon as one of its minor
    versions is: it is ignored on the database only (tests/test_cfn_lint.py runs the rest)."""
    db_id = backend.logical_id(backend.stack.database)
    assert backend.resources[db_id]["Properties"]["EngineVersion"] == "16"
    configured = {lid: r["Metadata"]["cfn-lint"] for lid, r in backend.resources.items()
                  if "cfn-lint" in r.get("Metadata", {})}
    assert configured == {db_id: {"config": {"ignore_checks": ["W3691"]}}}


def minimal_database_stack() -> tuple[Stack, ec2.Vpc, rds.DatabaseInstance, secretsmanager.ISecret]:
    stack = Stack(App(), "Minimal")
    vpc = ec2.Vpc(stack, "Vpc", nat_gateways=0, subnet_configuration=[
        ec2.SubnetConfiguration(name="isolated", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)])
    database = rds.DatabaseInstance(
        stack, "Db", vpc=vpc, vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED),
        engine=rds.DatabaseInstanceEngine.postgres(version=rds.PostgresEngineVersion.VER_16))
    assert database.secret is not None
    return stack, vpc, database, database.secret


def migrations_from(definition: Path, fake_packages: Path, **props: Any) -> StepMigrate:
    """The construct on a minimal stack with `definition` as its state machine's (and `props`)."""
    stack, vpc, database, secret = minimal_database_stack()
    return StepMigrate(stack, "Migrations", vpc=vpc, database=database, database_secret=secret,
                       database_name="db", packages=WorkerPackages.from_directory(fake_packages),
                       definition_file=definition, **props)


# --- timeouts and the alert's database -----------------------------------------------------------


def test_notify_knows_the_database_a_plan_failure_alerts_about(backend: Synth) -> None:
    """A plan failure has no database of its own: notify names (and puts the metric under)
    DB_NAME, the alarm's Database dimension, never an empty one."""
    env = backend.resources[function_ids(backend)["notify"]]["Properties"]["Environment"]["Variables"]
    assert env["DB_NAME"] == backend.stack.stepmigrate.props.database_name != ""


def seconds(duration: str) -> float:
    from stepmigrate_cdk.construct import parse_duration

    return parse_duration(duration)


def test_the_database_workers_timeouts_nest_in_their_lambda_timeouts(backend: Synth) -> None:
    """connect timeout + lock wait + statement timeout + a margin (a tenth, at least 5 s) within
    each function's timeout; unset, the workers' defaults (10 min lock wait, 15 min statement
    timeout) would not fit even apply-one's 15 minutes."""
    for key in DB_WORKER_KEYS:
        props = backend.resources[function_ids(backend)[key]]["Properties"]
        env = props["Environment"]["Variables"]
        limit = props["Timeout"]
        wait = seconds(env.get("STEPMIGRATE_LOCK_WAIT", "10min"))
        statement = seconds(env.get("STEPMIGRATE_STATEMENT_TIMEOUT", "15min"))
        assert 0 < statement and 5 + wait + statement + max(5, limit / 10) <= limit, (key, env, limit)
    apply_one = backend.resources[function_ids(backend)["apply-one"]]["Properties"]["Environment"]["Variables"]
    assert seconds(apply_one["STEPMIGRATE_STATEMENT_TIMEOUT"]) >= 600, "migrations keep 10 minutes"


@pytest.mark.parametrize("timeouts, message", [
    ({"statement_timeout": "15min"}, r"apply-one: lock_wait 3min \+ statement_timeout 15min .* more than the "
                                     r"function's Lambda timeout of 900 s"),
    ({"lock_wait": "10min"}, r"apply-one: lock_wait 10min \+ statement_timeout 10min"),
    ({"statement_timeout": "0"}, r"apply-one: statement_timeout 0 \(no limit\)"),
    ({"lock_timeout": "15min"}, r"lock_timeout 15min is longer than statement_timeout"),
    ({"statement_timeout": "ten minutes"}, r"is not a duration"),
])
def test_timeouts_that_do_not_nest_fail_the_synth(fake_packages: Path, timeouts: dict[str, str],
                                                  message: str) -> None:
    from stepmigrate_cdk import TimeoutsError

    stack, vpc, database, secret = minimal_database_stack()
    with pytest.raises(TimeoutsError, match=message):
        StepMigrate(stack, "Migrations", vpc=vpc, database=database, database_secret=secret,
                    database_name="db", packages=WorkerPackages.from_directory(fake_packages), **timeouts)


def test_timeouts_that_nest_are_passed_to_apply_one_only(fake_packages: Path) -> None:
    stack, vpc, database, secret = minimal_database_stack()
    migrations = StepMigrate(stack, "Migrations", vpc=vpc, database=database, database_secret=secret,
                             database_name="db", packages=WorkerPackages.from_directory(fake_packages),
                             statement_timeout="12min", lock_wait="1min", lock_timeout="2s")
    from aws_cdk.assertions import Template

    template = Template.from_stack(stack).to_json()["Resources"]
    variables = {key: template[stack.get_logical_id(migrations.functions[key].node.default_child)]["Properties"]
                 ["Environment"]["Variables"] for key in DB_WORKER_KEYS}
    assert variables["apply-one"]["STEPMIGRATE_STATEMENT_TIMEOUT"] == "12min"
    assert variables["apply-one"]["STEPMIGRATE_LOCK_WAIT"] == "1min"
    assert all(v["STEPMIGRATE_LOCK_TIMEOUT"] == "2s" for v in variables.values())
    # plan and record only keep the ledger: their own timeouts, within their 2 minutes.
    assert variables["record"]["STEPMIGRATE_STATEMENT_TIMEOUT"] == "1min"
    assert variables["plan"]["STEPMIGRATE_LOCK_WAIT"] == "20s"


def test_a_deploy_time_run_that_cannot_report_within_the_providers_wait_fails_the_synth(
        tmp_path: Path, fake_packages: Path) -> None:
    from stepmigrate_cdk import TimeoutsError

    document = json.loads(ASL_FILE.read_text())
    apply_one = document["States"]["ApplyEach"]["ItemProcessor"]["States"]["ApplyOne"]
    apply_one["Retry"][0].update(IntervalSeconds=60, MaxAttempts=40, MaxDelaySeconds=600)
    definition = tmp_path / "slow.asl.json"
    definition.write_text(json.dumps(document))
    stack, vpc, database, secret = minimal_database_stack()
    with pytest.raises(TimeoutsError, match=r"may take \d+ s \(onEvent.*ApplyOne \(apply-one 900 s.*Provider's 3300 s"):
        StepMigrate(stack, "Migrations", vpc=vpc, database=database, database_secret=secret,
                    database_name="db", packages=WorkerPackages.from_directory(fake_packages),
                    definition_file=definition)
