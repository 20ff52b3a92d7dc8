"""Batch migrations (`-- stepmigrate: batch`) through the real definition: the plan puts one
alone in its Map item (`batch: true`), and the item loops ApplyBatch -> BatchDone? -> BatchWait
-> ApplyBatch, each apply-one invocation running batches within its time budget
(STEPMIGRATE_BATCH_BUDGET) and answering `done: false` with its progress until a batch changes
no row. A loop that makes no progress fails the item with `BatchStalled`, through record and
notify: one alert. Counts the history events each loop adds (statemachine/README.md, History
budget)."""

from __future__ import annotations

import json
import time

import pytest

import harness

from test_migrations import (  # noqa: F401 - migrations_dir is a fixture
    DEFINITION, FUNCTIONS, emf_lines, ledger, log_offset, migrations_dir, use_migrations, write)

ROWS = 100
SETUP = ("CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL, done int, touched int NOT NULL DEFAULT 0);\n"
         f"INSERT INTO items (id, v) SELECT g, g FROM generate_series(1, {ROWS}) g;\n")
#: 10 batches of 10 rows, 300 ms apart: a 1 s budget runs a few of them per invocation.
BACKFILL = ("-- stepmigrate: batch\n-- stepmigrate: batch_size = 10\n-- stepmigrate: pause = 300ms\n"
            "UPDATE items SET done = v * 2, touched = touched + 1\n"
            "WHERE id IN (SELECT id FROM items WHERE done IS NULL ORDER BY id LIMIT :batch_size);\n")
#: What a history event of the loop is (statemachine/README.md and steps::BATCH_LOOP_EVENTS).
LOOP_EVENTS = 9
#: An item that is not a batch migration (steps::ITEM_EVENTS).
ITEM_EVENTS = 9
#: What one more invocation of a batch migration adds (steps::BATCH_LOOP_EVENTS).
BATCH_ENV = {"STEPMIGRATE_BATCH_BUDGET": "1s", "STEPMIGRATE_BATCH_WAIT": "0"}


@pytest.fixture
def state_machine(create_state_machine):
    return create_state_machine(DEFINITION, FUNCTIONS)


def entered(run, name: str) -> list[int]:
    """The positions in the history where state `name` was entered."""
    return [i for i, e in enumerate(run.events)
            if e["type"].endswith("StateEntered") and e["stateEnteredEventDetails"]["name"] == name]


def plan_output(run) -> dict:
    for d in run.details("TaskStateExited"):
        if d["name"] == "Plan":
            return json.loads(d["output"])["plan"]
    raise AssertionError(run.dump())


def batch_events(db, version: str) -> list[tuple]:
    return db.query("SELECT kind, (progress->>'batches')::int, (progress->>'rows')::int FROM schema_migration_events"
                    " WHERE version = %s AND kind IN ('batch', 'applied') ORDER BY id", (version,))


