"""The real definition (statemachine/stepmigrate.asl.json) run by moto's ASL interpreter, its
tasks served by the real worker binaries, against a real PostgreSQL: each scenario asserts on
the ledger, the execution's status, output and history, the alert and the metrics."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest

import harness

DEFINITION = harness.REPO / "statemachine" / "stepmigrate.asl.json"
FUNCTIONS = {
    "PlanFunctionArn": harness.function_arn("plan"),
    "ApplyOneFunctionArn": harness.function_arn("apply-one"),
    "RecordFunctionArn": harness.function_arn("record"),
    "NotifyFunctionArn": harness.function_arn("notify"),
    # The task route's resources (test_task.py gives real ones on moto's ECS); an item without
    # `task: true` never reaches ApplyTask, so these only need to make a valid definition.
    "TaskClusterArn": f"arn:aws:ecs:{harness.REGION}:{harness.ACCOUNT}:cluster/unused",
    "TaskDefinitionArn": f"arn:aws:ecs:{harness.REGION}:{harness.ACCOUNT}:task-definition/unused:1",
    "TaskSubnets": "subnet-unused",
    "TaskSecurityGroups": "sg-unused",
}
#: Step Functions' limit on a state's input, output or result (and an execution's).
PAYLOAD_LIMIT = 256 * 1024
REPO_MIGRATIONS = sorted(p.stem for p in (harness.REPO / "migrations").glob("[0-9]*.sql") if not p.stem.endswith(".down"))


@pytest.fixture
def state_machine(create_state_machine):
    return create_state_machine(DEFINITION, FUNCTIONS)


@pytest.fixture
def migrations_dir(tmp_path) -> Path:
    d = tmp_path / "migrations"
    d.mkdir()
    return d


def write(d: Path, files: dict[str, str]) -> Path:
    for name, sql in files.items():
        (d / name).write_text(sql)
    return d


_REVISION = [0]


def use_migrations(workers, db, d: Path, **extra: str) -> None:
    """(Re)starts the workers on this database and migrations directory: a Lambda instance
    loads its packaged migrations once, so new files need new instances."""
    _REVISION[0] += 1
    workers.ensure({"DATABASE_URL": db.url, "STEPMIGRATE_MIGRATIONS_DIR": str(d), "E2E_REVISION": str(_REVISION[0]),
                    **extra})


def ledger(db) -> list[tuple]:
    return db.query("SELECT version::text, success, dirty FROM schema_migrations WHERE version <> '000' ORDER BY version")


def applied_events(db) -> list[str]:
    return [v for (v,) in db.query(
        "SELECT version::text FROM schema_migration_events WHERE kind = 'applied' AND version <> '000' ORDER BY id")]


def emf_lines(workers, since: int, metric: str) -> list[dict]:
    """The Embedded Metric Format lines the workers wrote since a log offset."""
    out = []
    with open(workers.log_path, "rb") as f:
        f.seek(since)
        for raw in f.read().decode(errors="replace").splitlines():
            start = raw.find('{"')
            if start < 0 or '"_aws"' not in raw:
                continue
            try:
                doc = json.loads(raw[start:])
            except ValueError:
                continue
            if metric in doc:
                out.append(doc)
    return out


def log_offset(workers) -> int:
    return Path(workers.log_path).stat().st_size if Path(workers.log_path).exists() else 0


def test_fresh_database_applies_everything_in_order_then_nothing(e2e_workers, fresh_database, state_machine,
                                                                  run_execution):
    since = log_offset(e2e_workers)
    first = run_execution(state_machine, {"action": "migrate"})
    assert first.status == "SUCCEEDED", first.dump()
    assert first.output["applied_count"] == len(REPO_MIGRATIONS)
    assert [m["name"] for m in first.output["migrations"]] == REPO_MIGRATIONS
    assert [v for v, ok, _ in ledger(fresh_database) if ok] == [n[:3] for n in REPO_MIGRATIONS]
    assert applied_events(fresh_database) == [n[:3] for n in REPO_MIGRATIONS], "in order, each once"
    # One Map iteration, one task, per migration.
    assert len(first.events_of("MapIterationSucceeded")) == len(REPO_MIGRATIONS)
    scheduled = first.events_of("LambdaFunctionScheduled", "TaskScheduled")
    assert len(scheduled) == 1 + len(REPO_MIGRATIONS), "plan, then one apply-one per migration"
    # The history budget statemachine/README.md states: 9 events per migration (the Batch?
    # Choice, then ApplyOne).
    types = first.event_types()
    start, end = types.index("MapIterationStarted"), len(types) - types[::-1].index("MapIterationSucceeded")
    assert (end - start) == 9 * len(REPO_MIGRATIONS), types[start:end]
    # Metrics: one MigrationsApplied EMF line per migration, with the version as a property.
    applied = emf_lines(e2e_workers, since, "MigrationsApplied")
    assert sorted(d["version"] for d in applied) == [n[:3] for n in REPO_MIGRATIONS]
    assert all(d["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Database"]] for d in applied)
    assert emf_lines(e2e_workers, since, "PendingMigrations")[0]["PendingMigrations"] == len(REPO_MIGRATIONS)

    second = run_execution(state_machine, {})
    assert second.status == "SUCCEEDED", second.dump()
    assert second.output["applied_count"] == 0
    assert second.events_of("MapIterationStarted") == []
    assert applied_events(fresh_database) == [n[:3] for n in REPO_MIGRATIONS], "nothing applied twice"


def test_dry_run_and_status_apply_nothing(e2e_workers, fresh_database, state_machine, run_execution):
    dry = run_execution(state_machine, {"action": "migrate", "dry_run": True})
    assert dry.status == "SUCCEEDED", dry.dump()
    assert [m["name"] for m in dry.output["pending"]] == REPO_MIGRATIONS
    assert dry.output["dry_run"] is True
    assert fresh_database.query("SELECT to_regclass('schema_migrations') IS NULL") == [(True,)]
    assert dry.events_of("MapIterationStarted") == []

    migrated = run_execution(state_machine, {"action": "migrate", "target": "003"})
    assert migrated.status == "SUCCEEDED", migrated.dump()
    status = run_execution(state_machine, {"action": "status"})
    assert status.status == "SUCCEEDED", status.dump()
    states = {m["name"]: m["state"] for m in status.output["migrations"]}
    assert [states[n] for n in REPO_MIGRATIONS[:3]] == ["applied"] * 3
    assert [states[n] for n in REPO_MIGRATIONS[3:]] == ["pending"] * (len(REPO_MIGRATIONS) - 3)
    assert status.output["applied"] == 3
    assert len(applied_events(fresh_database)) == 3


def test_sql_error_stops_the_run_records_alerts_and_fails_naming_it(workers, fresh_database, migrations_dir,
                                                                      state_machine, run_execution, alerts,
                                                                      cloudwatch):
    write(migrations_dir, {
        "001_create_users.sql": "CREATE TABLE users (id int);\n",
        "002_add_new_feature.sql": "-- Migration: broken\nALTER TABLE users ADD COLUMN email text;\nINSERT INTO no_such_table VALUES (1);\n",
        "003_after.sql": "CREATE TABLE after_it (id int);\n",
    })
    use_migrations(workers, fresh_database, migrations_dir)
    run = run_execution(state_machine, {"action": "migrate"})
    assert run.status == "FAILED", run.dump()
    assert run.error == "SqlFailed"
    assert "002_add_new_feature failed" in run.cause and "42P01" in run.cause, run.cause
    # Stopped there: 003 never ran, 002 rolled back whole (its first statement too).
    assert ledger(fresh_database) == [("001", True, False), ("002", False, False)]
    assert fresh_database.query("SELECT to_regclass('after_it') IS NULL") == [(True,)]
    assert fresh_database.query(
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'users' AND column_name = 'email'") == [(0,)]
    (error,) = fresh_database.query(
        "SELECT error FROM schema_migration_events WHERE version = '002' AND kind = 'failed'")[0]
    assert error["sqlstate"] == "42P01" and error["line"] == 3
    # Not retried: SqlFailed is final.
    failed_tasks = [d for d in run.details("LambdaFunctionFailed", "TaskFailed") if d.get("error") == "SqlFailed"]
    assert len(failed_tasks) == 1, run.dump()
    # One alert a person can act on.
    messages = alerts.messages(expect=1, timeout=20)
    assert len(messages) == 1, messages
    body = messages[0]["body"]
    assert messages[0]["attributes"]["status"]["StringValue"] == "FAILED"
    assert messages[0]["attributes"]["database"]["StringValue"] == fresh_database.name
    for needle in ("Migration 002_add_new_feature failed", "SQLSTATE: 42P01", "Line: 3", run.arn, "What to do next"):
        assert needle in body, body
    # The failure metric, put by notify.
    metrics = cloudwatch.list_metrics(Namespace="Stepmigrate", MetricName="MigrationFailures")["Metrics"]
    assert any({"Name": "Database", "Value": fresh_database.name} in m["Dimensions"] for m in metrics), metrics


def test_a_held_lock_makes_the_migration_retry_then_succeed(workers, fresh_database, migrations_dir, state_machine,
                                                          run_execution):
    write(migrations_dir, {"001_create_users.sql": "CREATE TABLE users (id int);\n"})
    use_migrations(workers, fresh_database, migrations_dir)
    assert run_execution(state_machine, {}).status == "SUCCEEDED"

    write(migrations_dir, {"002_add_email.sql": "ALTER TABLE users ADD COLUMN email text;\n"})
    # Fail fast inside the worker; the state machine's Retry does the waiting.
    use_migrations(workers, fresh_database, migrations_dir, STEPMIGRATE_LOCK_TIMEOUT="200ms",
                   STEPMIGRATE_LOCK_RETRIES="0")
    holder = fresh_database.connect()
    holder.execute("LOCK TABLE users IN ACCESS SHARE MODE")  # the application reading, in a transaction
    stop = threading.Event()

    def release_after_the_first_wait():
        # Released once the worker has waited on it (and, 200 ms later, timed out), however
        # long the workers took to start: a fixed delay let a slow start miss the lock.
        deadline = time.monotonic() + 150
        while not stop.is_set() and time.monotonic() < deadline:
            waiting = fresh_database.query(
                "SELECT count(*) FROM pg_locks WHERE relation = 'users'::regclass AND NOT granted")
            if waiting[0][0] > 0:
                time.sleep(1.0)
                break
            time.sleep(0.05)
        holder.rollback()

    release = threading.Thread(target=release_after_the_first_wait, daemon=True)
    release.start()
    try:
        run = run_execution(state_machine, {}, timeout=180)
    finally:
        stop.set()
        release.join(timeout=10)
        holder.close()
    assert run.status == "SUCCEEDED", run.dump()
    lock_timeouts = [d for d in run.details("LambdaFunctionFailed", "TaskFailed") if d.get("error") == "LockTimeout"]
    assert lock_timeouts, "the first try hit the lock_timeout"
    assert "55P03" in lock_timeouts[0]["cause"]
    assert ledger(fresh_database) == [("001", True, False), ("002", True, False)]


@pytest.mark.parametrize("bad_input", [{"action": "rollback"}, {"action": "migrate", "dry_run": "yes"},
                                       {"actoin": "status"}])
def test_invalid_input_fails_at_once(e2e_workers, fresh_database, state_machine, run_execution, bad_input):
    run = run_execution(state_machine, bad_input)
    assert run.status == "FAILED", run.dump()
    assert run.error == "InvalidInput"
    assert "accepted input" in run.cause, run.cause
    assert run.events_of("MapIterationStarted") == []
    assert fresh_database.query("SELECT to_regclass('schema_migrations') IS NULL") == [(True,)]


def test_two_executions_at_once_apply_each_migration_exactly_once(e2e_workers, fresh_database, state_machine, sfn):
    results = []

    def go():
        results.append(harness.run_execution(sfn, state_machine, {"action": "migrate"}, timeout=180))

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status for r in results] == ["SUCCEEDED", "SUCCEEDED"], [r.dump() for r in results]
    assert applied_events(fresh_database) == [n[:3] for n in REPO_MIGRATIONS], "each once, in order"


def test_drift_fails_the_plan_and_alerts(workers, fresh_database, migrations_dir, state_machine, run_execution,
                                         alerts):
    write(migrations_dir, {"001_create_users.sql": "CREATE TABLE users (id int);\n"})
    use_migrations(workers, fresh_database, migrations_dir)
    assert run_execution(state_machine, {}).status == "SUCCEEDED"
    write(migrations_dir, {"001_create_users.sql": "CREATE TABLE users (id bigint);\n",
                           "002_more.sql": "CREATE TABLE more (id int);\n"})
    use_migrations(workers, fresh_database, migrations_dir)
    run = run_execution(state_machine, {})
    assert run.status == "FAILED", run.dump()
    assert run.error == "ChecksumMismatch"
    assert "001_create_users.sql" in run.cause
    assert fresh_database.query("SELECT to_regclass('more') IS NULL") == [(True,)]
    body = alerts.messages(expect=1, timeout=20)[0]["body"]
    assert "ChecksumMismatch" in body and "changed since they were applied" in body, body


def notify_invocations(run) -> list[dict]:
    """The Notify tasks' Lambda invocations (retries included) of an execution."""
    scheduled = [e for e in run.events if e["type"] == "TaskStateEntered"
                 and e["stateEnteredEventDetails"]["name"].startswith("Notify")]
    assert scheduled, run.dump()
    return [d for d in run.details("LambdaFunctionScheduled") if ":notify" in d.get("resource", "")]


