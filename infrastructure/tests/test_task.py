"""The long-migration route: the ECS cluster and Fargate task definition that ApplyTask runs
(apply-one's package in task mode), its image asset (staged at synth, never built here), its
network path, the definition's substitutions and the state machine's least-privilege grants."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Template
from conftest import REPO_MIGRATIONS, Synth, SynthFn, make_fake_packages, run_app
from test_stack import (
    ASL_FILE,
    actions,
    function_ids,
    migrations_from,
    minimal_database_stack,
    of_type,
    only,
    resources,
    statements_of_role,
    statements_with,
)

from stepmigrate_cdk import (
    TASK_CONTAINER_NAME,
    TASK_PLACEHOLDERS,
    DefinitionError,
    PackagingError,
    StepMigrate,
    TimeoutsError,
    WorkerPackages,
    write_task_image,
)
from stepmigrate_cdk.construct import check_task_route
from stepmigrate_cdk.packaging import TASK_BASE_IMAGE, task_dockerfile

# --- helpers -------------------------------------------------------------------------------------


def task_definition(synthesized: Synth) -> tuple[str, dict[str, Any]]:
    lid = synthesized.logical_id(synthesized.stack.stepmigrate.task_definition)
    return lid, synthesized.resources[lid]["Properties"]


def container(synthesized: Synth) -> dict[str, Any]:
    _, props = task_definition(synthesized)
    assert len(props["ContainerDefinitions"]) == 1
    return props["ContainerDefinitions"][0]


def container_env(synthesized: Synth) -> dict[str, Any]:
    return {e["Name"]: e["Value"] for e in container(synthesized)["Environment"]}


def docker_images(synthesized: Synth) -> dict[str, Any]:
    out = Path(synthesized.app.outdir)
    manifest = json.loads((out / f"{synthesized.stack.stack_name}.assets.json").read_text())
    return manifest.get("dockerImages", {})


def staged_image(synthesized: Synth) -> Path:
    """The image's build context as CDK staged it into the cloud assembly."""
    (image,) = docker_images(synthesized).values()
    return Path(synthesized.app.outdir) / image["source"]["directory"]


def sm_statements(synthesized: Synth) -> list[dict[str, Any]]:
    return statements_of_role(synthesized, synthesized.logical_id(synthesized.stack.stepmigrate.state_machine.role))


def role_statements(synthesized: Synth, role: Any) -> list[dict[str, Any]]:
    return statements_of_role(synthesized, synthesized.logical_id(role))


def substituted_definition(synthesized: Synth) -> tuple[str, dict[str, Any]]:
    """The definition as CloudFormation makes it: each `${key}` of DefinitionSubstitutions
    replaced (here by a marker naming the key, its value being an intrinsic function)."""
    sm = synthesized.resources[synthesized.logical_id(synthesized.stack.stepmigrate.state_machine)]["Properties"]
    text = sm["DefinitionString"]
    for key in sm["DefinitionSubstitutions"]:
        text = text.replace("${" + key + "}", f"@{key}@")
    return text, sm["DefinitionSubstitutions"]


def apply_task(document: dict[str, Any]) -> dict[str, Any]:
    states = document["States"]["ApplyEach"]["ItemProcessor"]["States"]
    return states["ApplyTask"]


# --- the task definition -------------------------------------------------------------------------


def test_the_task_definition_runs_apply_one_on_fargate_arm64(backend: Synth) -> None:
    _, props = task_definition(backend)
    assert props["RequiresCompatibilities"] == ["FARGATE"]
    assert props["NetworkMode"] == "awsvpc"
    assert props["RuntimePlatform"] == {"CpuArchitecture": "ARM64", "OperatingSystemFamily": "LINUX"}
    assert (props["Cpu"], props["Memory"]) == ("1024", "2048")
    definition = container(backend)
    assert definition["Name"] == TASK_CONTAINER_NAME == "stepmigrate"
    assert definition["Essential"] is True
    # The image is the asset, in the bootstrap stack's repository; no command override: the
    # image's entrypoint is apply-one's task mode.
    assert "container-assets" in json.dumps(definition["Image"])
    assert "Command" not in definition and "EntryPoint" not in definition
    assert props["TaskRoleArn"] == {"Fn::GetAtt": [backend.logical_id(backend.stack.stepmigrate.task_role), "Arn"]}


