-- The judge against people (`prefcurate calibrate`): one row per judge, rubric and set of human labels.
-- The verdicts behind it are judgments with probe 'calibration' (both orders of every labelled pair, ids
-- derived from their content as for any judgment, so a rerun or another label set pays only for what
-- is new); they are not the store's data, so the audit's verdict views leave them out.
CREATE TABLE calibrations (
    calibration_id  VARCHAR PRIMARY KEY,  -- hash of judge, rubric hash, label set hash
    judge           VARCHAR NOT NULL,
    rubric_hash     VARCHAR NOT NULL,
    labels_hash     VARCHAR NOT NULL,     -- hash of the labelled pairs (prompt, responses, label), in order
    source          VARCHAR,              -- the labels' file
    n               INTEGER NOT NULL,     -- labelled pairs with both verdicts
    agreement       DOUBLE,               -- on pairs people did not call a tie: the judge's pick is theirs
    kappa           DOUBLE,               -- Cohen's kappa over a, b and tie
    cost_usd        DOUBLE,               -- of every judgment behind it
    metrics         JSON NOT NULL,        -- every number with its interval (see the README)
    run_id          VARCHAR,
    created_at      TIMESTAMP NOT NULL
);

-- Calibrations, newest first, with the main numbers and their intervals.
CREATE OR REPLACE VIEW v_calibrations AS
SELECT calibration_id, judge, rubric_hash, source, n, agreement,
       metrics->>'$.agreement_ci' AS agreement_ci, kappa, metrics->>'$.kappa_ci' AS kappa_ci,
       (metrics->>'$.judge_p_longer')::DOUBLE AS judge_p_longer, (metrics->>'$.human_p_longer')::DOUBLE AS human_p_longer,
       (metrics->>'$.swap_consistency')::DOUBLE AS swap_consistency, cost_usd, created_at
FROM calibrations ORDER BY created_at DESC;

-- As in 013, without the calibration verdicts.
CREATE OR REPLACE VIEW v_oriented_verdicts AS
SELECT judgment_id, prompt_id, judge, rubric_hash, probe,
       least(candidate_id, candidate_b_id) AS x, greatest(candidate_id, candidate_b_id) AS y, repeat_index,
       CASE WHEN (pair_order = 'ab') = (candidate_id < candidate_b_id) THEN 'x' ELSE 'y' END AS shown_first,
       CASE WHEN winner = 'tie' THEN 'tie' WHEN (winner = 'a') = (candidate_id < candidate_b_id) THEN 'x' ELSE 'y' END AS pick
FROM judgments WHERE mode = 'pairwise' AND status = 'ok' AND probe IS DISTINCT FROM 'calibration';
