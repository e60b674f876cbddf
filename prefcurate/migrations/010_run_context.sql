-- What a run decided once (prefcurate/context.py), kept so that a later command on the store (audit,
-- probe, snapshot create) can use the config of the run that filled it, rubric included, even when
-- the files have changed since.
ALTER TABLE runs ADD COLUMN config_path VARCHAR;   -- the config file, when there was one
ALTER TABLE runs ADD COLUMN config_hash VARCHAR;   -- a hash of the whole validated config
ALTER TABLE runs ADD COLUMN judge VARCHAR;         -- the judge's identity, backend:model
ALTER TABLE runs ADD COLUMN rubric JSON;           -- the rubric as loaded
ALTER TABLE runs ADD COLUMN arguments JSON;        -- the command's own arguments: the file imported, the snapshot's name, ...
