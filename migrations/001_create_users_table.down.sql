-- Rollback of 001_create_users_table: drops the users table (its identity sequence and
-- users_email_lower_key go with it). Every user row is lost.

DROP TABLE users;
