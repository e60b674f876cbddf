-- The candidates a judge scored more than once (under one rubric): only their pairs can flip across
-- repeats. Most stores have none, and then every repeat statistic skips its grouping of all scores.
CREATE OR REPLACE VIEW v_repeated_scores AS
SELECT candidate_id, judge, rubric_hash FROM v_scores WHERE repeat_index > 0 GROUP BY ALL;
