-- The stepmigrate ledger (migration 000). Run by the tool, in one transaction, under the
-- migration lock; every statement is idempotent so that it also upgrades an older ledger or
-- adopts the table of the old Python runner in place.

-- Every name is qualified with the ledger's schema (@L@, quoted; @N@ is its name as a string
-- literal), inside function bodies too: nothing a migration does to search_path redirects it.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = @N@) THEN
        EXECUTE format('CREATE SCHEMA %I', @N@);
    END IF;
END $$;

-- The projection, with the old runner's columns first: its queries and recipes keep working.
CREATE TABLE IF NOT EXISTS @L@.schema_migrations (
    version varchar(255) PRIMARY KEY,
    name varchar(255) NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    checksum varchar(64),
    execution_time_ms bigint,
    success boolean NOT NULL DEFAULT true
);
ALTER TABLE @L@.schema_migrations
    ADD COLUMN IF NOT EXISTS dirty boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS run_id text,
    ADD COLUMN IF NOT EXISTS error text,
    ADD COLUMN IF NOT EXISTS event_id bigint;

DO $$
DECLARE
    rel regclass := to_regclass(format('%I.schema_migrations', @N@));
BEGIN
    -- The old runner's table may use timestamp without time zone and integer; its values are
    -- read in this session's time zone, as the old runner wrote them.
    IF (SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = rel AND attname = 'applied_at')
            <> 'timestamp with time zone' THEN
        ALTER TABLE @L@.schema_migrations ALTER COLUMN applied_at TYPE timestamptz;
    END IF;
    IF (SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = rel AND attname = 'execution_time_ms')
            <> 'bigint' THEN
        ALTER TABLE @L@.schema_migrations ALTER COLUMN execution_time_ms TYPE bigint;
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM pg_index i
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
        WHERE i.indrelid = rel AND i.indisunique AND i.indnkeyatts = 1 AND a.attname = 'version'
    ) THEN
        CREATE UNIQUE INDEX schema_migrations_version_key ON @L@.schema_migrations (version);
    END IF;
END $$;

-- The append-only event log: the source of truth.
CREATE TABLE IF NOT EXISTS @L@.schema_migration_events (
    id bigserial PRIMARY KEY,
    occurred_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    run_id text NOT NULL,
    version varchar(255) NOT NULL,
    name varchar(255) NOT NULL,
    kind text NOT NULL,
    checksum varchar(64),
    execution_time_ms bigint,
    dirty boolean NOT NULL DEFAULT false,
    error jsonb,
    actor text NOT NULL DEFAULT current_user
);
-- Added after the first version: what PostgreSQL said while the migration ran (NOTICEs,
-- WARNINGs). A transactional migration's notices are known only once its one round trip is
-- back, so they follow its `applied` event as a `notices` event, which the fold skips.
-- `verified` (v3): `stepmigrate verify --in-transaction-only` ran the migration in a
-- transaction that was rolled back; it changes no migration's state, so the fold skips it too.
ALTER TABLE @L@.schema_migration_events ADD COLUMN IF NOT EXISTS notices jsonb;
-- v4: the down script as it was when the migration was applied (on its `applied` and
-- `started` events), so that older code, whose files predate the migration, can still roll
-- it back with the script that matches what ran; and the rollback's own events:
-- `rolled_back` (pending again), `rollback_started` (a no-transaction down began: dirty until
-- its outcome), `rollback_failed` (dirty when a no-transaction down failed part way; else
-- the migration is still applied and the fold skips it).
ALTER TABLE @L@.schema_migration_events ADD COLUMN IF NOT EXISTS down_sql text;
ALTER TABLE @L@.schema_migration_events ADD COLUMN IF NOT EXISTS down_checksum varchar(64);
-- With the down script, the migration's `requires`: older code, without its file, must still
-- refuse to revert a requirement from under it.
ALTER TABLE @L@.schema_migration_events ADD COLUMN IF NOT EXISTS down_requires text[];
-- v5: a batch migration's progress, on each `batch` event (one per committed batch: `batches`
-- and `rows` so far, `batch_rows` of this one) and on its `applied` event (the totals).
-- `batch` events change no migration's state: until its `applied` event the migration is
-- pending, and a run resumes from the latest `batch` event's totals.
ALTER TABLE @L@.schema_migration_events ADD COLUMN IF NOT EXISTS progress jsonb;
ALTER TABLE @L@.schema_migration_events DROP CONSTRAINT IF EXISTS schema_migration_events_kind_check;
ALTER TABLE @L@.schema_migration_events ADD CONSTRAINT schema_migration_events_kind_check
    CHECK (kind IN ('applied', 'failed', 'started', 'resolved_applied', 'resolved_not_applied',
                    'deleted', 'rolled_back', 'notices', 'verified', 'rollback_started',
                    'rollback_failed', 'batch'));