def test_the_task_logs_to_a_log_group_of_the_construct(backend: Synth) -> None:
    log_group = backend.logical_id(backend.stack.stepmigrate.task_log_group)
    logging = container(backend)["LogConfiguration"]
    assert logging["LogDriver"] == "awslogs"
    assert logging["Options"]["awslogs-group"] == {"Ref": log_group}
    assert logging["Options"]["awslogs-stream-prefix"] == "task"
    group = backend.resources[log_group]
    assert group["Properties"]["RetentionInDays"] == 30
    assert group["DeletionPolicy"] == "Retain"  # log_removal_policy None: CDK's default


def test_the_task_reads_the_database_like_apply_one(backend: Synth) -> None:
    env = container_env(backend)
    apply_one = backend.resources[function_ids(backend)["apply-one"]]["Properties"]["Environment"]["Variables"]
    for name in ("DB_SECRET_ARN", "DB_NAME", "STEPMIGRATE_METRIC_NAMESPACE", "STEPMIGRATE_LOCK_WAIT"):
        assert env[name] == apply_one[name], name
    assert env["DB_SECRET_ARN"] == {"Ref": backend.logical_id(backend.stack.database.secret)}
    assert env["DB_NAME"] == "tutor_system"
    # No Lambda deadline: the task's own statement timeout for a migration without a directive.
    assert env["STEPMIGRATE_STATEMENT_TIMEOUT"] == "4h"
    assert "STEPMIGRATE_LOCK_TIMEOUT" not in env  # the stack leaves the workers' default
    # Never a secret's value: no password, no secret reference, no Secrets Manager dynamic reference.
    rendered = json.dumps(container(backend))
    assert "password" not in rendered.lower()
    assert "resolve:secretsmanager" not in rendered
    assert "Secrets" not in container(backend)


def test_the_task_timeouts_and_size_follow_the_props(fake_packages: Path) -> None:
    stack, vpc, database, secret = minimal_database_stack()
    migrations = StepMigrate(stack, "Migrations", vpc=vpc, database=database, database_secret=secret,
                             database_name="db", packages=WorkerPackages.from_directory(fake_packages),
                             statement_timeout="12min", lock_wait="1min", lock_timeout="2s",
                             task_statement_timeout="90min", task_cpu=2048, task_memory_mib=8192,
                             metric_namespace="Custom")
    template = Template.from_stack(stack).to_json()["Resources"]
    props = template[stack.get_logical_id(migrations.task_definition.node.default_child)]["Properties"]
    assert (props["Cpu"], props["Memory"]) == ("2048", "8192")
    env = {e["Name"]: e["Value"] for e in props["ContainerDefinitions"][0]["Environment"]}
    assert env["STEPMIGRATE_STATEMENT_TIMEOUT"] == "90min"
    assert env["STEPMIGRATE_LOCK_WAIT"] == "1min"
    assert env["STEPMIGRATE_LOCK_TIMEOUT"] == "2s"
    assert env["STEPMIGRATE_METRIC_NAMESPACE"] == "Custom"
    plan = template[stack.get_logical_id(migrations.functions["plan"].node.default_child)]
    # The threshold is apply-one's statement timeout, whatever it is configured to.
    assert plan["Properties"]["Environment"]["Variables"]["STEPMIGRATE_TASK_THRESHOLD"] == "12min"


