-- stepmigrate: no-transaction
-- Rollback of 007_index_attempt_answers_question_id: drops the index concurrently (no
-- write lock on the large attempt_answers table), which cannot run inside a transaction.
-- IF EXISTS makes a retry after an interrupted drop safe.

DROP INDEX CONCURRENTLY IF EXISTS attempt_answers_question_id_idx;