def test_a_plan_failure_alerts_once_naming_the_configured_database(workers, fresh_database, migrations_dir,
                                                                  state_machine, run_execution, alerts, cloudwatch):
    """A malformed packaged set fails the plan as InvalidMigrationSet (not ConfigError); the
    plan's failure names no database: notify names DB_NAME's, in the alert and the metric's
    Database dimension (an empty one makes CloudWatch refuse the metric)."""
    write(migrations_dir, {"001_create_users.sql": "CREATE TABLE users (id int);\n",
                           "2_misnamed.sql": "CREATE TABLE misnamed (id int);\n"})
    use_migrations(workers, fresh_database, migrations_dir, DB_NAME=fresh_database.name)
    run = run_execution(state_machine, {})
    assert run.status == "FAILED", run.dump()
    assert run.error == "InvalidMigrationSet", (run.error, run.cause)
    assert "2_misnamed.sql" in run.cause, run.cause
    messages = alerts.messages(expect=1, timeout=20)
    time.sleep(1)
    messages = alerts.messages()
    assert len(messages) == 1, messages
    assert messages[0]["attributes"]["database"]["StringValue"] == fresh_database.name
    assert f"on database {fresh_database.name}" in messages[0]["body"], messages[0]["body"]
    metrics = cloudwatch.list_metrics(Namespace="Stepmigrate", MetricName="MigrationFailures")["Metrics"]
    assert any(m["Dimensions"] == [{"Name": "Database", "Value": fresh_database.name}] for m in metrics), metrics
    assert not any(d["Value"] == "" for m in metrics for d in m["Dimensions"]), metrics