@pytest.mark.parametrize("props, error, message", [
    ({"task_cpu": 1000}, ValueError, r"task_cpu 1000 is not a Fargate CPU size"),
    ({"task_memory_mib": 1024}, ValueError, r"task_memory_mib 1024 does not go with task_cpu 1024.*2048, 3072"),
    ({"task_cpu": 256, "task_memory_mib": 4096}, ValueError, r"does not go with task_cpu 256.*512, 1024, 2048"),
    ({"task_statement_timeout": "four hours"}, TimeoutsError, r"is not a duration"),
    ({"task_statement_timeout": "1s", "lock_timeout": "5s"}, TimeoutsError,
     r"lock_timeout 5s is longer than task_statement_timeout 1s"),
])
def test_task_props_that_do_not_fit_fail_the_synth(fake_packages: Path, props: dict[str, Any],
                                                   error: type[Exception], message: str) -> None:
    stack, vpc, database, secret = minimal_database_stack()
    with pytest.raises(error, match=message):
        StepMigrate(stack, "Migrations", vpc=vpc, database=database, database_secret=secret,
                    database_name="db", packages=WorkerPackages.from_directory(fake_packages), **props)


def test_x86_64_packages_make_an_x86_64_task(synth: SynthFn, tmp_path: Path) -> None:
    packages = WorkerPackages.from_directory(make_fake_packages(tmp_path / "p", "x86_64"))
    backend = synth(packages, nag=False)
    _, props = task_definition(backend)
    assert props["RuntimePlatform"] == {"CpuArchitecture": "X86_64", "OperatingSystemFamily": "LINUX"}
    (image,) = docker_images(backend).values()
    assert image["source"]["platform"] == "linux/amd64"


def test_the_cluster_is_ours_with_container_insights(backend: Synth) -> None:
    cluster_id, cluster = only(of_type(backend, "AWS::ECS::Cluster"))
    assert cluster_id == backend.logical_id(backend.stack.stepmigrate.cluster)
    assert {"Name": "containerInsights", "Value": "enabled"} in cluster["Properties"]["ClusterSettings"]


# --- the image -----------------------------------------------------------------------------------


def test_the_image_is_apply_ones_package_and_a_dockerfile(backend: Synth) -> None:
    images = docker_images(backend)
    assert len(images) == 1
    (image,) = images.values()
    assert image["source"]["platform"] == "linux/arm64"
    staged = staged_image(backend)
    dockerfile = (staged / "Dockerfile").read_text()
    assert dockerfile == task_dockerfile()
    lines = [line for line in dockerfile.splitlines() if line and not line.startswith("#")]
    assert lines[0] == f"FROM {TASK_BASE_IMAGE}" == "FROM public.ecr.aws/lambda/provided:al2023"
    assert "COPY package/ /var/task/" in lines
    assert lines[-1] == 'ENTRYPOINT ["/var/task/bootstrap", "task"]'
    user = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert len(user) == 1 and user[0].split(":")[0] not in ("0", "root")
    # Nothing runs in the image while it is built: no emulation for another architecture.
    assert not [line for line in lines if line.startswith("RUN")]
    # The package, as apply-one's function has it, readable by the unprivileged user.
    apply_one = backend.stack.stepmigrate.props.packages.apply_one
    package = staged / "package"
    assert sorted(p.name for p in package.iterdir()) == ["bootstrap", "migrations", "rds-ca-bundle.pem"]
    assert (package / "bootstrap").read_bytes() == (apply_one / "bootstrap").read_bytes()
    assert sorted(p.name for p in (package / "migrations").iterdir()) == sorted(
        p.name for p in (apply_one / "migrations").iterdir())
    assert (package / "rds-ca-bundle.pem").read_bytes() == (apply_one / "rds-ca-bundle.pem").read_bytes()
    assert os.stat(package / "bootstrap").st_mode & 0o777 == 0o755


