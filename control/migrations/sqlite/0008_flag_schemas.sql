-- JSON Schemas of flags used as configuration (docs/adr/0036-json-schemas-beside-flags.md): one per
-- environment and flag key, beside the flag's row (not in its definition: sidecars never see it).
-- A flag delete or a whole-set write keeps it; DELETE .../flags/{key}/schema removes it.
CREATE TABLE flag_schemas (
    environment_id BIGINT NOT NULL REFERENCES environments(id) ON DELETE CASCADE,
    key            TEXT   NOT NULL,
    schema         TEXT   NOT NULL,
    updated_at     BIGINT NOT NULL,
    PRIMARY KEY (environment_id, key)
);
