-- Flag usage (keep in step with ../postgres/0006_flag_usage.sql): how many times the sidecars of an
-- environment decided each variant of each flag, per hour. Sidecars report counts over the sync
-- stream (UsageReport); each control replica adds them up in memory and upserts them here every few
-- seconds, adding to what other replicas wrote (evaluations = evaluations + the new count). The hour
-- is the one control received the report in. Rows older than [retention] usage_max_age_days are
-- deleted by the retention task; an environment's rows go with it.

CREATE TABLE flag_usage (
    environment_id BIGINT NOT NULL REFERENCES environments(id) ON DELETE CASCADE,
    flag           TEXT   NOT NULL,
    -- the variant's name; '' for evaluations that gave no value (disabled, error, no default)
    variant        TEXT   NOT NULL,
    -- Unix milliseconds at the start of the hour (UTC)
    hour           BIGINT NOT NULL,
    evaluations    BIGINT NOT NULL,
    PRIMARY KEY (environment_id, flag, variant, hour)
);

CREATE INDEX flag_usage_by_hour ON flag_usage (hour);
