-- Objects move to a rowid table. SQLite keeps a WITHOUT ROWID table's rows inside its key's
-- b-tree, which suits rows of a few dozen bytes, not JSON documents of a kilobyte: every
-- insert in the middle of the key order then splits pages full of documents. Here the key
-- index holds keys only and the documents are appended.
CREATE TABLE objects_by_rowid (
    id        INTEGER PRIMARY KEY,
    kind      TEXT    NOT NULL,
    namespace TEXT    NOT NULL,
    name      TEXT    NOT NULL,
    rv        INTEGER NOT NULL,
    data      BLOB    NOT NULL,
    UNIQUE (kind, namespace, name)
);
INSERT INTO objects_by_rowid (kind, namespace, name, rv, data)
    SELECT kind, namespace, name, rv, data FROM objects;
DROP TABLE objects;
ALTER TABLE objects_by_rowid RENAME TO objects;