def test_an_alert_is_published_once_even_when_the_metric_cannot_be_put(workers, fresh_database, migrations_dir,
                                                                      state_machine, run_execution, alerts):
    """CloudWatch refusing the metric after SNS published the alert: the step still succeeds,
    so the definition does not run it again (once, the alert went out four times)."""
    write(migrations_dir, {"001_broken.sql": "INSERT INTO no_such_table VALUES (1);\n"})
    use_migrations(workers, fresh_database, migrations_dir, DB_NAME=fresh_database.name,
                   AWS_ENDPOINT_URL_CLOUDWATCH=f"http://127.0.0.1:{harness.free_port()}", AWS_MAX_ATTEMPTS="1")
    run = run_execution(state_machine, {})
    assert run.status == "FAILED", run.dump()
    assert run.error == "SqlFailed", (run.error, run.cause)
    alerts.messages(expect=1, timeout=20)
    time.sleep(2)
    messages = alerts.messages()
    assert len(messages) == 1, [m["body"][:80] for m in messages]
    assert len(notify_invocations(run)) == 1, run.dump()
    assert [d.get("error") for d in run.details("LambdaFunctionFailed")] == ["SqlFailed"], run.dump()


def test_ten_thousand_pending_migrations_complete_in_one_execution(workers, fresh_database, migrations_dir,
                                                                    state_machine, run_execution):
    n = 10_000
    files = {"00001_create_counter.sql": "CREATE TABLE counter (i int);\n"}
    files.update({f"{i:05d}_count_{i}.sql": f"INSERT INTO counter VALUES ({i});\n" for i in range(2, n + 1)})
    use_migrations(workers, fresh_database, migrations_dir if write(migrations_dir, files) else migrations_dir)
    started = time.monotonic()
    run = run_execution(state_machine, {}, timeout=1500)
    elapsed = time.monotonic() - started
    assert run.status == "SUCCEEDED", run.dump()[-3000:]
    assert run.output["applied_count"] == n
    # The plan grouped them: at most 2,000 iterations, so the history stays under 25,000 events.
    assert len(run.events_of("MapIterationSucceeded")) == 2000
    assert len(run.events) < 25_000, len(run.events)
    # The 256 KB payload limit: no state's input or output reaches it, nor the Map's collected
    # result (every iteration's output: the output of its last state, ApplyOne's).
    payloads = [(e["type"], len(d[key].encode())) for e in run.events
                for k, d in e.items() if k.endswith("EventDetails") and isinstance(d, dict)
                for key in ("input", "output") if isinstance(d.get(key), str)]
    largest = max(payloads, key=lambda p: p[1])
    assert largest[1] < PAYLOAD_LIMIT, largest
    iteration_outputs = [d["output"] for e in run.events if e["type"] == "TaskStateExited"
                         for d in [e["stateExitedEventDetails"]] if d["name"] == "ApplyOne"]
    assert len(iteration_outputs) == 2000
    collected = 2 + sum(len(o.encode()) + 1 for o in iteration_outputs)
    assert collected < PAYLOAD_LIMIT / 10, f"the Map collects {collected} bytes"
    print(f"largest state payload: {largest}; the Map's collected result: {collected} bytes")
    assert fresh_database.query("SELECT count(*) FROM counter") == [(n - 1,)]
    assert fresh_database.query(
        "SELECT count(*), bool_and(version::int = rn) FROM (SELECT version, row_number() OVER (ORDER BY id) AS rn"
        " FROM schema_migration_events WHERE kind = 'applied' AND version <> '000') s") == [(n, True)]
    print(f"10,000 migrations through the state machine: {elapsed:.1f} s, {len(run.events)} history events")


