-- Every successful pairwise verdict, probes included, said about its two responses in a fixed
-- orientation: x is the lower candidate id, y the other; shown_first names the one shown first, pick
-- the winner (x, y or tie). Two verdicts on the same comparison in the two orders meet on
-- (judge, rubric_hash, probe, x, y, repeat_index): the unit of swap consistency and of McNemar's test
-- for position bias.
CREATE OR REPLACE VIEW v_oriented_verdicts AS
SELECT judgment_id, prompt_id, judge, rubric_hash, probe,
       least(candidate_id, candidate_b_id) AS x, greatest(candidate_id, candidate_b_id) AS y, repeat_index,
       CASE WHEN (pair_order = 'ab') = (candidate_id < candidate_b_id) THEN 'x' ELSE 'y' END AS shown_first,
       CASE WHEN winner = 'tie' THEN 'tie' WHEN (winner = 'a') = (candidate_id < candidate_b_id) THEN 'x' ELSE 'y' END AS pick
FROM judgments WHERE mode = 'pairwise' AND status = 'ok';
