-- Migration: create the questions and question_choices tables
-- Why: the quiz engine draws questions per topic; multiple-choice answers live in
--      question_choices so answers can reference the exact choice a learner picked.

CREATE TABLE IF NOT EXISTS questions (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic_id      bigint       NOT NULL REFERENCES topics (id) ON DELETE CASCADE,
    author_id     bigint       REFERENCES users (id) ON DELETE SET NULL,
    kind          varchar(20)  NOT NULL DEFAULT 'single_choice'
                  CHECK (kind IN ('single_choice', 'multiple_choice', 'true_false', 'free_text')),
    prompt        text         NOT NULL,
    explanation   text,
    difficulty    smallint     NOT NULL DEFAULT 2 CHECK (difficulty BETWEEN 1 AND 5),
    metadata      jsonb        NOT NULL DEFAULT '{}'::jsonb,
    is_published  boolean      NOT NULL DEFAULT false,
    created_at    timestamptz  NOT NULL DEFAULT now(),
    updated_at    timestamptz  NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS questions_topic_id_idx ON questions (topic_id) WHERE is_published;

CREATE TABLE IF NOT EXISTS question_choices (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    question_id  bigint   NOT NULL REFERENCES questions (id) ON DELETE CASCADE,
    position     smallint NOT NULL CHECK (position >= 0),
    label        text     NOT NULL,
    is_correct   boolean  NOT NULL DEFAULT false,
    UNIQUE (question_id, position)
);
