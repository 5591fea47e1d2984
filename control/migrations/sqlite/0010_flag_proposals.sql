-- Shadow evaluation (keep in step with ../postgres/0010_flag_proposals.sql; docs/shadow.md, ADR 0040).
--
-- flag_proposals: at most one proposed definition per environment and flag key, stored beside the
-- live flag and not published. Sidecars receive an environment's proposals in the sync stream's
-- Full frame and evaluate them beside the live rules on a sample of decisions. Each write of a
-- proposal is a revision of the environment (change-log kind 'proposals', no definition in it) and
-- gets a new random id, so counts of an old proposal are never mixed with a new one's.
CREATE TABLE flag_proposals (
    environment_id BIGINT NOT NULL REFERENCES environments(id) ON DELETE CASCADE,
    key            TEXT   NOT NULL,
    -- 16 lowercase hex digits, new for every proposal written
    id             TEXT   NOT NULL,
    -- the proposed flagd flag definition (JSON); its variants are the live flag's
    definition     TEXT   NOT NULL,
    -- the share of decisions the sidecars evaluate it on, in (0, 1]
    sample_ratio   REAL NOT NULL,
    -- the live flag's version it was proposed against: publishing refuses a flag changed since
    flag_version   BIGINT NOT NULL,
    -- the environment revision its write made (its ETag)
    revision       BIGINT NOT NULL,
    proposed_by    TEXT   NOT NULL,
    proposed_at    BIGINT NOT NULL,
    PRIMARY KEY (environment_id, key)
);

-- shadow_counts: the sampled decisions sidecars reported per flag, proposal, minute (Unix ms at its
-- start, the minute control received the report in) and (live variant, proposed variant); '' for
-- no value. Each replica adds the reports up in memory and adds them to these rows every few
-- seconds. Rows of a proposal go when it is replaced, dropped or published; minutes older than
-- the longest comparison window are deleted by the retention task.
CREATE TABLE shadow_counts (
    environment_id BIGINT NOT NULL REFERENCES environments(id) ON DELETE CASCADE,
    flag           TEXT   NOT NULL,
    proposal       TEXT   NOT NULL,
    minute         BIGINT NOT NULL,
    from_variant   TEXT   NOT NULL,
    to_variant     TEXT   NOT NULL,
    evaluations    BIGINT NOT NULL,
    PRIMARY KEY (environment_id, flag, proposal, minute, from_variant, to_variant)
);

CREATE INDEX shadow_counts_by_minute ON shadow_counts (minute);
