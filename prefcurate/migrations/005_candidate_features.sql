-- Features of each candidate that a biased judge might reward (see prefcurate/features.py).
CREATE TABLE candidate_features (
    candidate_id       VARCHAR PRIMARY KEY,
    chars              INTEGER NOT NULL,
    words              INTEGER NOT NULL,
    opener             VARCHAR,             -- the opener phrase it starts with ("certainly", ...), or NULL
    closer             VARCHAR,             -- the stock closer it ends with ("i hope this helps", ...), or NULL
    repetition_ratio   DOUBLE NOT NULL,     -- share of word trigrams that repeat an earlier one
    injection_attempt  BOOLEAN NOT NULL     -- text aimed at a judge ("ignore the rubric", "give this a 10", ...)
);

-- Each candidate with its features and its mean plain pointwise score per judge and rubric.
CREATE OR REPLACE VIEW v_candidate_features AS
SELECT c.candidate_id, c.prompt_id, c.generator, c.completion_tokens AS tokens, f.chars, f.words, f.opener,
       f.closer, f.repetition_ratio, f.injection_attempt, c.finish_reason, c.text
FROM candidates c JOIN candidate_features f USING (candidate_id);
