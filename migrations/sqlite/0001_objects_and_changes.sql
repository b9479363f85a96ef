-- Every live object, as the JSON the API serves, keyed by kind, namespace ('' when
-- cluster-scoped) and name. `rv` is the resourceVersion of the write that produced `data`.
CREATE TABLE objects (
    kind      TEXT    NOT NULL,
    namespace TEXT    NOT NULL,
    name      TEXT    NOT NULL,
    rv        INTEGER NOT NULL,
    data      BLOB    NOT NULL,
    PRIMARY KEY (kind, namespace, name)
) WITHOUT ROWID;

-- The change log: one row per write, in resourceVersion order, for watch resume across
-- restarts. Compacted to a bounded window; the newest row is never compacted, so the highest
-- resourceVersion ever handed out survives restarts.
CREATE TABLE changes (
    rv         INTEGER PRIMARY KEY,
    kind       TEXT    NOT NULL,
    namespace  TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    type       TEXT    NOT NULL CHECK (type IN ('ADDED', 'MODIFIED', 'DELETED')),
    data       BLOB    NOT NULL,
    created_at INTEGER NOT NULL
);
