-- Fleet sessions (keep in step with ../sqlite/0004_sidecar_sessions.sql).
--
-- One row per sidecar sync session, on any replica: written by the replica serving it when it
-- subscribes, updated when it acknowledges and every heartbeat (last_seen), and marked
-- disconnected when the stream ends. A row still "connected" whose last_seen is older than three
-- heartbeats belongs to a replica that died: it is read as disconnected (stale). Rows disconnected
-- longer than [retention] sessions_max_age_hours are deleted by the retention task.

CREATE TABLE sidecar_sessions (
    id              TEXT   PRIMARY KEY,
    replica         TEXT   NOT NULL,
    session         BIGINT NOT NULL,
    environment     TEXT   NOT NULL,
    client_id       TEXT   NOT NULL,
    version         TEXT   NOT NULL,
    address         TEXT   NOT NULL,
    sent_revision   BIGINT NOT NULL DEFAULT 0,
    acked_revision  BIGINT NOT NULL DEFAULT 0,
    acked_digest    TEXT,
    digest_revision BIGINT,
    -- 1 matched, 0 did not, NULL not checked
    digest_matches  BIGINT,
    connected_since BIGINT NOT NULL,
    last_seen       BIGINT NOT NULL,
    disconnected_at BIGINT
);

CREATE INDEX sidecar_sessions_by_environment ON sidecar_sessions (environment, client_id);
CREATE INDEX sidecar_sessions_by_replica ON sidecar_sessions (replica, disconnected_at);
CREATE INDEX sidecar_sessions_by_disconnection ON sidecar_sessions (disconnected_at);
