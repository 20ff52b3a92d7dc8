-- stepmigrate: no-transaction
-- Migration: index attempt_answers by question_id, concurrently
-- Why: per-question statistics ("how often is this question answered correctly?") scan
--      attempt_answers by question_id. The table is the largest in production, so the
--      index is built CONCURRENTLY (no write lock), which cannot run inside a transaction.
--      IF NOT EXISTS makes a retry after an interrupted build safe to re-run; an INVALID
--      leftover index must be dropped by hand first (DROP INDEX CONCURRENTLY).

CREATE INDEX CONCURRENTLY IF NOT EXISTS attempt_answers_question_id_idx
    ON attempt_answers (question_id, is_correct);