def test_write_task_image_makes_the_copy_readable_and_replaces_the_old_one(tmp_path: Path) -> None:
    apply_one = make_fake_packages(tmp_path / "p") / "apply-one"
    # A package written under a strict umask: the image's user could read nothing.
    for path in [apply_one, *apply_one.rglob("*")]:
        path.chmod(0o700 if path.is_dir() else 0o600)
    out = tmp_path / "image"
    (out / "package").mkdir(parents=True)
    (out / "package" / "stale.sql").write_text("-- from an earlier synth\n")
    assert write_task_image(apply_one, out) == out.resolve()
    assert not (out / "package" / "stale.sql").exists()
    modes = {p.relative_to(out).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*")}
    assert modes["package/bootstrap"] == 0o755
    assert modes["package/migrations"] == 0o755
    assert modes["package/rds-ca-bundle.pem"] == 0o644
    assert all(mode & 0o444 == 0o444 for mode in modes.values())
    assert (out / "Dockerfile").read_text() == task_dockerfile()
    for path in [apply_one, *apply_one.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


def test_write_task_image_refuses_what_is_not_apply_ones_package(tmp_path: Path) -> None:
    with pytest.raises(PackagingError, match="is not apply-one's package"):
        write_task_image(tmp_path, tmp_path / "image")
    apply_one = make_fake_packages(tmp_path / "p") / "apply-one"
    with pytest.raises(PackagingError, match="must not be inside the package"):
        write_task_image(apply_one, apply_one / "image")


def test_the_image_asset_follows_the_migrations(synth: SynthFn, tmp_path: Path) -> None:
    def image_hash(root: Path) -> str:
        (image,) = docker_images(synth(WorkerPackages.from_directory(root), nag=False)).keys()
        return image

    migrations = tmp_path / "migrations"
    shutil.copytree(REPO_MIGRATIONS, migrations)
    root = make_fake_packages(tmp_path / "p", migrations=migrations)
    before = image_hash(root)
    assert image_hash(root) == before  # a second synth: the same image
    migration = sorted(migrations.glob("*.sql"))[-1]
    migration.write_text(migration.read_text() + "\n-- edited\n")
    assert image_hash(make_fake_packages(root, migrations=migrations)) != before


def test_synth_needs_no_docker(tmp_path: Path, fake_packages: Path) -> None:
    """CDK only stages the image's directory at synth; `cdk deploy` builds it. The app
    synthesizes with a PATH that has node (jsii) and nothing else: no docker."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    node = shutil.which("node")
    assert node, "node (jsii's runtime) is not installed"
    (bin_dir / "node").symlink_to(node)
    assert shutil.which("docker", path=str(bin_dir)) is None
    result = run_app(tmp_path, {"stepmigrate:packages": str(fake_packages)}, path=str(bin_dir))
    assert result.returncode == 0, result.stderr[-4000:]
    out = tmp_path / "cdk.out"
    manifest = json.loads((out / "BackendStack-dev.assets.json").read_text())
    (image,) = manifest["dockerImages"].values()
    assert image["source"]["platform"] == "linux/arm64"
    assert (out / image["source"]["directory"] / "Dockerfile").read_text() == task_dockerfile()
    assert (out / image["source"]["directory"] / "package" / "bootstrap").is_file()


# --- the definition ------------------------------------------------------------------------------


def test_the_definition_runs_the_task_with_everything_substituted(backend: Synth) -> None:
    text, substitutions = substituted_definition(backend)
    assert "${" not in text
    assert set(TASK_PLACEHOLDERS) <= set(substitutions)
    task = apply_task(json.loads(text))
    assert task["Resource"] == "arn:aws:states:::ecs:runTask.sync"
    parameters = task["Parameters"]
    assert parameters["Cluster"] == "@TaskClusterArn@"
    assert parameters["TaskDefinition"] == "@TaskDefinitionArn@"
    assert parameters["LaunchType"] == "FARGATE"
    network = parameters["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert network["Subnets.$"] == "States.StringSplit('@TaskSubnets@', ',')"
    assert network["SecurityGroups.$"] == "States.StringSplit('@TaskSecurityGroups@', ',')"
    assert network["AssignPublicIp"] == "DISABLED"
    assert [c["Name"] for c in parameters["Overrides"]["ContainerOverrides"]] == [TASK_CONTAINER_NAME]

    stepmigrate = backend.stack.stepmigrate
    assert substitutions["TaskClusterArn"] == {"Fn::GetAtt": [backend.logical_id(stepmigrate.cluster), "Arn"]}
    assert substitutions["TaskDefinitionArn"] == {"Ref": backend.logical_id(stepmigrate.task_definition)}
    # The workers' subnets, as the functions have them.
    apply_one = backend.resources[function_ids(backend)["apply-one"]]["Properties"]
    assert substitutions["TaskSubnets"] == {"Fn::Join": [",", apply_one["VpcConfig"]["SubnetIds"]]}
    # The workers' security group (the database, Secrets Manager) and the task's own.
    assert substitutions["TaskSecurityGroups"] == {"Fn::Join": [",", [
        {"Fn::GetAtt": [backend.logical_id(stepmigrate.security_group), "GroupId"]},
        {"Fn::GetAtt": [backend.logical_id(stepmigrate.task_security_group), "GroupId"]}]]}


def test_a_task_state_that_the_task_definition_does_not_fit_fails_the_synth(tmp_path: Path,
                                                                           fake_packages: Path) -> None:
    document = json.loads(ASL_FILE.read_text())
    check_task_route(document)
    task = apply_task(document)
    task["Parameters"]["Overrides"]["ContainerOverrides"][0]["Name"] = "app"
    with pytest.raises(DefinitionError, match="overrides the container.*app.*only container is `stepmigrate`"):
        check_task_route(document)
    task["Parameters"]["Overrides"]["ContainerOverrides"][0]["Name"] = TASK_CONTAINER_NAME
    task["Parameters"]["LaunchType"] = "EC2"
    definition = tmp_path / "ec2.asl.json"
    definition.write_text(json.dumps(document))
    with pytest.raises(DefinitionError, match="ApplyTask must run its task with LaunchType FARGATE"):
        migrations_from(definition, fake_packages)


# --- the state machine's grants ------------------------------------------------------------------


def test_the_state_machine_runs_only_our_task_definition_in_our_cluster(backend: Synth) -> None:
    statements = sm_statements(backend)
    stepmigrate = backend.stack.stepmigrate
    cluster_arn = {"Fn::GetAtt": [backend.logical_id(stepmigrate.cluster), "Arn"]}
    (run,) = statements_with(statements, "ecs:RunTask")
    assert actions(run) == ["ecs:RunTask"]
    (family,) = resources(run)
    rendered = json.dumps(family)
    assert rendered.endswith(f':task-definition/{stepmigrate.task_definition.family}:*"]]}}')
    assert run["Condition"] == {"ArnEquals": {"ecs:cluster": cluster_arn}}

    (stop,) = statements_with(statements, "ecs:StopTask")
    assert sorted(actions(stop)) == ["ecs:DescribeTasks", "ecs:StopTask"]
    (tasks,) = resources(stop)
    parts = tasks["Fn::Join"][1]
    assert parts[-3:] == [":task/", {"Ref": backend.logical_id(stepmigrate.cluster)}, "/*"]


def test_the_state_machine_passes_exactly_the_two_task_roles(backend: Synth) -> None:
    stepmigrate = backend.stack.stepmigrate
    (pass_role,) = statements_with(sm_statements(backend), "iam:PassRole")
    assert actions(pass_role) == ["iam:PassRole"]
    expected = [{"Fn::GetAtt": [backend.logical_id(role), "Arn"]}
                for role in (stepmigrate.task_role, stepmigrate.task_definition.execution_role)]
    assert sorted(map(json.dumps, resources(pass_role))) == sorted(map(json.dumps, expected))
    assert pass_role["Condition"] == {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}


def test_the_state_machine_manages_only_the_sync_rule(backend: Synth) -> None:
    (events,) = statements_with(sm_statements(backend), "events:PutRule")
    assert sorted(actions(events)) == ["events:DescribeRule", "events:PutRule", "events:PutTargets"]
    (rule,) = resources(events)
    assert rule["Fn::Join"][1][-1] == ":rule/StepFunctionsGetEventsForECSTaskRule"
    assert {"Ref": "AWS::Region"} in rule["Fn::Join"][1] and {"Ref": "AWS::AccountId"} in rule["Fn::Join"][1]


def test_nothing_wider_for_the_task_route(backend: Synth) -> None:
    statements = sm_statements(backend)
    granted = {a for s in statements for a in actions(s)}
    assert {a for a in granted if a.split(":")[0] in ("ecs", "iam", "events")} == {
        "ecs:RunTask", "ecs:StopTask", "ecs:DescribeTasks", "iam:PassRole",
        "events:PutTargets", "events:PutRule", "events:DescribeRule"}
    for statement in statements:
        assert not [a for a in actions(statement) if a.endswith(":*") or a == "*"], statement
        if {a.split(":")[0] for a in actions(statement)} & {"ecs", "iam", "events"}:
            assert "*" not in resources(statement), statement
            assert statement["Effect"] == "Allow"


def test_the_task_role_reads_the_database_secret_and_nothing_else(backend: Synth) -> None:
    stepmigrate = backend.stack.stepmigrate
    statements = role_statements(backend, stepmigrate.task_role)
    assert [sorted(actions(s)) for s in statements] == [["secretsmanager:DescribeSecret",
                                                         "secretsmanager:GetSecretValue"]]
    assert resources(statements[0]) == [{"Ref": backend.logical_id(backend.stack.database.secret)}]
    role = backend.resources[backend.logical_id(stepmigrate.task_role)]["Properties"]
    assert "ManagedPolicyArns" not in role and "Policies" not in role
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}


def test_the_execution_role_pulls_the_image_and_writes_the_log_group(backend: Synth) -> None:
    stepmigrate = backend.stack.stepmigrate
    execution_role = stepmigrate.task_definition.execution_role
    statements = role_statements(backend, execution_role)
    granted = {a: s for s in statements for a in actions(s)}
    assert set(granted) == {"ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer",
                            "ecr:GetAuthorizationToken", "logs:CreateLogStream", "logs:PutLogEvents"}
    assert "container-assets" in json.dumps(resources(granted["ecr:BatchGetImage"]))
    assert resources(granted["ecr:GetAuthorizationToken"]) == ["*"]  # takes no resource
    assert resources(granted["logs:PutLogEvents"]) == [
        {"Fn::GetAtt": [backend.logical_id(stepmigrate.task_log_group), "Arn"]}]
    assert "secretsmanager:GetSecretValue" not in granted


# --- the plan's threshold ------------------------------------------------------------------------


def test_plan_knows_the_task_threshold(backend: Synth) -> None:
    variables = {key: backend.resources[fid]["Properties"]["Environment"]["Variables"]
                 for key, fid in function_ids(backend).items()}
    # apply-one's statement timeout: a migration that needs longer runs as a task.
    assert variables["plan"]["STEPMIGRATE_TASK_THRESHOLD"] == variables["apply-one"]["STEPMIGRATE_STATEMENT_TIMEOUT"]
    assert variables["plan"]["STEPMIGRATE_TASK_THRESHOLD"] == "10min"
    assert [key for key, env in variables.items() if "STEPMIGRATE_TASK_THRESHOLD" in env] == ["plan"]


# --- the network ---------------------------------------------------------------------------------


def test_the_task_has_443_out_and_the_workers_path_to_the_database(backend: Synth) -> None:
    stepmigrate = backend.stack.stepmigrate
    task_sg = backend.resources[backend.logical_id(stepmigrate.task_security_group)]["Properties"]
    assert task_sg["SecurityGroupEgress"] == [{
        "CidrIp": "0.0.0.0/0", "Description": "ECR, its image layers in S3, CloudWatch Logs (the awslogs driver)",
        "FromPort": 443, "IpProtocol": "tcp", "ToPort": 443}]
    assert "SecurityGroupIngress" not in task_sg
    task_sg_id = {"Fn::GetAtt": [backend.logical_id(stepmigrate.task_security_group), "GroupId"]}
    # Only the endpoints' group admits it (the database admits the workers' group, which the
    # task also has).
    endpoint_sg = stepmigrate.task_endpoints["ecr"].connections.security_groups[0]
    admitted = [r["Properties"]["GroupId"] for r in of_type(backend, "AWS::EC2::SecurityGroupIngress").values()
                if r["Properties"].get("SourceSecurityGroupId") == task_sg_id]
    assert admitted == [{"Fn::GetAtt": [backend.logical_id(endpoint_sg), "GroupId"]}]


def test_the_task_endpoints(backend: Synth) -> None:
    stepmigrate = backend.stack.stepmigrate
    assert set(stepmigrate.task_endpoints) == {"ecr", "ecr-docker", "logs", "s3"}
    endpoints = {key: backend.resources[backend.logical_id(ep)]["Properties"]
                 for key, ep in stepmigrate.task_endpoints.items()}
    apply_one = backend.resources[function_ids(backend)["apply-one"]]["Properties"]
    for key, suffix in (("ecr", ".ecr.api"), ("ecr-docker", ".ecr.dkr"), ("logs", ".logs")):
        props = endpoints[key]
        assert json.dumps(props["ServiceName"]).endswith(f'"{suffix}"]]}}'), key
        assert props["VpcEndpointType"] == "Interface" and props["PrivateDnsEnabled"] is True, key
        assert props["SubnetIds"] == apply_one["VpcConfig"]["SubnetIds"], key
        (group,) = props["SecurityGroupIds"]
        ingress = [r["Properties"] for r in of_type(backend, "AWS::EC2::SecurityGroupIngress").values()
                   if r["Properties"]["GroupId"] == group]
        assert [(i["SourceSecurityGroupId"], i["FromPort"], i["ToPort"]) for i in ingress] == [(
            {"Fn::GetAtt": [backend.logical_id(stepmigrate.task_security_group), "GroupId"]}, 443, 443)], key
    s3 = endpoints["s3"]
    assert s3["VpcEndpointType"] == "Gateway" and json.dumps(s3["ServiceName"]).endswith('".s3"]]}')
    assert len(s3["RouteTableIds"]) == 2
    # No policy of ours: it would restrict every workload of those route tables
    # (tests/test_real_service.py).
    assert "PolicyDocument" not in s3


def test_without_task_endpoints(fake_packages: Path) -> None:
    """The default: the endpoints change the whole VPC (tests/test_real_service.py)."""
    stack, vpc, database, secret = minimal_database_stack()
    migrations = StepMigrate(stack, "Migrations", vpc=vpc, database=database, database_secret=secret,
                             database_name="db", packages=WorkerPackages.from_directory(fake_packages))
    assert migrations.task_endpoints == {}
    endpoints = [r["Properties"] for r in Template.from_stack(stack).to_json()["Resources"].values()
                 if r["Type"] == "AWS::EC2::VPCEndpoint"]
    assert len(endpoints) == 1 and "secretsmanager" in json.dumps(endpoints[0]["ServiceName"])


def test_a_deploy_time_run_waits_for_the_task_route(backend: Synth) -> None:
    stepmigrate = backend.stack.stepmigrate
    _, custom = only(of_type(backend, "Custom::StepMigrateMigrations"))
    depends_on = set(custom["DependsOn"])
    needed = [stepmigrate.cluster, stepmigrate.task_definition, stepmigrate.task_role,
              stepmigrate.task_definition.execution_role, stepmigrate.task_security_group,
              *stepmigrate.task_endpoints.values()]
    assert {backend.logical_id(c) for c in needed} <= depends_on
    # The state machine's role policy (the task route's grants) too.
    sm_policy = [lid for lid in depends_on if re.match(r"^MigrationsStateMachineRoleDefaultPolicy", lid)]
    assert sm_policy
