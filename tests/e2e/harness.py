"""Helpers of the end-to-end harness: processes it starts, AWS clients, state machines,
executions, alert queues and databases. The fixtures in conftest.py are built on these; a test
may import this module directly (``import harness``) for what fixtures do not cover.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import boto3
from botocore.config import Config

E2E_DIR = Path(__file__).resolve().parent
REPO = E2E_DIR.parents[1]
DEFINITION = REPO / "statemachine" / "stepmigrate.asl.json"
#: The profile the workers and the CLI are built in: the test profile by default, which
#: `cargo nextest` has built already (a release build of the workspace costs minutes of CI);
#: STEPMIGRATE_E2E_PROFILE=release runs the Lambda artifacts' own profile.
PROFILE = os.environ.get("STEPMIGRATE_E2E_PROFILE", "debug")
BIN_DIR = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target") / PROFILE

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/stepmigrate-e2e"
DUMMY_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}

PROCESSES: list["ManagedProcess"] = []  # every process started, for log tails on failure


def function_arn(name: str, region: str = REGION, account: str = ACCOUNT) -> str:
    return f"arn:aws:lambda:{region}:{account}:function:{name}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _children_of() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def descendants(pid: int) -> list[int]:
    tree = _children_of()
    out, todo = [], [pid]
    while todo:
        for c in tree.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


class ManagedProcess:
    """A server process of the harness, in its own process group, logging to a file.

    stop() ends it and everything it started (some of its children, e.g. the functions that
    cargo lambda watch runs through watchexec, live in process groups of their own)."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: Mapping[str, str] | None = None,
                 cwd: Path = REPO):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.env = dict(env if env is not None else os.environ)
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None

    def start(self) -> "ManagedProcess":
        log = open(self.log_path, "ab")
        log.write(f"\n=== {time.strftime('%H:%M:%S')} start {shlex.join(self.argv)}\n".encode())
        log.flush()
        self.proc = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        PROCESSES.append(self)
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_for_port(self, port: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before listening "
                                   f"on {port}:\n{self.tail()}")
            if port_open(port):
                return
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} did not listen on {port} within {timeout}s:\n{self.tail()}")

    def stop(self, grace: float = 10.0) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is not None:
            return
        family = descendants(proc.pid)
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(5)
        # Whatever it started and left behind, by pid (only processes it started).
        for pid in family:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


# --- AWS ------------------------------------------------------------------------------------

def client(service: str, endpoint_url: str):
    return boto3.client(service, endpoint_url=endpoint_url, region_name=REGION,
                        config=Config(retries={"max_attempts": 2, "mode": "standard"},
                                      read_timeout=120),
                        **DUMMY_CREDENTIALS)


