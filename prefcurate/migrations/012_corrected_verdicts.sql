-- A pair whose pairwise verdicts all prefer its rejected response is `reversed` when the judge's own
-- pointwise scores put the chosen one above: the judge contradicts itself. When its own scores agree
-- with the pairwise verdicts, a rubric penalty (opener_penalty, length_penalty) set the pair's order
-- against the judge's measured bias, and the verdicts repeat that bias: the pair is `corrected`.
CREATE OR REPLACE VIEW v_pair_verdicts AS
WITH own AS (  -- the judge's mean pointwise score of each candidate, before any rubric penalty
    SELECT candidate_id, judge, rubric_hash, avg(overall) AS score FROM v_scores GROUP BY ALL
)
SELECT pj.pair_id, pj.judge, pj.rubric_hash,
       count(*) FILTER (WHERE pj.status = 'ok') AS n_verdicts,
       count(*) FILTER (WHERE pj.status <> 'ok') AS n_failed,
       count(*) FILTER (WHERE pj.prefers = 'chosen') AS chosen_wins,
       count(*) FILTER (WHERE pj.prefers = 'rejected') AS rejected_wins,
       count(*) FILTER (WHERE pj.prefers = 'tie') AS ties,
       count(*) FILTER (WHERE (pj.pair_order = 'ab' AND pj.prefers = 'chosen')
                           OR (pj.pair_order = 'ba' AND pj.prefers = 'rejected')) AS first_shown_wins,
       CASE WHEN count(*) FILTER (WHERE pj.status <> 'ok') > 0 THEN 'failed'
            WHEN count(*) FILTER (WHERE pj.prefers = 'chosen') = count(*) THEN 'consistent'
            WHEN count(*) FILTER (WHERE pj.prefers = 'rejected') = count(*)
                 THEN CASE WHEN any_value(c.score) <= any_value(r.score) THEN 'corrected' ELSE 'reversed' END
            ELSE 'inconsistent' END AS verdict
FROM v_pair_judgments pj
JOIN pairs pr USING (pair_id)
LEFT JOIN own c ON c.candidate_id = pr.chosen_id AND c.judge = pj.judge AND c.rubric_hash = pj.rubric_hash
LEFT JOIN own r ON r.candidate_id = pr.rejected_id AND r.judge = pj.judge AND r.rubric_hash = pj.rubric_hash
GROUP BY pj.pair_id, pj.judge, pj.rubric_hash;
