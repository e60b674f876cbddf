-- Which method trained: dpo (on a pairs snapshot) or grpo (on a prompts snapshot, rewarded by the
-- rubric's checks). The runs before this column were all DPO.
ALTER TABLE train_runs ADD COLUMN method VARCHAR DEFAULT 'dpo';

CREATE OR REPLACE VIEW v_lineage AS
SELECT t.train_run_id, t.method, t.status, t.output_dir, t.base_model, t.git_commit, t.started_at,
       t.snapshot_id, s.n_pairs, s.n_train, s.n_test, s.path AS snapshot_path,
       s.audit_id, a.passed AS audit_passed, CAST(s.manifest->'$.audit.forced' AS BOOLEAN) AS audit_forced,
       s.manifest->'$.prompt_sources' AS prompt_sources, s.manifest->'$.generators' AS generators,
       s.manifest->'$.judges' AS judges, s.manifest->'$.rubric_hashes' AS rubric_hashes,
       t.metrics
FROM train_runs t
JOIN snapshots s USING (snapshot_id)
LEFT JOIN audits a ON a.audit_id = s.audit_id;
