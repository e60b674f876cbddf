-- The consistency audit: what each audit measured and which pairs it flagged (see prefcurate/flags.py).
ALTER TABLE audits ADD COLUMN config JSON;      -- the audit section of the config it ran with
ALTER TABLE audits ADD COLUMN n_pairs INTEGER;  -- pairs audited
ALTER TABLE audits ADD COLUMN n_fit INTEGER;    -- pairs without a blocking flag: what a snapshot takes

-- Each plain pairwise judgment of a pair's two responses, shown in either order, said in the
-- pair's terms: pair_order ab means the chosen response was shown first; prefers is chosen,
-- rejected or tie (NULL when the judgment failed). Pairwise mode stores a comparison with its
-- lower candidate id first, hybrid mode with the chosen first: both land here.
CREATE OR REPLACE VIEW v_pair_judgments AS
SELECT pr.pair_id, j.judgment_id, j.judge, j.rubric_hash, j.repeat_index, j.pair_order, j.status, j.error,
       CASE WHEN j.status <> 'ok' THEN NULL WHEN j.winner = 'a' THEN 'chosen' WHEN j.winner = 'b' THEN 'rejected'
            ELSE 'tie' END AS prefers
FROM pairs pr JOIN judgments j
  ON j.candidate_id = pr.chosen_id AND j.candidate_b_id = pr.rejected_id
 AND j.judge = pr.judge AND j.rubric_hash = pr.rubric_hash AND j.mode = 'pairwise' AND j.probe IS NULL
UNION ALL
SELECT pr.pair_id, j.judgment_id, j.judge, j.rubric_hash, j.repeat_index,
       CASE j.pair_order WHEN 'ab' THEN 'ba' ELSE 'ab' END, j.status, j.error,
       CASE WHEN j.status <> 'ok' THEN NULL WHEN j.winner = 'b' THEN 'chosen' WHEN j.winner = 'a' THEN 'rejected'
            ELSE 'tie' END
FROM pairs pr JOIN judgments j
  ON j.candidate_id = pr.rejected_id AND j.candidate_b_id = pr.chosen_id
 AND j.judge = pr.judge AND j.rubric_hash = pr.rubric_hash AND j.mode = 'pairwise' AND j.probe IS NULL;

-- The pairwise verdicts on each pair, counted (replaces the view of migration 003, which saw
-- only comparisons stored with the chosen response first).
CREATE OR REPLACE VIEW v_pair_verdicts AS
SELECT pair_id, judge, rubric_hash,
       count(*) FILTER (WHERE status = 'ok') AS n_verdicts,
       count(*) FILTER (WHERE status <> 'ok') AS n_failed,
       count(*) FILTER (WHERE prefers = 'chosen') AS chosen_wins,
       count(*) FILTER (WHERE prefers = 'rejected') AS rejected_wins,
       count(*) FILTER (WHERE prefers = 'tie') AS ties,
       count(*) FILTER (WHERE (pair_order = 'ab' AND prefers = 'chosen')
                           OR (pair_order = 'ba' AND prefers = 'rejected')) AS first_shown_wins,
       CASE WHEN count(*) FILTER (WHERE status <> 'ok') > 0 THEN 'failed'
            WHEN count(*) FILTER (WHERE prefers = 'chosen') = count(*) THEN 'consistent'
            WHEN count(*) FILTER (WHERE prefers = 'rejected') = count(*) THEN 'reversed'
            ELSE 'inconsistent' END AS verdict
FROM v_pair_judgments
GROUP BY pair_id, judge, rubric_hash;

-- The flags of the latest audit, one row per pair and flag, with the pair's prompt and margin.
CREATE OR REPLACE VIEW v_flags AS
SELECT f.audit_id, f.pair_id, f.flag, f.detail, pr.prompt_id, p.prompt_text, pr.judge, pr.margin, a.created_at AS audited_at
FROM pair_flags f
JOIN audits a USING (audit_id)
JOIN pairs pr USING (pair_id)
JOIN prompts p ON p.prompt_id = pr.prompt_id
WHERE f.audit_id = (SELECT audit_id FROM audits ORDER BY created_at DESC LIMIT 1);

-- Each pair with what a biased judge might have rewarded: lengths, openers, closers, and how
-- often the response shown first won its pairwise verdicts.
CREATE OR REPLACE VIEW v_bias AS
SELECT pr.pair_id, pr.prompt_id, pr.judge, pr.rubric_hash, pr.margin,
       fc.chars AS chosen_chars, fr.chars AS rejected_chars, fc.chars > fr.chars AS chosen_longer,
       fc.opener AS chosen_opener, fr.opener AS rejected_opener,
       fc.closer AS chosen_closer, fr.closer AS rejected_closer,
       pv.n_verdicts, pv.first_shown_wins, pv.verdict
FROM pairs pr
JOIN candidate_features fc ON fc.candidate_id = pr.chosen_id
JOIN candidate_features fr ON fr.candidate_id = pr.rejected_id
LEFT JOIN v_pair_verdicts pv USING (pair_id);