def test_a_batch_migration_loops_within_its_budget_until_done(workers, fresh_database, migrations_dir, state_machine,
                                                              run_execution):
    write(migrations_dir, {"001_items.sql": SETUP, "002_backfill.sql": BACKFILL, "003_after.sql":
                           "CREATE TABLE after_backfill (id int);\n"})
    use_migrations(workers, fresh_database, migrations_dir, **BATCH_ENV)
    since = log_offset(workers)
    run = run_execution(state_machine, {}, timeout=300)
    assert run.status == "SUCCEEDED", run.dump()[-4000:]
    assert run.output["applied_count"] == 3

    # The plan: the batch migration alone in its item, with its share of the history budget.
    items = plan_output(run)["pending"]
    assert [(i["first"], i["last"], i.get("batch", False)) for i in items] == [
        ("001", "001", False), ("002", "002", True), ("003", "003", False)], items
    assert items[1]["name"] == "002_backfill" and items[1]["max_invocations"] > 2000, items

    # It looped: several invocations, each but the last answering done: false.
    invocations = entered(run, "ApplyBatch")
    assert len(invocations) >= 3, run.event_types()
    assert len(entered(run, "BatchWait")) == len(invocations) - 1
    assert len(entered(run, "ApplyOne")) == 2, "the other items are one ApplyOne each"
    answers = [json.loads(d["output"]) for d in run.details("LambdaFunctionSucceeded")
               if '"invocations"' in d.get("output", "")]
    assert [a["done"] for a in answers] == [False] * (len(invocations) - 1) + [True], answers
    assert [a["invocations"] for a in answers] == list(range(1, len(invocations) + 1)), answers
    assert answers[-1]["progress"]["rows"] == ROWS and answers[-1]["progress"]["batches"] == 10, answers[-1]
    assert all(a["wait_seconds"] == 0 for a in answers)

    # The history budget: each invocation after the first adds exactly LOOP_EVENTS events
    # (ApplyBatch 5, BatchDone? 2, BatchWait 2), and an item that is not a batch migration
    # ITEM_EVENTS.
    gaps = [b - a for a, b in zip(invocations, invocations[1:])]
    assert gaps == [LOOP_EVENTS] * len(gaps), (gaps, run.event_types()[invocations[0]:invocations[-1]])
    types = run.event_types()
    starts = [i for i, t in enumerate(types) if t == "MapIterationStarted"]
    ends = [i for i, t in enumerate(types) if t == "MapIterationSucceeded"]
    sizes = [e - s + 1 for s, e in zip(starts, ends)]
    # The batch item: MapIterationStarted, Batch? (2), the invocations, BatchApplied (2),
    # MapIterationSucceeded: LOOP_EVENTS per invocation and 6 more, less the last Wait (2).
    assert sizes == [ITEM_EVENTS, LOOP_EVENTS * len(invocations) + 4, ITEM_EVENTS], sizes
    print(f"batch loop: {len(invocations)} invocations, {LOOP_EVENTS} events per loop, "
          f"{sizes[1]} events for the batch item, {len(run.events)} in the execution")

    # Every row done once, batch by batch, each batch with its event; applied once, then 003.
    assert fresh_database.query("SELECT count(*), min(touched), max(touched), bool_and(done = v * 2) FROM items") == [
        (ROWS, 1, 1, True)]
    events = batch_events(fresh_database, "002")
    assert events[-1] == ("applied", 10, ROWS) and [k for k, *_ in events].count("applied") == 1, events
    assert [(b, r) for k, b, r in events if k == "batch"] == [(i, 10 * i) for i in range(1, 11)], events
    assert [v for v, ok, dirty in ledger(fresh_database) if ok and not dirty] == ["001", "002", "003"]

    # One BatchRows metric line per invocation, adding up to every row.
    lines = emf_lines(workers, since, "BatchRows")
    assert len(lines) == len(invocations), lines
    assert sum(d["BatchRows"] for d in lines) == ROWS and sum(d["Batches"] for d in lines) == 10, lines
    assert [d["done"] for d in lines] == ["false"] * (len(lines) - 1) + ["true"], lines


def test_a_stalled_batch_migration_fails_once_with_one_alert_and_resumes_later(
        workers, fresh_database, migrations_dir, state_machine, run_execution, alerts):
    locked = BACKFILL.replace("-- stepmigrate: pause = 300ms\n", "-- stepmigrate: lock_timeout = 200ms\n")
    write(migrations_dir, {"001_items.sql": SETUP, "002_backfill.sql": locked})
    use_migrations(workers, fresh_database, migrations_dir, **BATCH_ENV)
    first = run_execution(state_machine, {"target": "001"})
    assert first.status == "SUCCEEDED", first.dump()

    # Another session holds the table: no batch can take its lock (lock_timeout 200 ms), so
    # every invocation ends its budget with no row changed.
    holder = fresh_database.connect()
    try:
        holder.execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
        run = run_execution(state_machine, {}, timeout=300)
    finally:
        holder.rollback()
        holder.close()
    assert run.status == "FAILED", run.dump()[-4000:]
    assert run.error == "BatchStalled", (run.error, run.cause)
    assert "002_backfill" in run.cause and "made no progress in 3 invocations" in run.cause, run.cause
    # Three invocations, then record and notify: not retried.
    assert len(entered(run, "ApplyBatch")) == 3, run.event_types()
    assert len(entered(run, "Record")) == 1 and len(entered(run, "NotifyFailure")) == 1
    failed = [d.get("error") for d in run.details("LambdaFunctionFailed")]
    assert failed == ["BatchStalled"], failed
    messages = alerts.messages(expect=1, timeout=20)
    time.sleep(2)
    messages = alerts.messages()
    assert len(messages) == 1, [m["body"][:120] for m in messages]
    assert "002_backfill" in messages[0]["body"] and "BatchStalled" in messages[0]["body"], messages[0]["body"]
    assert batch_events(fresh_database, "002") == []
    assert fresh_database.query("SELECT count(*) FROM items WHERE touched > 0") == [(0,)]

    # The lock gone, a new execution applies it.
    again = run_execution(state_machine, {}, timeout=300)
    assert again.status == "SUCCEEDED", again.dump()[-4000:]
    assert fresh_database.query("SELECT count(*), min(touched), max(touched) FROM items") == [(ROWS, 1, 1)]
    assert batch_events(fresh_database, "002")[-1] == ("applied", 10, ROWS)


