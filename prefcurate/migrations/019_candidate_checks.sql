-- Each candidate's result of each verifiable check of a rubric (prefcurate/checks.py): passed true or
-- false, NULL where the check does not apply (no reference answer, no token count). A check is keyed
-- by its content, so a changed check gets new rows and the old ones stay as they were.
CREATE TABLE candidate_checks (
    candidate_id  VARCHAR NOT NULL,
    check_key     VARCHAR NOT NULL,  -- hash of the check's definition
    name          VARCHAR NOT NULL,
    kind          VARCHAR NOT NULL,  -- regex | not_regex | json | json_schema | max_words | min_words | max_tokens | ...
    hard          BOOLEAN NOT NULL,  -- failing it on the chosen response flags the pair failed_check
    passed        BOOLEAN,
    detail        VARCHAR,           -- what was found: "412 words", "not JSON: ...", "answer 42, reference 42"
    run_id        VARCHAR,
    created_at    TIMESTAMP,
    PRIMARY KEY (candidate_id, check_key)
);

-- Check results with their candidate's prompt and generator.
CREATE OR REPLACE VIEW v_candidate_checks AS
SELECT k.candidate_id, c.prompt_id, c.generator, k.name, k.kind, k.hard, k.passed, k.detail, k.check_key, k.created_at
FROM candidate_checks k JOIN candidates c USING (candidate_id);
