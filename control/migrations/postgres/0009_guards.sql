-- Guarded rollouts (docs/adr/0035-guarded-rollouts.md; keep in step with the other dialect's 0009):
-- at most one guard per environment and flag, beside the flag's row. Arming a guard again (PUT)
-- makes a new row, so the counts of an earlier arming never mix with the new one's.
CREATE TABLE guards (
    id             BIGSERIAL PRIMARY KEY,
    environment_id BIGINT NOT NULL REFERENCES environments(id) ON DELETE CASCADE,
    flag           TEXT   NOT NULL,
    -- the guard's definition (JSON: rollout, baseline, signal, threshold, ..., action)
    spec           TEXT   NOT NULL,
    -- 'armed' or 'tripped'
    state          TEXT   NOT NULL,
    -- looks made so far by the sequential test (look k happens once the smaller arm holds
    -- min_sample * 2^k answers)
    looks          BIGINT NOT NULL DEFAULT 0,
    -- figures of the latest look (JSON), and of the trip
    last_look      TEXT,
    trip           TEXT,
    armed_at       BIGINT NOT NULL,
    armed_by       TEXT   NOT NULL,
    tripped_at     BIGINT,
    UNIQUE (environment_id, flag)
);

-- The outcomes of the requests that carried each arm's variant since the guard was armed: one row
-- per (guard, arm, bucket), buckets 0-5 the status classes (1xx, 2xx, 3xx, 4xx, 5xx, no answer),
-- 6-37 the latency buckets of vexil.sync.v1.Outcomes. Every replica adds to them.
CREATE TABLE guard_counts (
    guard_id BIGINT   NOT NULL REFERENCES guards(id) ON DELETE CASCADE,
    -- 0: the rollout variant, 1: the baseline variant
    arm      SMALLINT NOT NULL,
    bucket   SMALLINT NOT NULL,
    count    BIGINT   NOT NULL,
    PRIMARY KEY (guard_id, arm, bucket)
);

-- Why a change was made, beside who made it: a guard's trip records the figures that tripped it.
ALTER TABLE audit ADD COLUMN note TEXT;