CREATE INDEX IF NOT EXISTS schema_migration_events_version_idx ON @L@.schema_migration_events (version, id);

CREATE OR REPLACE FUNCTION @L@.schema_migration_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'schema_migration_events is append-only: % is not allowed', TG_OP
        USING HINT = 'to re-run a migration, DELETE its row from schema_migrations instead';
END $$;
DROP TRIGGER IF EXISTS schema_migration_events_append_only ON @L@.schema_migration_events;
CREATE TRIGGER schema_migration_events_append_only BEFORE UPDATE OR DELETE ON @L@.schema_migration_events
    FOR EACH ROW EXECUTE FUNCTION @L@.schema_migration_events_append_only();
ALTER TABLE @L@.schema_migration_events ENABLE ALWAYS TRIGGER schema_migration_events_append_only;
DROP TRIGGER IF EXISTS schema_migration_events_no_truncate ON @L@.schema_migration_events;
CREATE TRIGGER schema_migration_events_no_truncate BEFORE TRUNCATE ON @L@.schema_migration_events
    FOR EACH STATEMENT EXECUTE FUNCTION @L@.schema_migration_events_append_only();
ALTER TABLE @L@.schema_migration_events ENABLE ALWAYS TRIGGER schema_migration_events_no_truncate;

-- The fold, in one place: the projection row an event leaves behind (none for events that
-- make a migration pending again). The latest event of a version decides its row.
CREATE OR REPLACE FUNCTION @L@.schema_migrations_row(e @L@.schema_migration_events)
RETURNS TABLE (version varchar, name varchar, applied_at timestamptz, checksum varchar,
               execution_time_ms bigint, success boolean, dirty boolean, run_id text,
               error text, event_id bigint)
LANGUAGE sql IMMUTABLE AS $$
    SELECT e.version, e.name, e.occurred_at, e.checksum, e.execution_time_ms,
           e.kind IN ('applied', 'resolved_applied'), e.dirty, e.run_id, e.error ->> 'message', e.id
    WHERE e.kind IN ('applied', 'failed', 'started', 'resolved_applied', 'rollback_started', 'rollback_failed')
$$;

-- Events that change no migration's state: what a migration said, a verification, a down
-- that failed and rolled back whole (the migration is still applied as it was), a batch.
CREATE OR REPLACE FUNCTION @L@.schema_migration_event_is_state(e @L@.schema_migration_events)
RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT e.kind NOT IN ('notices', 'verified', 'batch') AND NOT (e.kind = 'rollback_failed' AND NOT e.dirty)
$$;

CREATE OR REPLACE VIEW @L@.schema_migrations_folded AS
SELECT r.*
FROM (SELECT DISTINCT ON (e.version) e FROM @L@.schema_migration_events e
      WHERE @L@.schema_migration_event_is_state(e) ORDER BY e.version, e.id DESC) latest
CROSS JOIN LATERAL @L@.schema_migrations_row(latest.e) r;

-- Each event updates the projection in its own transaction: a migration and its row commit
-- together or not at all.
CREATE OR REPLACE FUNCTION @L@.schema_migration_events_project() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT @L@.schema_migration_event_is_state(NEW) THEN
        RETURN NULL;
    END IF;
    DELETE FROM @L@.schema_migrations m WHERE m.version = NEW.version;
    INSERT INTO @L@.schema_migrations (version, name, applied_at, checksum, execution_time_ms,
                                   success, dirty, run_id, error, event_id)
    SELECT * FROM @L@.schema_migrations_row(NEW);
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS schema_migration_events_project ON @L@.schema_migration_events;
CREATE TRIGGER schema_migration_events_project AFTER INSERT ON @L@.schema_migration_events
    FOR EACH ROW EXECUTE FUNCTION @L@.schema_migration_events_project();
ALTER TABLE @L@.schema_migration_events ENABLE ALWAYS TRIGGER schema_migration_events_project;

