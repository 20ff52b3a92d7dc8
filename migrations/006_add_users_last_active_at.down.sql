-- Rollback of 006_add_users_last_active_at: drops the index, then the column (its
-- backfilled values are lost; quiz_attempts still has what they were computed from).

DROP INDEX users_last_active_at_idx;
ALTER TABLE users DROP COLUMN last_active_at;
