-- Each generator's model family (see model_family), worked out once per distinct generator rather
-- than once per candidate: what the self-preference metric and the self_preferred flag join on.
CREATE OR REPLACE VIEW v_generator_families AS
SELECT generator, model_family(generator) AS family FROM (SELECT DISTINCT generator FROM candidates);
