-- Message Batches submitted by the Claude judge. A batch is recorded the moment it is accepted, so
-- a run that dies while it is processing resumes it instead of paying for it again.
CREATE TABLE judge_batches (
    batch_id      VARCHAR PRIMARY KEY,      -- the provider's id
    judge         VARCHAR NOT NULL,
    rubric_hash   VARCHAR NOT NULL,
    mode          VARCHAR NOT NULL,         -- pointwise | pairwise
    n_requests    INTEGER NOT NULL,
    status        VARCHAR NOT NULL,         -- submitted | collected
    run_id        VARCHAR,
    created_at    TIMESTAMP DEFAULT current_timestamp,
    collected_at  TIMESTAMP
);

CREATE TABLE judge_batch_requests (
    batch_id   VARCHAR NOT NULL,
    custom_id  VARCHAR NOT NULL,            -- the judgment_id the result becomes
    PRIMARY KEY (batch_id, custom_id)
);
