-- Pairwise verdicts on each pair (hybrid mode: the pair judged in both orders, every repeat).
-- winner names the response (a: the chosen, b: the rejected), not the position it was shown in.
CREATE OR REPLACE VIEW v_pair_verdicts AS
SELECT pr.pair_id, j.judge, j.rubric_hash,
       count(*) FILTER (WHERE j.status = 'ok') AS n_verdicts,
       count(*) FILTER (WHERE j.status <> 'ok') AS n_failed,
       count(*) FILTER (WHERE j.status = 'ok' AND j.winner = 'a') AS chosen_wins,
       count(*) FILTER (WHERE j.status = 'ok' AND j.winner = 'b') AS rejected_wins,
       count(*) FILTER (WHERE j.status = 'ok' AND j.winner = 'tie') AS ties,
       count(*) FILTER (WHERE j.status = 'ok' AND ((j.pair_order = 'ab' AND j.winner = 'a')
                                                OR (j.pair_order = 'ba' AND j.winner = 'b'))) AS first_shown_wins,
       CASE WHEN count(*) FILTER (WHERE j.status <> 'ok') > 0 THEN 'failed'
            WHEN count(*) FILTER (WHERE j.winner = 'a') = count(*) THEN 'consistent'
            WHEN count(*) FILTER (WHERE j.winner = 'b') = count(*) THEN 'reversed'
            ELSE 'inconsistent' END AS verdict
FROM pairs pr
JOIN judgments j ON j.candidate_id = pr.chosen_id AND j.candidate_b_id = pr.rejected_id
                AND j.mode = 'pairwise' AND j.probe IS NULL
GROUP BY pr.pair_id, j.judge, j.rubric_hash;
