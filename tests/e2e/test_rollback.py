"""Rollback executions of the real definition (`{"action": "rollback", "target": ...}`): the plan
step plans the reverts, newest applied first, and the `RevertEach` Map reverts one migration per
iteration through apply-one's revert request; a failing down script is recorded, alerts and
fails the execution; a dry run changes nothing. Migration sets with `.down.sql` files, packaged
as the workers' migrations directory (test_migrations.use_migrations)."""

from __future__ import annotations

import pytest

from test_migrations import (  # noqa: F401 - migrations_dir is a fixture
    DEFINITION, FUNCTIONS, emf_lines, ledger, log_offset, migrations_dir, use_migrations, write)

THREE = {
    "001_create_users.sql": "CREATE TABLE users (id int PRIMARY KEY);\n",
    "001_create_users.down.sql": "DROP TABLE users;\n",
    "002_create_posts.sql": "CREATE TABLE posts (id int, user_id int REFERENCES users);\n",
    "002_create_posts.down.sql": "DROP TABLE posts;\n",
    "003_create_tags.sql": "CREATE TABLE tags (id int);\n",
    "003_create_tags.down.sql": "DROP TABLE tags;\n",
}


@pytest.fixture
def state_machine(create_state_machine):
    return create_state_machine(DEFINITION, FUNCTIONS)


def rollback_events(db) -> list[tuple[str, str]]:
    return db.query("SELECT version::text, kind FROM schema_migration_events "
                    "WHERE kind IN ('rolled_back', 'rollback_failed', 'rollback_started') ORDER BY id")


def tables(db) -> list[str]:
    return [t for (t,) in db.query(
        "SELECT relname::text FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'"
        " AND relname NOT LIKE 'schema_migration%' ORDER BY 1")]


def migrated(workers, db, d, files, state_machine, run_execution) -> None:
    write(d, files)
    use_migrations(workers, db, d)
    run = run_execution(state_machine, {"action": "migrate"})
    assert run.status == "SUCCEEDED", run.dump()


def test_rollback_reverts_newest_first_one_map_iteration_each(workers, fresh_database, migrations_dir,
                                                              state_machine, run_execution):
    migrated(workers, fresh_database, migrations_dir, THREE, state_machine, run_execution)
    since = log_offset(workers)
    run = run_execution(state_machine, {"action": "rollback", "target": "001"})
    assert run.status == "SUCCEEDED", run.dump()
    out = run.output
    assert out["action"] == "rollback" and out["rolled_back_count"] == 2, out
    assert [m["name"] for m in out["migrations"]] == ["003_create_tags", "002_create_posts"], out
    # One Map iteration, one RevertOne task, per migration; nothing of ApplyEach.
    assert len(run.events_of("MapIterationSucceeded")) == 2
    assert len(run.events_of("LambdaFunctionScheduled", "TaskScheduled")) == 1 + 2, "plan, then one revert each"
    entered = [e["stateEnteredEventDetails"]["name"] for e in run.events_of("TaskStateEntered", "MapStateEntered")]
    assert "RevertEach" in entered and "ApplyEach" not in entered, entered
    # Reverted in reverse order, each with its `rolled_back` event; pending again (no row).
    assert rollback_events(fresh_database) == [("003", "rolled_back"), ("002", "rolled_back")]
    assert ledger(fresh_database) == [("001", True, False)]
    assert tables(fresh_database) == ["users"]
    # One MigrationsRolledBack metric line each.
    lines = emf_lines(workers, since, "MigrationsRolledBack")
    assert [d["version"] for d in lines] == ["003", "002"], lines


def test_a_failing_down_stops_the_rollback_alerts_and_fails_naming_it(workers, fresh_database, migrations_dir,
                                                                      state_machine, run_execution, alerts):
    files = dict(THREE)
    files["002_create_posts.down.sql"] = (
        "DROP TABLE posts;\nDO $$ BEGIN RAISE EXCEPTION 'posts cannot be dropped yet'; END $$;\n")
    migrated(workers, fresh_database, migrations_dir, files, state_machine, run_execution)
    run = run_execution(state_machine, {"action": "rollback", "target": "000"})
    assert run.status == "FAILED", run.dump()
    assert run.error == "SqlFailed", (run.error, run.cause)
    assert "rollback of 002_create_posts failed" in run.cause and "posts cannot be dropped yet" in run.cause, run.cause
    # 003 reverted, 002 failed (its transaction rolled back whole: posts is still there), 001 never tried.
    assert len(run.events_of("MapIterationStarted")) == 2
    assert len(run.events_of("MapIterationSucceeded")) == 1
    assert rollback_events(fresh_database) == [("003", "rolled_back"), ("002", "rollback_failed")]
    assert ledger(fresh_database) == [("001", True, False), ("002", True, False)], "002 is still applied"
    assert tables(fresh_database) == ["posts", "users"]
    # Not retried: SqlFailed is final.
    failed = [d for d in run.details("LambdaFunctionFailed", "TaskFailed") if d.get("error") == "SqlFailed"]
    assert len(failed) == 1, run.dump()
    messages = alerts.messages(expect=1, timeout=20)
    assert len(messages) == 1, messages
    body = messages[0]["body"]
    for needle in ("Rollback of migration 002_create_posts failed", "still applied", "002_create_posts.down.sql",
                   run.arn):
        assert needle in body, body


def test_a_rollback_dry_run_changes_nothing(workers, fresh_database, migrations_dir, state_machine, run_execution):
    migrated(workers, fresh_database, migrations_dir, THREE, state_machine, run_execution)
    before = (fresh_database.query("SELECT * FROM schema_migrations ORDER BY version"),
              fresh_database.query("SELECT count(*) FROM schema_migration_events"))
    run = run_execution(state_machine, {"action": "rollback", "target": "000", "dry_run": True})
    assert run.status == "SUCCEEDED", run.dump()
    out = run.output
    assert out["action"] == "rollback" and out["dry_run"] is True and out["to_apply"] == 0, out
    assert [m["name"] for m in out["pending"]] == ["003_create_tags", "002_create_posts", "001_create_users"]
    # The copy of each down script the ledger kept when the migration was applied.
    assert [(r["name"], r["source"]) for r in out["reverts"]] == [
        ("003_create_tags", "ledger"), ("002_create_posts", "ledger"), ("001_create_users", "ledger")], out
    assert run.events_of("MapIterationStarted") == []
    assert (fresh_database.query("SELECT * FROM schema_migrations ORDER BY version"),
            fresh_database.query("SELECT count(*) FROM schema_migration_events")) == before
    assert tables(fresh_database) == ["posts", "tags", "users"]


def test_a_refused_rollback_fails_the_plan_and_alerts(workers, fresh_database, migrations_dir, state_machine,
                                                     run_execution, alerts):
    files = {k: v for k, v in THREE.items() if k != "003_create_tags.down.sql"}
    migrated(workers, fresh_database, migrations_dir, files, state_machine, run_execution)
    run = run_execution(state_machine, {"action": "rollback", "target": "001"})
    assert run.status == "FAILED", run.dump()
    assert run.error == "RollbackRefused", (run.error, run.cause)
    assert "003_create_tags" in run.cause, run.cause
    assert run.events_of("MapIterationStarted") == []
    assert rollback_events(fresh_database) == []
    assert len(alerts.messages(expect=1, timeout=20)) == 1
