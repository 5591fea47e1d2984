-- Vexil control store, PostgreSQL flavour. Keep in step with ../sqlite/0001_init.sql: same tables,
-- columns and indexes; only the auto-increment syntax differs. JSON is stored as text, times as Unix
-- milliseconds, so the code above the SQL is the same for both databases.

CREATE TABLE environments (
    id          BIGSERIAL PRIMARY KEY,
    key         TEXT    NOT NULL UNIQUE,
    name        TEXT    NOT NULL,
    revision    BIGINT  NOT NULL DEFAULT 0,
    metadata    TEXT    NOT NULL DEFAULT '{}',
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL
);

CREATE TABLE flags (
    environment_id BIGINT NOT NULL REFERENCES environments(id) ON DELETE CASCADE,
    key            TEXT   NOT NULL,
    state          TEXT   NOT NULL,
    definition     TEXT   NOT NULL,
    version        BIGINT NOT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    PRIMARY KEY (environment_id, key)
);

CREATE TABLE evaluators (
    environment_id BIGINT NOT NULL REFERENCES environments(id) ON DELETE CASCADE,
    key            TEXT   NOT NULL,
    definition     TEXT   NOT NULL,
    version        BIGINT NOT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    PRIMARY KEY (environment_id, key)
);

-- One row per revision of an environment: what changed and the new definition (deltas are built
-- from here).
CREATE TABLE changes (
    environment_id BIGINT NOT NULL REFERENCES environments(id) ON DELETE CASCADE,
    revision       BIGINT NOT NULL,
    kind           TEXT   NOT NULL,
    key            TEXT,
    op             TEXT   NOT NULL,
    definition     TEXT,
    created_at     BIGINT NOT NULL,
    PRIMARY KEY (environment_id, revision)
);

CREATE TABLE tokens (
    id           BIGSERIAL PRIMARY KEY,
    name         TEXT   NOT NULL,
    hash         TEXT   NOT NULL UNIQUE,
    role         TEXT   NOT NULL,
    environments TEXT   NOT NULL DEFAULT '[]',
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT
);

CREATE TABLE audit (
    id          BIGSERIAL PRIMARY KEY,
    at          BIGINT NOT NULL,
    actor       TEXT   NOT NULL,
    action      TEXT   NOT NULL,
    environment TEXT,
    target      TEXT,
    before      TEXT,
    after       TEXT,
    request_id  TEXT
);

CREATE INDEX audit_by_environment ON audit (environment, id);
CREATE INDEX audit_by_actor ON audit (actor, id);
CREATE INDEX audit_by_time ON audit (at);
