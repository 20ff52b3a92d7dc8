-- Migration: seed the default topics
-- Why: a fresh installation should offer learners a catalogue of topics right away;
--      instructors add their own on top. Re-running is harmless (ON CONFLICT DO NOTHING).

INSERT INTO topics (slug, name, description)
VALUES
    ('mathematics',   'Mathematics',   'Numbers, algebra, geometry and more.'),
    ('science',       'Science',       'Physics, chemistry and biology.'),
    ('history',       'History',       'World and regional history.'),
    ('geography',     'Geography',     'Countries, capitals, landforms and climate.'),
    ('programming',   'Programming',   'Languages, algorithms and software design.'),
    ('languages',     'Languages',     'Vocabulary and grammar of world languages.')
ON CONFLICT (slug) DO NOTHING;

INSERT INTO topics (slug, name, description, parent_id)
SELECT v.slug, v.name, v.description, p.id
FROM (VALUES
        ('algebra',   'Algebra',   'Equations, polynomials and functions.',   'mathematics'),
        ('geometry',  'Geometry',  'Shapes, angles and proofs.',              'mathematics'),
        ('sql',       'SQL',       'Querying relational databases.',          'programming'),
        ('rust',      'Rust',      'Ownership, borrowing and traits.',        'programming')
     ) AS v (slug, name, description, parent_slug)
JOIN topics p ON p.slug = v.parent_slug
ON CONFLICT (slug) DO NOTHING;
