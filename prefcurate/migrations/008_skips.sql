-- Work a stage chose not to do, and why (e.g. a prompt longer than the model's context): recorded
-- so that a missing row is explained, and counted in v_counts.
CREATE TABLE skips (
    prompt_id   VARCHAR NOT NULL,
    stage       VARCHAR NOT NULL,           -- generate
    generator   VARCHAR NOT NULL,           -- backend:model the prompt was skipped for
    reason      VARCHAR NOT NULL,
    run_id      VARCHAR,
    created_at  TIMESTAMP DEFAULT current_timestamp,
    PRIMARY KEY (prompt_id, stage, generator)
);

CREATE OR REPLACE VIEW v_counts AS
SELECT 'prompts' AS stage, count(*) AS n FROM prompts
UNION ALL SELECT 'prompts skipped', count(DISTINCT prompt_id) FROM skips
UNION ALL SELECT 'candidates', count(*) FROM candidates
UNION ALL SELECT 'judgments', count(*) FROM judgments
UNION ALL SELECT 'judgment failures', count(*) FROM judgments WHERE status <> 'ok'
UNION ALL SELECT 'pairs', count(*) FROM pairs
UNION ALL SELECT 'snapshots', count(*) FROM snapshots
UNION ALL SELECT 'train_runs', count(*) FROM train_runs;