-- The old recipe `DELETE FROM schema_migrations WHERE version = '004'` (re-run a migration)
-- becomes an event, so the projection still equals the fold. Deletions made by the
-- projection itself (trigger depth > 1) or by a rebuild are not events.
-- A dirty row whose migration still runs (a session holds its build lock: a killed runner's
-- backend running its statement on, or an after-deploy build) is not deleted: the migration
-- would run again beside it.
CREATE OR REPLACE FUNCTION @L@.schema_migrations_record_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF pg_trigger_depth() = 1 AND coalesce(current_setting('stepmigrate.rebuilding', true), '') <> 'on'
       AND OLD.dirty AND EXISTS (
        SELECT 1 FROM pg_catalog.pg_locks l
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
          AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
          AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended('stepmigrate.build.' || @N@ || '.' || OLD.version, 0)
          AND l.pid <> pg_backend_pid()) THEN
        RAISE EXCEPTION 'migration % is dirty and a session still runs its statement (it holds the migration''s build lock): deleting its row now would run it again beside it', OLD.version
            USING ERRCODE = '55006', HINT = 'wait for the statement to end, then check the database and run stepmigrate resolve';
    END IF;
    IF pg_trigger_depth() = 1 AND coalesce(current_setting('stepmigrate.rebuilding', true), '') <> 'on' THEN
        INSERT INTO @L@.schema_migration_events (run_id, version, name, kind, checksum)
        VALUES ('manual', OLD.version, OLD.name, 'deleted', OLD.checksum);
    END IF;
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS schema_migrations_record_delete ON @L@.schema_migrations;
CREATE TRIGGER schema_migrations_record_delete AFTER DELETE ON @L@.schema_migrations
    FOR EACH ROW EXECUTE FUNCTION @L@.schema_migrations_record_delete();
ALTER TABLE @L@.schema_migrations ENABLE ALWAYS TRIGGER schema_migrations_record_delete;

CREATE OR REPLACE FUNCTION @L@.schema_migrations_record_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('stepmigrate.rebuilding', true), '') <> 'on' AND EXISTS (
        SELECT 1 FROM @L@.schema_migrations m, pg_catalog.pg_locks l
        WHERE m.dirty AND l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
          AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
          AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended('stepmigrate.build.' || @N@ || '.' || m.version, 0)
          AND l.pid <> pg_backend_pid()) THEN
        RAISE EXCEPTION 'a dirty migration''s statement still runs (a session holds its build lock): emptying schema_migrations now would run it again beside it'
            USING ERRCODE = '55006', HINT = 'wait for the statement to end, then check the database and run stepmigrate resolve';
    END IF;
    IF coalesce(current_setting('stepmigrate.rebuilding', true), '') <> 'on' THEN
        INSERT INTO @L@.schema_migration_events (run_id, version, name, kind, checksum)
        SELECT 'manual', m.version, m.name, 'deleted', m.checksum FROM @L@.schema_migrations m ORDER BY m.version;
    END IF;
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS schema_migrations_record_truncate ON @L@.schema_migrations;
CREATE TRIGGER schema_migrations_record_truncate BEFORE TRUNCATE ON @L@.schema_migrations
    FOR EACH STATEMENT EXECUTE FUNCTION @L@.schema_migrations_record_truncate();
ALTER TABLE @L@.schema_migrations ENABLE ALWAYS TRIGGER schema_migrations_record_truncate;

-- Checked first in every migration's transaction: a second line of defence behind the
-- runner's session lock (a runner whose lock session died, an orphaned backend still running
-- a killed runner's migration). Never blocks: it tries a transaction-scoped lock. It returns
-- its transaction's id: after a failure the runner asks whether that transaction committed
-- anyway (a COMMIT inside the migration), without reading the migration's text.
DROP FUNCTION IF EXISTS @L@.schema_migrations_guard(text, text, int, text);
CREATE OR REPLACE FUNCTION @L@.schema_migrations_guard(p_version text, p_previous text, p_lock_pid int) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtextextended('stepmigrate.apply.' || @N@, 0)) THEN
        RAISE EXCEPTION 'another session is applying a migration' USING ERRCODE = 'SM002';
    END IF;
    -- The lock's session still alive is the lock still held: a session lock ends only with
    -- its session (the runner never unlocks mid-run). pg_stat_get_activity(pid) looks at one
    -- backend, far cheaper than reading the whole lock table.
    IF p_lock_pid IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM pg_stat_get_activity(p_lock_pid) a WHERE a.pid = p_lock_pid) THEN
        RAISE EXCEPTION 'the runner lost its migration lock (its session ended)' USING ERRCODE = 'SM006';
    END IF;
    IF EXISTS (SELECT 1 FROM @L@.schema_migrations m WHERE m.version = p_version AND m.success) THEN
        RAISE EXCEPTION 'migration % is already applied', p_version USING ERRCODE = 'SM001';
    END IF;
    IF EXISTS (SELECT 1 FROM @L@.schema_migrations m WHERE m.version = p_version AND m.dirty) THEN
        RAISE EXCEPTION 'migration % is dirty: resolve it first', p_version USING ERRCODE = 'SM004';
    END IF;
    IF p_previous IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM @L@.schema_migrations m WHERE m.version = p_previous AND m.success) THEN
        RAISE EXCEPTION 'migration % is not applied, so % cannot run', p_previous, p_version USING ERRCODE = 'SM003';
    END IF;
    RETURN txid_current()::text;
