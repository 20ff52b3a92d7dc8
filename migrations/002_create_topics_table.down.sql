-- Rollback of 002_create_topics_table: drops the topics table (its identity sequence, its
-- unique slug and topics_parent_id_idx go with it). Every topic row is lost.

DROP TABLE topics;
