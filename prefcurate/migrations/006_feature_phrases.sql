-- Which opener/closer lists a candidate's features were computed with, so that changing
-- audit.openers or audit.closers recomputes them.
ALTER TABLE candidate_features ADD COLUMN phrases_key VARCHAR;
