-- Every row's id is derived from what defines it (see prefcurate/ids.py), so each stage
-- inserts with ON CONFLICT DO NOTHING and a rerun adds nothing. run_id names the run that
-- wrote the row (see `runs`).

CREATE TABLE runs (
    run_id       VARCHAR PRIMARY KEY,
    command      VARCHAR NOT NULL,          -- e.g. "run", "import prompts", "snapshot create"
    config       JSON,                      -- the validated config, when the command had one
    started_at   TIMESTAMP NOT NULL,
    finished_at  TIMESTAMP,
    status       VARCHAR NOT NULL,          -- running | ok | failed
    stats        JSON,                      -- per-stage counts
    error        VARCHAR
);

CREATE TABLE prompts (
    prompt_id    VARCHAR PRIMARY KEY,       -- hash of the normalised messages
    messages     JSON NOT NULL,             -- chat messages [{role, content}, ...], the last one from the user
    prompt_text  VARCHAR NOT NULL,          -- the last user message, for reading and search
    source       VARCHAR,                   -- file or dataset it came from
    source_id    VARCHAR,                   -- the id it had there, if any
    metadata     JSON,
    run_id       VARCHAR,
    created_at   TIMESTAMP DEFAULT current_timestamp
);

CREATE TABLE candidates (
    candidate_id      VARCHAR PRIMARY KEY,  -- hash of prompt, generator, params, sample index (or text, if imported)
    prompt_id         VARCHAR NOT NULL,
    sample_index      INTEGER NOT NULL,
    text              VARCHAR NOT NULL,
    finish_reason     VARCHAR,              -- stop | length | imported
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    latency_s         DOUBLE,               -- the request's time, shared by its n samples (vLLM without engine stats: its batch's)
    generator         VARCHAR NOT NULL,     -- backend:model, or the name given on import
    params            JSON,                 -- sampling parameters
    run_id            VARCHAR,
    created_at        TIMESTAMP DEFAULT current_timestamp
);
CREATE INDEX candidates_prompt ON candidates (prompt_id);

CREATE TABLE judgments (
    judgment_id        VARCHAR PRIMARY KEY, -- hash of target(s), judge, rubric hash, mode, order, repeat, probe
    prompt_id          VARCHAR NOT NULL,
    candidate_id       VARCHAR NOT NULL,    -- the candidate judged (pairwise: the one shown first)
    candidate_b_id     VARCHAR,             -- pairwise: the one shown second
    judge              VARCHAR NOT NULL,    -- backend:model
    rubric_name        VARCHAR,
    rubric_hash        VARCHAR NOT NULL,
    mode               VARCHAR NOT NULL,    -- pointwise | pairwise
    pair_order         VARCHAR,             -- pairwise: ab | ba
    repeat_index       INTEGER NOT NULL DEFAULT 0,
    probe              VARCHAR,             -- NULL for the plain judgment, else the probe kind
    scores             JSON,                -- {criterion: score}
    overall            DOUBLE,              -- weighted mean of the criteria (NULL unless status = ok)
    winner             VARCHAR,             -- pairwise: a | b | tie
    rationale          VARCHAR,
    raw_response       VARCHAR,             -- what the judge returned (local: the score distributions)
    status             VARCHAR NOT NULL,    -- ok | parse_error | api_error
    error              VARCHAR,
    input_tokens       INTEGER,
    output_tokens      INTEGER,
    cache_read_tokens  INTEGER,
    cache_write_tokens INTEGER,
    cost_usd           DOUBLE,
    latency_s          DOUBLE,
    run_id             VARCHAR,
    created_at         TIMESTAMP DEFAULT current_timestamp
);
CREATE INDEX judgments_candidate ON judgments (candidate_id);

CREATE TABLE pairs (
    pair_id         VARCHAR PRIMARY KEY,    -- hash of prompt, chosen, rejected, strategy
    prompt_id       VARCHAR NOT NULL,
    chosen_id       VARCHAR NOT NULL,
    rejected_id     VARCHAR NOT NULL,
    strategy        VARCHAR NOT NULL,
    chosen_score    DOUBLE NOT NULL,
    rejected_score  DOUBLE NOT NULL,
    margin          DOUBLE NOT NULL,        -- chosen_score - rejected_score
    judge           VARCHAR NOT NULL,
    rubric_hash     VARCHAR NOT NULL,
    run_id          VARCHAR,
    created_at      TIMESTAMP DEFAULT current_timestamp
);

CREATE TABLE audits (
    audit_id    VARCHAR PRIMARY KEY,
    metrics     JSON,
    gates       JSON,
    passed      BOOLEAN,
    run_id      VARCHAR,
    created_at  TIMESTAMP DEFAULT current_timestamp
);

CREATE TABLE pair_flags (
    audit_id  VARCHAR NOT NULL,
    pair_id   VARCHAR NOT NULL,
    flag      VARCHAR NOT NULL,
    detail    VARCHAR,
    PRIMARY KEY (audit_id, pair_id, flag)
);

CREATE TABLE snapshots (
    snapshot_id  VARCHAR PRIMARY KEY,       -- hash of the pair ids and the split settings
    name         VARCHAR,
    path         VARCHAR NOT NULL,          -- folder with train.parquet, test.parquet, manifest.json
    n_pairs      INTEGER NOT NULL,
    n_train      INTEGER NOT NULL,
    n_test       INTEGER NOT NULL,
    manifest     JSON NOT NULL,
    audit_id     VARCHAR,
    run_id       VARCHAR,
    created_at   TIMESTAMP DEFAULT current_timestamp
);

CREATE TABLE train_runs (
    train_run_id  VARCHAR PRIMARY KEY,
    snapshot_id   VARCHAR NOT NULL,
    config        JSON,
    output_dir    VARCHAR,
    base_model    VARCHAR,
    metrics       JSON,
    git_commit    VARCHAR,
    status        VARCHAR NOT NULL,         -- running | ok | failed
    started_at    TIMESTAMP,
    finished_at   TIMESTAMP
);
