-- Each `prefcurate best-of-n` curve, one row per N: the prompts with at least N candidates, the pass rate
-- (with its 95% interval) and mean judge score of the judge's best of their first N, and the pass rate of
-- their majority answer (self-consistency). The pass rates are NULL where no check applies.
CREATE TABLE best_of_n (
    run_id              VARCHAR NOT NULL,
    n                   INTEGER NOT NULL,
    judge               VARCHAR NOT NULL,
    rubric_hash         VARCHAR NOT NULL,
    split               VARCHAR,          -- the prompts' metadata split it was measured on (NULL: all prompts)
    prompts             INTEGER NOT NULL,
    pass_rate           DOUBLE,
    pass_rate_ci        DOUBLE[],
    mean_score          DOUBLE,
    majority_pass_rate  DOUBLE,
    created_at          TIMESTAMP,
    PRIMARY KEY (run_id, n)
);

-- The latest curve of each judge, rubric and split.
CREATE VIEW v_best_of_n AS
SELECT b.* FROM best_of_n b
WHERE b.run_id = (SELECT arg_max(l.run_id, l.created_at) FROM best_of_n l
                  WHERE l.judge = b.judge AND l.rubric_hash = b.rubric_hash AND l.split IS NOT DISTINCT FROM b.split)
ORDER BY b.judge, b.rubric_hash, b.split, b.n;

-- GRPO runs with the check pass rate of their test prompts, sampled once per answer (N = 1): before
-- training and of the kept policy, and the gain with its 95% interval over prompts.
CREATE VIEW v_grpo_pass_rates AS
WITH runs AS (SELECT *, '$.eval.' AS e, '."' || (metrics->>'$.kept') || '"' AS kept FROM train_runs
              WHERE method = 'grpo' AND status IN ('ok', 'stopped', 'drifted'))
SELECT train_run_id, snapshot_id, status, metrics->>'$.kept' AS kept, CAST(metrics->>'$.steps' AS INTEGER) AS steps,
       CAST(json_extract(metrics, e || 'pass_rate.before.estimate') AS DOUBLE) AS base_pass_rate,
       CAST(json_extract(metrics, e || 'pass_rate' || kept || '.estimate') AS DOUBLE) AS pass_rate,
       CAST(json_extract(metrics, e || 'pass_rate' || kept || '.ci') AS DOUBLE[]) AS pass_rate_ci,
       CAST(json_extract(metrics, e || 'pass_rate_gain' || kept || '.estimate') AS DOUBLE) AS gain,
       CAST(json_extract(metrics, e || 'pass_rate_gain' || kept || '.ci') AS DOUBLE[]) AS gain_ci,
       CAST(json_extract(metrics, e || 'pass_rate' || kept || '.prompts') AS INTEGER) AS prompts,
       CAST(metrics->>'$.runtime_s' AS DOUBLE) AS runtime_s, finished_at
FROM runs;