def moto_config(moto_url: str, config: dict) -> None:
    req = urllib.request.Request(f"{moto_url}/moto-api/config", data=json.dumps(config).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        resp.read()


PLACEHOLDER = re.compile(r"\$\{([^}]+)\}")


def substitute(text: str, substitutions: Mapping[str, Any]) -> str:
    """`${Name}` -> substitutions[Name], as CloudFormation's DefinitionSubstitutions does (plain
    text replacement). Every placeholder must have a value."""
    missing = sorted({m for m in PLACEHOLDER.findall(text) if m not in substitutions})
    if missing:
        raise KeyError(f"no substitution for {', '.join('${' + m + '}' for m in missing)}")
    return PLACEHOLDER.sub(lambda m: str(substitutions[m.group(1)]), text)


def create_state_machine(sfn, definition: str | Path | Mapping, substitutions: Mapping[str, Any] | None = None,
                         name: str | None = None, **kwargs) -> str:
    """Creates a STANDARD state machine from an ASL file (a path), a JSON string or a dict, with
    `${Name}` placeholders substituted. Returns its ARN."""
    if isinstance(definition, Mapping):
        text = json.dumps(definition)
    elif isinstance(definition, Path) or (isinstance(definition, str) and not definition.lstrip().startswith("{")):
        text = Path(definition).read_text()
    else:
        text = definition
    text = substitute(text, substitutions or {})
    json.loads(text)  # a clear error here beats moto's InvalidDefinition
    args = dict(name=name or f"e2e-{uuid.uuid4().hex[:12]}", definition=text, roleArn=ROLE_ARN,
                type="STANDARD")
    args.update(kwargs)
    return sfn.create_state_machine(**args)["stateMachineArn"]


@dataclass
class Execution:
    description: dict
    events: list[dict]

    def __iter__(self) -> Iterator:  # desc, events = run_execution(...)
        return iter((self.description, self.events))

    @property
    def arn(self) -> str:
        return self.description["executionArn"]

    @property
    def status(self) -> str:
        return self.description["status"]

    @property
    def output(self) -> Any:
        out = self.description.get("output")
        return json.loads(out) if out is not None else None

    @property
    def error(self) -> str | None:
        return self.description.get("error")

    @property
    def cause(self) -> str | None:
        return self.description.get("cause")

    def events_of(self, *types: str) -> list[dict]:
        return [e for e in self.events if e["type"] in types]

    def event_types(self) -> list[str]:
        return [e["type"] for e in self.events]

    def details(self, *types: str) -> list[dict]:
        """The `...EventDetails` dicts of the events of those types, in order."""
        out = []
        for e in self.events_of(*types):
            out.extend(v for k, v in e.items() if k.endswith("EventDetails"))
        return out

    def dump(self) -> str:
        return json.dumps({"description": self.description, "events": self.events}, default=str, indent=1)


def execution_history(sfn, execution_arn: str) -> list[dict]:
    events, token = [], None
    while True:
        args = {"executionArn": execution_arn, "maxResults": 1000}
        if token:
            args["nextToken"] = token
        page = sfn.get_execution_history(**args)
        events.extend(page["events"])
        token = page.get("nextToken")
        if not token:
            return events


def run_execution(sfn, sm_arn: str, input: Any = None, name: str | None = None, timeout: float = 120.0,
                  poll: float = 0.2) -> Execution:
    """Starts an execution (named `name`, or a fresh unique name: moto names an unnamed one
    "None"), waits until it is no longer RUNNING and returns its description and history."""
    if input is None:
        payload = "{}"
    elif isinstance(input, str):
        payload = input
    else:
        payload = json.dumps(input)
    arn = sfn.start_execution(stateMachineArn=sm_arn, name=name or f"e2e-{uuid.uuid4().hex}",
                              input=payload)["executionArn"]
    deadline = time.monotonic() + timeout
    while True:
        desc = sfn.describe_execution(executionArn=arn)
        if desc["status"] != "RUNNING":
            break
        if time.monotonic() > deadline:
            events = execution_history(sfn, arn)
            try:
                sfn.stop_execution(executionArn=arn, error="E2ETimeout", cause="harness timeout")
            except Exception:  # noqa: BLE001 - best effort
                pass
            raise TimeoutError(f"execution {arn} still RUNNING after {timeout}s; history:\n"
                               + json.dumps(events, default=str, indent=1)[-6000:])
        time.sleep(poll)
    desc.pop("ResponseMetadata", None)
    return Execution(description=desc, events=execution_history(sfn, arn))


# --- alerts: an SQS queue subscribed to the topic ----------------------------------------------

@dataclass
class Alerts:
    sqs: Any
    sns: Any
    topic_arn: str
    queue_url: str
    subscription_arn: str
    received: list[dict] = field(default_factory=list)

    @classmethod
    def subscribe(cls, sns, sqs, topic_arn: str) -> "Alerts":
        url = sqs.create_queue(QueueName=f"e2e-alerts-{uuid.uuid4().hex[:12]}")["QueueUrl"]
        qarn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sub = sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=qarn,
                            Attributes={"RawMessageDelivery": "true"}, ReturnSubscriptionArn=True)
        return cls(sqs=sqs, sns=sns, topic_arn=topic_arn, queue_url=url,
                   subscription_arn=sub["SubscriptionArn"])

    def _drain(self) -> int:
        n = 0
        while True:
            resp = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10,
                                            WaitTimeSeconds=0, MessageAttributeNames=["All"],
                                            AttributeNames=["All"])
            msgs = resp.get("Messages", [])
            if not msgs:
                return n
            for m in msgs:
                try:
                    parsed = json.loads(m["Body"])
                except ValueError:
                    parsed = None
                self.received.append({"body": m["Body"], "json": parsed,
                                      "attributes": m.get("MessageAttributes", {}),
                                      "message_id": m["MessageId"]})
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"])
                n += 1

    def messages(self, expect: int | None = None, timeout: float = 10.0) -> list[dict]:
        """Every message published to the topic since the subscription (raw delivery: `body` is
        the published Message, `json` it parsed or None, `attributes` the message attributes).
        With `expect`, waits up to `timeout` for at least that many."""
        deadline = time.monotonic() + timeout
        self._drain()
        while expect is not None and len(self.received) < expect and time.monotonic() < deadline:
            time.sleep(0.2)
            self._drain()
        return list(self.received)

    def close(self) -> None:
        try:
            self.sns.unsubscribe(SubscriptionArn=self.subscription_arn)
        finally:
            self.sqs.delete_queue(QueueUrl=self.queue_url)


# --- PostgreSQL ------------------------------------------------------------------------------

PG = {
    "host": os.environ.get("PGHOST", "127.0.0.1"),
    "port": int(os.environ.get("PGPORT", "5432")),
    "user": os.environ.get("PGUSER", "postgres"),
}


