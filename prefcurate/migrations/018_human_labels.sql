-- People's labels of the store's pairs (`prefcurate review`): one row per pair and reviewer, in the
-- pair's terms, with the side the chosen response was shown on (left/right order is a coin per pair and
-- reviewer, so a preference for the left side shows up as disagreement, not as agreement).
CREATE TABLE human_labels (
    label_id    VARCHAR PRIMARY KEY,  -- hash of pair and reviewer: a new label of the same pair replaces the old
    pair_id     VARCHAR NOT NULL,
    reviewer    VARCHAR NOT NULL,
    label       VARCHAR NOT NULL,     -- chosen | rejected | tie | skip: the response the person preferred
    shown_left  VARCHAR NOT NULL,     -- chosen | rejected: the response shown on the left
    note        VARCHAR,
    created_at  TIMESTAMP NOT NULL
);

-- Each label with its pair's prompt, judge and margin, and whether the person took the judge's side.
CREATE OR REPLACE VIEW v_human_labels AS
SELECT h.pair_id, h.reviewer, h.label, h.shown_left, h.note, h.created_at, pr.prompt_id, p.prompt_text, pr.judge,
       pr.margin, CASE WHEN h.label IN ('chosen', 'rejected') THEN h.label = 'chosen' END AS agrees_with_judge
FROM human_labels h JOIN pairs pr USING (pair_id) JOIN prompts p ON p.prompt_id = pr.prompt_id;