END $$;

-- The same for a down script: the migration must still be applied (SM009: another runner
-- reverted it first) and not dirty. A batch migration is partly applied while it has batches
-- committed since it was last made pending from scratch (the same "since" as the runner's
-- ledger::since_reset_sql: the deletion of a row that was not applied is no such reset) and
-- no applied row: its down reverts those batches.
CREATE OR REPLACE FUNCTION @L@.schema_migrations_revert_guard(p_version text, p_lock_pid int) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtextextended('stepmigrate.apply.' || @N@, 0)) THEN
        RAISE EXCEPTION 'another session is applying a migration' USING ERRCODE = 'SM002';
    END IF;
    IF p_lock_pid IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM pg_stat_get_activity(p_lock_pid) a WHERE a.pid = p_lock_pid) THEN
        RAISE EXCEPTION 'the runner lost its migration lock (its session ended)' USING ERRCODE = 'SM006';
    END IF;
    IF EXISTS (SELECT 1 FROM @L@.schema_migrations m WHERE m.version = p_version AND m.dirty) THEN
        RAISE EXCEPTION 'migration % is dirty: resolve it first', p_version USING ERRCODE = 'SM004';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM @L@.schema_migrations m WHERE m.version = p_version AND m.success)
       AND NOT EXISTS (
           SELECT 1 FROM @L@.schema_migration_events b
           WHERE b.version = p_version AND b.kind = 'batch'
             AND b.id > (SELECT coalesce(max(r.id), 0) FROM @L@.schema_migration_events r
                         WHERE r.version = p_version
                           AND r.kind NOT IN ('batch', 'failed', 'notices', 'verified', 'rollback_started', 'rollback_failed')
                           AND (r.kind <> 'deleted' OR (SELECT p.kind IN ('applied', 'resolved_applied')
                                FROM @L@.schema_migration_events p
                                WHERE p.version = r.version AND p.id < r.id AND p.kind NOT IN ('batch', 'notices', 'verified')
                                  AND NOT (p.kind = 'rollback_failed' AND NOT p.dirty)
                                ORDER BY p.id DESC LIMIT 1) IS NOT FALSE))) THEN
        RAISE EXCEPTION 'migration % is not applied', p_version USING ERRCODE = 'SM009';
    END IF;
    RETURN txid_current()::text;
END $$;

DROP FUNCTION IF EXISTS @L@.schema_migrations_in_guarded_transaction();

-- The projection is written by the fold alone (and by a rebuild): an UPDATE or INSERT by
-- hand would make the plan disagree with the events, e.g. re-run an applied migration.
CREATE OR REPLACE FUNCTION @L@.schema_migrations_written_by_the_fold() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF pg_trigger_depth() = 1 AND coalesce(current_setting('stepmigrate.rebuilding', true), '') <> 'on' THEN
        RAISE EXCEPTION 'schema_migrations is the projection of schema_migration_events: % by hand is not allowed', TG_OP
            USING HINT = 'to re-run a migration, DELETE its row; to settle a dirty one, run stepmigrate resolve';
    END IF;
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS schema_migrations_written_by_the_fold ON @L@.schema_migrations;
CREATE TRIGGER schema_migrations_written_by_the_fold BEFORE INSERT OR UPDATE ON @L@.schema_migrations
    FOR EACH ROW EXECUTE FUNCTION @L@.schema_migrations_written_by_the_fold();
ALTER TABLE @L@.schema_migrations ENABLE ALWAYS TRIGGER schema_migrations_written_by_the_fold;

-- Adoption: the old runner's rows become the history, once, in their order.
INSERT INTO @L@.schema_migration_events (occurred_at, run_id, version, name, kind, checksum, execution_time_ms)
SELECT coalesce(m.applied_at, now()), 'adopted', m.version, coalesce(m.name, m.version),
       CASE WHEN coalesce(m.success, true) THEN 'applied' ELSE 'failed' END, m.checksum, m.execution_time_ms
FROM @L@.schema_migrations m
WHERE NOT EXISTS (SELECT 1 FROM @L@.schema_migration_events)
ORDER BY m.applied_at NULLS FIRST, m.version;

-- A projection dropped by hand is rebuilt from the events, not started afresh: the history is
-- in the events, and an empty projection would make every migration pending again.
SELECT set_config('stepmigrate.rebuilding', 'on', true);
INSERT INTO @L@.schema_migrations (version, name, applied_at, checksum, execution_time_ms, success, dirty, run_id, error, event_id)
SELECT * FROM @L@.schema_migrations_folded
WHERE NOT EXISTS (SELECT 1 FROM @L@.schema_migrations);
SELECT set_config('stepmigrate.rebuilding', '', true);
