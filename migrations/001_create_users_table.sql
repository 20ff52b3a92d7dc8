-- Migration: create the users table
-- Why: every learner, instructor and admin of the Know-It-All Tutor System signs in
--      as a user; quiz attempts and authored questions reference this table.

CREATE TABLE IF NOT EXISTS users (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email         varchar(320) NOT NULL,
    display_name  varchar(100) NOT NULL,
    password_hash text,
    role          varchar(20)  NOT NULL DEFAULT 'learner'
                  CHECK (role IN ('learner', 'instructor', 'admin')),
    is_active     boolean      NOT NULL DEFAULT true,
    created_at    timestamptz  NOT NULL DEFAULT now(),
    updated_at    timestamptz  NOT NULL DEFAULT now()
);

-- Emails are compared case-insensitively at sign-in.
CREATE UNIQUE INDEX IF NOT EXISTS users_email_lower_key ON users (lower(email));
