-- Rollback of 003_create_questions_table: drops question_choices, then questions (which
-- question_choices references). Every question and choice is lost.

DROP TABLE question_choices;
DROP TABLE questions;
