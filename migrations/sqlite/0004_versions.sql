-- Each object version is stored once. Before, a version was written twice: as its object's
-- row in `objects` (with a unique index on kind, namespace and name, into which every new
-- object inserted at a random place, dirtying a page of its own) and as a row of `changes`.
-- Now one table holds every version anybody needs: each object's current version, and every
-- version in the change log (the watch history). Writes only append, in resourceVersion
-- order. The store tells the database which versions nobody needs any more when it compacts
-- (replaced or deleted ones that left the log), and start-up replays the rows in order.
CREATE TABLE versions (
    rv         INTEGER PRIMARY KEY,
    kind       TEXT    NOT NULL,
    namespace  TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    type       TEXT    NOT NULL CHECK (type IN ('ADDED', 'MODIFIED', 'DELETED')),
    data       BLOB    NOT NULL,
    created_at INTEGER NOT NULL
);
-- The change log starts after `compacted_rv`: a row at or below it is there only as its
-- object's current version.
CREATE TABLE compaction (
    id           INTEGER PRIMARY KEY CHECK (id = 0),
    compacted_rv INTEGER NOT NULL
);
INSERT INTO versions (rv, kind, namespace, name, type, data, created_at)
    SELECT rv, kind, namespace, name, type, data, created_at FROM changes;
-- Current versions whose change rows were compacted are older than every change row.
INSERT INTO versions (rv, kind, namespace, name, type, data, created_at)
    SELECT o.rv, o.kind, o.namespace, o.name, 'ADDED', o.data, 0 FROM objects o
    WHERE NOT EXISTS (SELECT 1 FROM changes c WHERE c.rv = o.rv);
INSERT INTO compaction (id, compacted_rv)
    VALUES (0, COALESCE((SELECT MIN(rv) - 1 FROM changes), (SELECT MAX(rv) FROM objects), 0));
DROP TABLE changes;
DROP TABLE objects;
