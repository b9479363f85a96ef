-- The store on PostgreSQL, shared by every replica. The same tables as on SQLite; see
-- src/store/backend.rs for the contract (writers serialize on an advisory lock, so
-- resourceVersions are allocated in commit order).

-- Every live object, as the JSON the API serves.
CREATE TABLE objects (
    kind      TEXT   NOT NULL,
    namespace TEXT   NOT NULL,
    name      TEXT   NOT NULL,
    rv        BIGINT NOT NULL,
    data      BYTEA  NOT NULL,
    PRIMARY KEY (kind, namespace, name)
);

-- The change log, in resourceVersion order: watch resume, and how replicas follow each other.
-- Compacted to a bounded window; the newest row is never compacted.
CREATE TABLE changes (
    rv         BIGINT PRIMARY KEY,
    kind       TEXT   NOT NULL,
    namespace  TEXT   NOT NULL,
    name       TEXT   NOT NULL,
    type       TEXT   NOT NULL CHECK (type IN ('ADDED', 'MODIFIED', 'DELETED')),
    data       BYTEA  NOT NULL,
    created_at BIGINT NOT NULL
);

-- API bearer tokens (hashed secrets), shared so that every token works on every replica.
CREATE TABLE tokens (
    id          TEXT   PRIMARY KEY,
    name        TEXT   NOT NULL,
    role        TEXT   NOT NULL,
    secret_hash BYTEA  NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT,
    revoked_at  BIGINT
);

-- Secrets every replica shares: the self-signed CA (certificate and key), made by the first
-- replica that needs it.
CREATE TABLE secrets (
    name  TEXT  PRIMARY KEY,
    value BYTEA NOT NULL
);
