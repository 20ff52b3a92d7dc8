-- Rollback of 004_create_quiz_attempts_and_answers_tables: drops attempt_answers, then
-- quiz_attempts (which attempt_answers references). Every attempt and answer is lost.

DROP TABLE attempt_answers;
DROP TABLE quiz_attempts;
