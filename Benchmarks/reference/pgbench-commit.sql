-- The reference of the durable1/16/64 scenarios (scripts/bench.sh): one event-shaped row per
-- transaction into bench_commit (same columns and indexes as tidings.events), what storing a
-- published event costs the database without Tidings' delivery order (order lock, id sequence).
\set u random(0, 199)
INSERT INTO bench_commit (targets, event, data) VALUES (ARRAY['user:bench-u' || :u], 'bench', '{"seq":0,"sent":0}');
