-- Read-side SQL that more than one module needs, written once.

-- Every plain judgment: of a candidate or a pair as generated, not of a probe's perturbation.
CREATE OR REPLACE VIEW v_plain_judgments AS
SELECT judgment_id, prompt_id, candidate_id, candidate_b_id, judge, rubric_hash, mode, pair_order, repeat_index,
       scores, overall, winner, status, error, run_id
FROM judgments WHERE probe IS NULL;

-- The plain pointwise scores that succeeded: what ranks a prompt's candidates and what the audit measures.
CREATE OR REPLACE VIEW v_scores AS
SELECT judgment_id, prompt_id, candidate_id, judge, rubric_hash, repeat_index, overall, scores, run_id
FROM v_plain_judgments WHERE mode = 'pointwise' AND status = 'ok';

-- The plain pairwise verdicts, failed ones included (status says which). A comparison is stored
-- with the response shown first in order ab as candidate_id, and winner names a response.
CREATE OR REPLACE VIEW v_comparisons AS
SELECT judgment_id, prompt_id, candidate_id, candidate_b_id, judge, rubric_hash, pair_order, repeat_index, winner,
       status, error, run_id
FROM v_plain_judgments WHERE mode = 'pairwise';

-- Judgments of perturbed candidates (probes of the judge), successful ones.
CREATE OR REPLACE VIEW v_probe_judgments AS
SELECT judgment_id, prompt_id, candidate_id, candidate_b_id, judge, rubric_hash, probe, mode, pair_order,
       repeat_index, overall, winner, run_id
FROM judgments WHERE probe IS NOT NULL AND status = 'ok';

-- Whether a flag keeps its pair out of snapshots, as decided by the audit that raised it
-- (audit.blocking_flags of that audit's config).
ALTER TABLE pair_flags ADD COLUMN blocks BOOLEAN;
UPDATE pair_flags f SET blocks = list_contains(CAST(a.config->'$.blocking_flags' AS VARCHAR[]), f.flag)
FROM audits a WHERE a.audit_id = f.audit_id;

-- The pairs an audit found fit for a snapshot: no flag of that audit blocks them.
CREATE OR REPLACE MACRO fit_pairs(audit) AS TABLE
SELECT * FROM pairs WHERE pair_id NOT IN (SELECT pair_id FROM pair_flags WHERE audit_id = audit AND blocks);

-- The latest audit, and what it found.
CREATE OR REPLACE VIEW v_latest_audit AS SELECT * FROM audits ORDER BY created_at DESC LIMIT 1;

CREATE OR REPLACE VIEW v_fit_pairs AS SELECT * FROM fit_pairs((SELECT audit_id FROM v_latest_audit));

CREATE OR REPLACE VIEW v_flags AS
SELECT f.audit_id, f.pair_id, f.flag, f.detail, f.blocks, pr.prompt_id, p.prompt_text, pr.judge, pr.margin,
       a.created_at AS audited_at
FROM pair_flags f
JOIN v_latest_audit a USING (audit_id)
JOIN pairs pr USING (pair_id)
JOIN prompts p ON p.prompt_id = pr.prompt_id;
