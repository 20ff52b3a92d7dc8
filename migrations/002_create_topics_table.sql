-- Migration: create the topics table
-- Why: questions are grouped by topic (e.g. "Algebra" under "Mathematics"); learners pick
--      a topic to be quizzed on. Topics may nest one level or more via parent_id.

CREATE TABLE IF NOT EXISTS topics (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug        varchar(80)  NOT NULL UNIQUE
                CHECK (slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$'),
    name        varchar(120) NOT NULL,
    description text,
    parent_id   bigint REFERENCES topics (id) ON DELETE SET NULL,
    created_at  timestamptz  NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS topics_parent_id_idx ON topics (parent_id);