def test_verify_runs_the_pending_migrations_rolled_back_and_changes_nothing_but_its_events(
        workers, fresh_database, migrations_dir, state_machine, run_execution):
    write(migrations_dir, {
        "001_create_users.sql": "CREATE TABLE users (id int PRIMARY KEY, age int);\nINSERT INTO users SELECT g, g FROM generate_series(1, 100) g;\n",
    })
    use_migrations(workers, fresh_database, migrations_dir)
    assert run_execution(state_machine, {"action": "migrate"}).status == "SUCCEEDED"
    write(migrations_dir, {
        "002_widen_age.sql": "ALTER TABLE users ALTER COLUMN age TYPE bigint;\n",
        "003_create_posts.sql": "CREATE TABLE posts (id int, user_id int REFERENCES users);\n",
    })
    use_migrations(workers, fresh_database, migrations_dir)
    catalog = ("SELECT string_agg(format('%s %s %s', c.relname, c.relkind, c.relfilenode), ',' ORDER BY c.oid) "
               "FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace")
    before = (fresh_database.query(catalog), fresh_database.query("SELECT * FROM schema_migrations ORDER BY version"),
              fresh_database.query("SELECT * FROM schema_migration_events ORDER BY id"))

    run = run_execution(state_machine, {"action": "verify"})
    assert run.status == "SUCCEEDED", run.dump()
    out = run.output
    assert (out["verified"], out["failed"], out["skipped"]) == (2, 0, 0), out
    widen, posts = out["migrations"]
    assert widen["name"] == "002_widen_age" and widen["outcome"] == "ok"
    assert widen["rewrites"] == 2 and widen["access_exclusive_on_existing"] == ["public.users", "public.users_pkey"], widen
    assert posts["name"] == "003_create_posts" and posts["rewrites"] == 0
    assert len(json.dumps(out)) < PAYLOAD_LIMIT

    assert fresh_database.query(catalog) == before[0]
    assert fresh_database.query("SELECT * FROM schema_migrations ORDER BY version") == before[1]
    events = fresh_database.query("SELECT * FROM schema_migration_events ORDER BY id")
    assert events[:len(before[2])] == before[2]
    assert [(e[3], e[5]) for e in events[len(before[2]):]] == [("002", "verified"), ("003", "verified")], events
    assert ledger(fresh_database) == [("001", True, False)]
