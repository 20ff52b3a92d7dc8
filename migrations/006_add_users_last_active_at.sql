-- Migration: add users.last_active_at and backfill it from quiz attempts
-- Why: the dashboard lists learners by recent activity; until now that meant scanning
--      quiz_attempts. Existing users get their latest attempt (or their sign-up time).

ALTER TABLE users ADD COLUMN IF NOT EXISTS last_active_at timestamptz;

UPDATE users u
SET last_active_at = COALESCE(
        (SELECT max(coalesce(a.finished_at, a.started_at))
           FROM quiz_attempts a
          WHERE a.user_id = u.id),
        u.created_at)
WHERE u.last_active_at IS NULL;

CREATE INDEX IF NOT EXISTS users_last_active_at_idx ON users (last_active_at DESC);
