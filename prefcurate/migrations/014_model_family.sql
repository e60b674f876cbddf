-- A model's family, for self-preference: the first run of letters of its name, lower-cased, after the
-- last "/" or ":" (a judge is backend:model, a generator backend:model or a name given on import):
-- anthropic:claude-sonnet-4-6 -> claude, vllm:HuggingFaceTB/SmolLM2-135M-Instruct -> smollm.
CREATE OR REPLACE MACRO model_family(name) AS
    nullif(regexp_extract(lower(regexp_replace(name, '^.*[/:]', '')), '^[^a-z]*([a-z]+)', 1), '');
