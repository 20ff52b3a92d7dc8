"""The tutor system's backend: its VPC, its PostgreSQL database, the stepmigrate construct that
migrates it during the deployment that changes the migration set (a deployment that changes
only the workers or the application runs no migration), and (as an example) an application
Lambda that deploys only after the migrations succeeded."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aws_cdk import CfnOutput, Duration, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_rds as rds
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

from stepmigrate_cdk import StepMigrate, WorkerPackages

DATABASE_NAME = "tutor_system"
DATABASE_USER = "tutor_admin"
DEFAULT_BACKUP_RETENTION = Duration.days(7)


class BackendStack(Stack):
    """VPC (two AZs, public and private isolated subnets, no NAT gateway), an encrypted RDS
    PostgreSQL 16 instance that requires TLS, StepMigrate, and the application's functions."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        packages: WorkerPackages,
        deletion_protection: bool = False,
        multi_az: bool = False,
        iam_authentication: bool = False,
        backup_retention: Duration = DEFAULT_BACKUP_RETENTION,
        alarm_emails: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)

        self.vpc = self._vpc()
        self.database_secret = rds.DatabaseSecret(self, "DatabaseSecret", username=DATABASE_USER,
                                                  dbname=DATABASE_NAME)
        self.database = self._database(deletion_protection, multi_az, iam_authentication, backup_retention)
        # The instance attaches the secret (AWS::SecretsManager::SecretTargetAttachment), which
        # adds host, port and engine to it; dbname comes from the secret's own template.
        assert self.database.secret is not None

        self.stepmigrate = StepMigrate(
            self, "Migrations",
            vpc=self.vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED),
            database=self.database,
            database_secret=self.database.secret,
            database_name=DATABASE_NAME,
            packages=packages,
            alarm_emails=alarm_emails,
            # This VPC is the stack's own, with no NAT: the long-migration task starts through
            # endpoints (which then serve the whole VPC; off by default for a VPC one shares).
            create_task_endpoints=True,
        )

        self.api_function = self._example_application_function()
        # The application's code expects the migrated schema: it deploys after the migrations.
        self.stepmigrate.run_after(self.api_function)

        CfnOutput(self, "MigrationsStateMachineArn", value=self.stepmigrate.state_machine.state_machine_arn,
                  description="Run migrations by hand: aws stepfunctions start-execution --state-machine-arn ...")
        CfnOutput(self, "MigrationsAlertTopicArn", value=self.stepmigrate.topic.topic_arn,
                  description="Subscribe to the migration failure alerts")
        CfnOutput(self, "MigrationsDashboardName", value=self.stepmigrate.dashboard.dashboard_name)
        CfnOutput(self, "MigrationsDashboardUrl",
                  value=f"https://console.aws.amazon.com/cloudwatch/home?region={self.region}"
                        f"#dashboards:name={self.stepmigrate.dashboard.dashboard_name}")

        self._suppress_nag_findings(deletion_protection, multi_az, iam_authentication)

    def _vpc(self) -> ec2.Vpc:
        vpc = ec2.Vpc(
            self, "Vpc", max_azs=2, nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
                ec2.SubnetConfiguration(name="isolated", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=24),
            ])
        flow_logs = logs.LogGroup(self, "VpcFlowLogs", retention=logs.RetentionDays.ONE_MONTH,
                                  removal_policy=RemovalPolicy.DESTROY)
        vpc.add_flow_log("FlowLog", destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs))
        return vpc

    def _database(self, deletion_protection: bool, multi_az: bool, iam_authentication: bool,
                  backup_retention: Duration) -> rds.DatabaseInstance:
        # The major version only ("16"): RDS creates the instance with its default minor version
        # and auto_minor_version_upgrade (on by default) keeps it current, so a deploy never
        # breaks because AWS retired the minor version the template named. cfn-lint warns about
        # it (W3691 "Engine version '16' for engine 'postgres' is deprecated and cannot be used
        # to create new RDS DB instances"): a false positive, as its data marks a major version
        # deprecated as soon as any of its minor versions is (16.1 ... 16.8 are). Pinning a minor
        # version instead would silence it only until AWS retires that minor version, when
        # every deploy of a new stack breaks; so W3691 is ignored on this resource only (below).
        engine = rds.DatabaseInstanceEngine.postgres(version=rds.PostgresEngineVersion.VER_16)
        parameters = rds.ParameterGroup(self, "DatabaseParameters", engine=engine,
                                        description="tutor_system: TLS required",
                                        parameters={"rds.force_ssl": "1"})
        database = rds.DatabaseInstance(
            self, "Database",
            engine=engine,
            instance_type=ec2.InstanceType.of(ec2.InstanceClass.BURSTABLE4_GRAVITON, ec2.InstanceSize.MICRO),
            vpc=self.vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED),
            # An explicit secret rather than Credentials.from_generated_secret, whose secret has no
            # dbname (the workers are also given DB_NAME by StepMigrate).
            credentials=rds.Credentials.from_secret(self.database_secret),
            database_name=DATABASE_NAME,
            parameter_group=parameters,
            storage_encrypted=True,
            allocated_storage=20,
            multi_az=multi_az,
            deletion_protection=deletion_protection,
            backup_retention=backup_retention,
            iam_authentication=iam_authentication,
            removal_policy=RemovalPolicy.SNAPSHOT,
        )
        # cfn-lint's resource-level configuration: its W3691 false positive on the major version
        # (see above), on this resource only; every other check still applies to it.
        cfn_database = database.node.default_child
        assert isinstance(cfn_database, rds.CfnDBInstance)
        cfn_database.add_metadata("cfn-lint", {"config": {"ignore_checks": ["W3691"]}})
        return database

    def _example_application_function(self) -> lambda_.Function:
        """A placeholder for the application's own functions (the tutor system's API): it only
        shows how they are ordered after the migrations."""
        log_group = logs.LogGroup(self, "ApiFunctionLogGroup", retention=logs.RetentionDays.ONE_MONTH)
        role = iam.Role(self, "ApiFunctionRole", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
        role.add_to_policy(iam.PolicyStatement(actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                                               resources=[log_group.log_group_arn]))
        return lambda_.Function(
            self, "ApiFunction",
            description="EXAMPLE placeholder of the application's functions (not part of stepmigrate)",
            runtime=lambda_.Runtime.PYTHON_3_14,
            handler="index.handler",
            code=lambda_.Code.from_inline(
                "# The application's code goes here; it runs after the migrations are applied.\n"
                "def handler(event, context):\n"
                "    return {'statusCode': 200, 'body': 'tutor system API placeholder'}\n"),
            timeout=Duration.seconds(10),
            log_group=log_group,
            role=role,
        )

    def _suppress_nag_findings(self, deletion_protection: bool, multi_az: bool, iam_authentication: bool) -> None:
        """The database's AwsSolutions findings that this development stack accepts, each
        only while its setting is off."""
        database: list[NagPackSuppression] = [
            NagPackSuppression(id="AwsSolutions-RDS11", reason=(
                "PostgreSQL's default port 5432: the instance is in isolated subnets and its security group "
                "admits only the stepmigrate workers; a non-standard port adds no protection")),
        ]
        if not multi_az:
            database.append(NagPackSuppression(id="AwsSolutions-RDS3", reason=(
                "Single-AZ in the development stack to halve its cost; multi_az=True for production")))
        if not deletion_protection:
            database.append(NagPackSuppression(id="AwsSolutions-RDS10", reason=(
                "Deletion protection off in the development stack so that it can be torn down; "
                "deletion_protection=True for production (a snapshot is kept on delete either way)")))
        if not iam_authentication:
            database.append(NagPackSuppression(id="AwsSolutions-RDS6", reason=(
                "The workers authenticate with the Secrets Manager password over TLS (rds.force_ssl=1); "
                "iam_authentication=True enables IAM database authentication for other clients")))
        NagSuppressions.add_resource_suppressions(self.database, database, apply_to_children=True)
        NagSuppressions.add_resource_suppressions(self.database_secret, [
            NagPackSuppression(id="AwsSolutions-SMG4", reason=(
                "The generated master secret is not rotated in the development stack: rotation needs a "
                "rotation Lambda in the VPC; production stacks add database.add_rotation_single_user()")),
        ], apply_to_children=True)
