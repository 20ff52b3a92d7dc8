-- Rollback of 005_seed_default_topics: removes the seeded topics that nothing uses yet.
-- A seeded topic that has questions or quiz attempts stays (deleting it would delete its
-- questions, and quiz_attempts forbids it); the sub-topics go first, then their parents.

DELETE FROM topics t
WHERE t.slug IN ('algebra', 'geometry', 'sql', 'rust')
  AND NOT EXISTS (SELECT 1 FROM questions q WHERE q.topic_id = t.id)
  AND NOT EXISTS (SELECT 1 FROM quiz_attempts a WHERE a.topic_id = t.id);

DELETE FROM topics t
WHERE t.slug IN ('mathematics', 'science', 'history', 'geography', 'programming', 'languages')
  AND NOT EXISTS (SELECT 1 FROM topics c WHERE c.parent_id = t.id)
  AND NOT EXISTS (SELECT 1 FROM questions q WHERE q.topic_id = t.id)
  AND NOT EXISTS (SELECT 1 FROM quiz_attempts a WHERE a.topic_id = t.id);