def wait_for(sfn, arn: str, timeout: float = 300) -> harness.Execution:
    """An execution the workflow started itself, once it is no longer RUNNING."""
    deadline = time.monotonic() + timeout
    while (desc := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
        assert time.monotonic() < deadline, f"{arn} still RUNNING after {timeout} s"
        time.sleep(0.2)
    desc.pop("ResponseMetadata", None)
    return harness.Execution(description=desc, events=harness.execution_history(sfn, arn))


def test_a_batch_migration_past_its_history_share_continues_in_new_executions_until_done(
        workers, fresh_database, migrations_dir, state_machine, run_execution, sfn):
    """Past its share of the history budget (`max_invocations`, here made 2 by the plan's
    STEPMIGRATE_MAX_BATCH_INVOCATIONS), a batch migration does not fail the execution: the Map
    stops (nothing after the migration runs before it), the execution starts the same migrate
    as a new execution and succeeds; the chain goes on until the migration and what follows it
    are applied, every row once."""
    write(migrations_dir, {"001_items.sql": SETUP, "002_backfill.sql": BACKFILL, "003_after.sql":
                           "CREATE TABLE after_backfill (id int);\n"})
    use_migrations(workers, fresh_database, migrations_dir, **BATCH_ENV, STEPMIGRATE_MAX_BATCH_INVOCATIONS="2")
    first = run_execution(state_machine, {"source": "e2e"}, name="backfill", timeout=300)
    assert first.status == "SUCCEEDED", first.dump()[-4000:]
    assert first.output["status"] == "CONTINUED", first.output
    assert plan_output(first)["pending"][1]["max_invocations"] == 2
    assert len(entered(first, "ApplyBatch")) == 2 and len(entered(first, "ApplyOne")) == 1, first.event_types()
    assert len(entered(first, "StartContinuation")) == 1 and not entered(first, "Record")

    chain = [first]
    while chain[-1].output.get("status") == "CONTINUED":
        assert len(chain) < 10, [c.output for c in chain]
        chain.append(wait_for(sfn, chain[-1].output["continued_in"]))
        assert chain[-1].status == "SUCCEEDED", chain[-1].dump()[-4000:]
    assert len(chain) >= 2
    names = [c.description["name"] for c in chain]
    assert names == ["backfill"] + [f"backfill-c{n}" for n in range(1, len(chain))], names
    for n, (previous, run) in enumerate(zip(chain, chain[1:]), start=1):
        assert json.loads(run.description["input"]) == {
            "action": "migrate", "dry_run": False, "source": "e2e", "continuation": n,
            "continued_from": previous.arn}, run.description["input"]
        assert len(entered(run, "ApplyBatch")) <= 2, run.event_types()
    last = chain[-1]
    assert last.output["status"] == "SUCCEEDED" and last.output["migrations"][-1]["first"] == "003", last.output

    # Every row done once, applied once, then 003: the chain resumed from the ledger.
    assert fresh_database.query("SELECT count(*), min(touched), max(touched), bool_and(done = v * 2) FROM items") == [
        (ROWS, 1, 1, True)]
    events = batch_events(fresh_database, "002")
    assert [k for k, *_ in events].count("applied") == 1 and events[-1] == ("applied", 10, ROWS), events
    assert [v for v, ok, dirty in ledger(fresh_database) if ok and not dirty] == ["001", "002", "003"]