def pg_url(dbname: str) -> str:
    return f"postgres://{PG['user']}@{PG['host']}:{PG['port']}/{dbname}"


@dataclass
class Database:
    name: str

    @property
    def url(self) -> str:
        return pg_url(self.name)

    def connect(self, **kwargs):
        import psycopg

        return psycopg.connect(self.url, **kwargs)

    def query(self, sql: str, params: Any = None) -> list[tuple]:
        with self.connect() as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []


def create_database(prefix: str = "e2e") -> Database:
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_url("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return Database(name)


def drop_database(db: Database) -> None:
    import psycopg

    with psycopg.connect(pg_url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)')


# --- the workers -------------------------------------------------------------------------------

DEFAULT_WORKERS_CMD = ("cargo lambda watch --ignore-changes" + (" --release" if PROFILE == "release" else "")
                       + " --invoke-address 127.0.0.1 --invoke-port {port}")


class Workers:
    """The Lambda workers behind the proxy: `cargo lambda watch` from the repository root, or
    the command in STEPMIGRATE_E2E_WORKERS_CMD (a shell command; `{port}` and `{python}` are
    replaced; it also gets STEPMIGRATE_E2E_WORKERS_PORT). The functions inherit the process
    environment, so the environment is fixed when it starts: ensure(env) restarts it (on the
    same port, so the proxy needs no change) when a test needs another one."""

    def __init__(self, base_env: Mapping[str, str], log_path: Path, port: int | None = None,
                 command: str | None = None):
        self.base_env = dict(base_env)
        self.log_path = log_path
        self.port = port or free_port()
        self.custom = command if command is not None else os.environ.get("STEPMIGRATE_E2E_WORKERS_CMD")
        self.command = self.custom or DEFAULT_WORKERS_CMD
        self.process: ManagedProcess | None = None
        self.env: dict[str, str] | None = None
        self.prebuilt = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _process_env(self, env: Mapping[str, str]) -> dict[str, str]:
        full = dict(os.environ)
        # `cargo lambda` is the cargo-lambda binary of the harness's virtualenv.
        full["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{full.get('PATH', '')}"
        full.update(env)
        full["STEPMIGRATE_E2E_WORKERS_PORT"] = str(self.port)
        return full

    def _prebuild(self, env: Mapping[str, str]) -> None:
        """cargo lambda watch compiles a function on its first invocation, which then waits (and
        a Task's TimeoutSeconds may run out): build the binaries first, in the same profile."""
        if self.custom or self.prebuilt or os.environ.get("STEPMIGRATE_E2E_PREBUILD", "1") == "0":
            return
        with open(self.log_path, "ab") as log:
            profile = ["--release"] if PROFILE == "release" else []
            log.write(f"\n=== cargo build {' '.join(profile)} --bins\n".encode())
            log.flush()
            subprocess.run(["cargo", "build", *profile, "--bins"], cwd=REPO, env=env,
                           stdout=log, stderr=subprocess.STDOUT, check=True, timeout=3600)
        self.prebuilt = True

    def ensure(self, overrides: Mapping[str, str] | None = None) -> "Workers":
        env = {**self.base_env, **(overrides or {})}
        if self.process is not None and self.process.running and env == self.env:
            return self
        self.stop()
        full = self._process_env(env)
        self._prebuild(full)
        cmd = self.command.replace("{port}", str(self.port)).replace("{python}", shlex.quote(sys.executable))
        self.process = ManagedProcess("workers", ["bash", "-c", cmd], self.log_path, env=full).start()
        self.process.wait_for_port(self.port, timeout=120)
        self.env = env
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None
            # the port must be free again before a restart binds it
            deadline = time.monotonic() + 10
            while port_open(self.port) and time.monotonic() < deadline:
                time.sleep(0.1)


def start_stub_workers(log_path: Path, functions: list[str] | None = None) -> tuple[ManagedProcess, str]:
    """A stub_workers.py of its own on a free port; returns the process and its URL."""
    port = free_port()
    argv = [sys.executable, str(E2E_DIR / "stub_workers.py"), "--port", str(port)]
    if functions:
        argv += ["--functions", ",".join(functions)]
    proc = ManagedProcess("stub-workers", argv, log_path).start()
    proc.wait_for_port(port, timeout=30)
    return proc, f"http://127.0.0.1:{port}"


def set_proxy_routes(proxy_url: str, routes: Mapping[str, str]) -> None:
    req = urllib.request.Request(f"{proxy_url}/_lambda_proxy/routes", data=json.dumps(dict(routes)).encode(),
                                 headers={"Content-Type": "application/json"}, method="PUT")
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()


def delete_proxy_route(proxy_url: str, name: str) -> None:
    req = urllib.request.Request(f"{proxy_url}/_lambda_proxy/routes/{name}", method="DELETE")
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()
