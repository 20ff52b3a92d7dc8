-- Migration: create the quiz_attempts and attempt_answers tables
-- Why: each time a learner takes a quiz on a topic we keep the attempt and every answer,
--      so progress, scores and weak topics can be computed.

CREATE TABLE IF NOT EXISTS quiz_attempts (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    topic_id        bigint      NOT NULL REFERENCES topics (id) ON DELETE RESTRICT,
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    question_count  integer     NOT NULL DEFAULT 0 CHECK (question_count >= 0),
    correct_count   integer     NOT NULL DEFAULT 0 CHECK (correct_count >= 0),
    CHECK (correct_count <= question_count),
    CHECK (finished_at IS NULL OR finished_at >= started_at)
);

CREATE INDEX IF NOT EXISTS quiz_attempts_user_id_started_at_idx
    ON quiz_attempts (user_id, started_at DESC);

CREATE TABLE IF NOT EXISTS attempt_answers (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    attempt_id   bigint      NOT NULL REFERENCES quiz_attempts (id) ON DELETE CASCADE,
    question_id  bigint      NOT NULL REFERENCES questions (id) ON DELETE CASCADE,
    choice_id    bigint      REFERENCES question_choices (id) ON DELETE SET NULL,
    answer_text  text,
    is_correct   boolean     NOT NULL,
    answered_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (attempt_id, question_id)
);
