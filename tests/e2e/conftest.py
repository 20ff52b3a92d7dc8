"""Fixtures of the end-to-end harness.

Session: moto's server (Step Functions with execution on, SNS, SQS, CloudWatch) whose
MOTO_PORT is the Lambda proxy; the proxy (Lambda Invoke -> workers, everything else -> moto);
boto3 clients pointed at the proxy; the alerts topic; the workers (`cargo lambda watch`, or
STEPMIGRATE_E2E_WORKERS_CMD), started on first use with the environment of `workers_env`.
Every process is stopped at the end of the session, whatever happened.

Per test: a fresh PostgreSQL database (`fresh_database`), an SQS queue on the topic
(`alerts`), and `e2e_workers`: the workers restarted if needed so that their DATABASE_URL is
the test's database.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

import harness

TOPIC_NAME = "stepmigrate-alerts-e2e"


@pytest.fixture(scope="session")
def e2e_logs(tmp_path_factory) -> Path:
    path = Path(os.environ.get("STEPMIGRATE_E2E_LOGS") or tmp_path_factory.mktemp("e2e-logs"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def ports() -> dict[str, int]:
    return {"moto": harness.free_port(), "proxy": harness.free_port()}


@pytest.fixture(scope="session")
def moto_server(ports, e2e_logs):
    """moto's server on its own port, told that Lambda (and every AWS call of the ASL
    interpreter) is at localhost:MOTO_PORT, i.e. the proxy."""
    env = dict(os.environ, MOTO_PORT=str(ports["proxy"]), PYTHONUNBUFFERED="1")
    for var in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        env.pop(var, None)
    proc = harness.ManagedProcess(
        "moto", [sys.executable, str(harness.E2E_DIR / "moto_server.py"), "-H", "127.0.0.1", "-p", str(ports["moto"])],
        e2e_logs / "moto.log", env=env).start()
    try:
        proc.wait_for_port(ports["moto"], timeout=60)
        url = f"http://127.0.0.1:{ports['moto']}"
        harness.moto_config(url, {"stepfunctions": {"execute_state_machine": True}})
        yield url
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def workers_port() -> int:
    return harness.free_port()


@pytest.fixture(scope="session")
def lambda_proxy(ports, moto_server, workers_port, e2e_logs):
    """The proxy's URL: the AWS endpoint of the tests and of the workers."""
    port = ports["proxy"]
    proc = harness.ManagedProcess(
        "lambda-proxy",
        [sys.executable, str(harness.E2E_DIR / "lambda_proxy.py"), "--port", str(port),
         "--moto-url", moto_server, "--workers-url", f"http://127.0.0.1:{workers_port}"],
        e2e_logs / "lambda_proxy.log", env=dict(os.environ, PYTHONUNBUFFERED="1")).start()
    try:
        proc.wait_for_port(port, timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def aws_endpoint(lambda_proxy) -> str:
    return lambda_proxy


@pytest.fixture(scope="session")
def sfn(aws_endpoint):
    return harness.client("stepfunctions", aws_endpoint)


@pytest.fixture(scope="session")
def sns(aws_endpoint):
    return harness.client("sns", aws_endpoint)


@pytest.fixture(scope="session")
def sqs(aws_endpoint):
    return harness.client("sqs", aws_endpoint)


@pytest.fixture(scope="session")
def cloudwatch(aws_endpoint):
    return harness.client("cloudwatch", aws_endpoint)


@pytest.fixture(scope="session")
def sns_topic_arn(sns) -> str:
    return sns.create_topic(Name=TOPIC_NAME)["TopicArn"]


@pytest.fixture(scope="session")
def session_database():
    db = harness.create_database("e2e_session")
    try:
        yield db
    finally:
        harness.drop_database(db)


@pytest.fixture(scope="session")
def workers_env(aws_endpoint, sns_topic_arn, session_database) -> dict[str, str]:
    """The environment the workers (and so every function) start with. Tests change it through
    `workers.ensure({...})`; `e2e_workers` does so for DATABASE_URL."""
    return {
        "DATABASE_URL": session_database.url,
        "STEPMIGRATE_MIGRATIONS_DIR": str(harness.REPO / "migrations"),
        "SNS_TOPIC_ARN": sns_topic_arn,
        "AWS_ENDPOINT_URL": aws_endpoint,
        "AWS_REGION": harness.REGION,
        "AWS_DEFAULT_REGION": harness.REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        # The trigger's onEvent role; test_trigger.py runs a second set for isComplete.
        "STEPMIGRATE_TRIGGER_HANDLER": "on_event",
        "RUST_LOG": os.environ.get("RUST_LOG", "info"),
        "RUST_BACKTRACE": "1",
    }


@pytest.fixture(scope="session")
def workers(workers_env, workers_port, lambda_proxy, e2e_logs):
    """The Lambda workers the proxy sends invokes to (see harness.Workers)."""
    w = harness.Workers(workers_env, e2e_logs / "workers.log", port=workers_port)
    try:
        yield w.ensure()
    finally:
        w.stop()


@pytest.fixture
def fresh_database():
    db = harness.create_database()
    try:
        yield db
    finally:
        harness.drop_database(db)


@pytest.fixture
def e2e_workers(workers, fresh_database):
    """The workers, running against this test's fresh database."""
    return workers.ensure({"DATABASE_URL": fresh_database.url})


@pytest.fixture
def alerts(sns, sqs, sns_topic_arn):
    a = harness.Alerts.subscribe(sns, sqs, sns_topic_arn)
    try:
        yield a
    finally:
        a.close()


@pytest.fixture
def create_state_machine(sfn):
    """create_state_machine(definition_path_or_dict, substitutions, name=None) -> ARN."""

    def create(definition, substitutions=None, name=None, **kwargs):
        return harness.create_state_machine(sfn, definition, substitutions, name=name, **kwargs)

    return create


@pytest.fixture
def run_execution(sfn):
    """run_execution(sm_arn, input, name=None, timeout=120) -> harness.Execution
    (also unpacks as `description, events`)."""

    def run(sm_arn, input=None, name=None, timeout=120.0):
        return harness.run_execution(sfn, sm_arn, input, name=name, timeout=timeout)

    return run


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        seen = set()
        for proc in reversed(harness.PROCESSES):
            if proc.log_path in seen:
                continue
            seen.add(proc.log_path)
            report.sections.append((f"{proc.name} log ({proc.log_path}), last lines", proc.tail(80)))
