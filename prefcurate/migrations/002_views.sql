-- Views for auditing with SQL; documented in the README.

-- One row per judged candidate: the plain (unprobed) pointwise judgments.
CREATE OR REPLACE VIEW v_judgments AS
SELECT j.judgment_id, j.prompt_id, j.candidate_id, j.judge, j.rubric_name, j.rubric_hash,
       j.mode, j.repeat_index, j.status, j.overall, j.scores, j.error,
       c.generator, length(c.text) AS candidate_chars, c.completion_tokens AS candidate_tokens,
       c.finish_reason, p.prompt_text, c.text AS candidate_text, j.run_id, j.created_at
FROM judgments j
JOIN candidates c USING (candidate_id)
JOIN prompts p ON p.prompt_id = j.prompt_id
WHERE j.probe IS NULL;

-- One row per chosen/rejected pair, with both texts, scores, margin and lengths.
CREATE OR REPLACE VIEW v_pairs AS
SELECT pr.pair_id, pr.prompt_id, p.prompt_text,
       ch.text AS chosen_text, rj.text AS rejected_text,
       pr.chosen_score, pr.rejected_score, pr.margin,
       length(ch.text) AS chosen_chars, length(rj.text) AS rejected_chars,
       ch.completion_tokens AS chosen_tokens, rj.completion_tokens AS rejected_tokens,
       pr.strategy, pr.judge, pr.rubric_hash, ch.generator,
       pr.chosen_id, pr.rejected_id, pr.run_id, pr.created_at
FROM pairs pr
JOIN prompts p ON p.prompt_id = pr.prompt_id
JOIN candidates ch ON ch.candidate_id = pr.chosen_id
JOIN candidates rj ON rj.candidate_id = pr.rejected_id;

-- Rows per stage, for a quick look at where a run stands.
CREATE OR REPLACE VIEW v_counts AS
SELECT 'prompts' AS stage, count(*) AS n FROM prompts
UNION ALL SELECT 'candidates', count(*) FROM candidates
UNION ALL SELECT 'judgments', count(*) FROM judgments
UNION ALL SELECT 'judgment failures', count(*) FROM judgments WHERE status <> 'ok'
UNION ALL SELECT 'pairs', count(*) FROM pairs
UNION ALL SELECT 'snapshots', count(*) FROM snapshots
UNION ALL SELECT 'train_runs', count(*) FROM train_runs;
