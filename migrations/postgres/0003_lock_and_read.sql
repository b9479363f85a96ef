-- A commit's first step in one round trip instead of two: take the write lock, then read what
-- other replicas committed after the caller's version. The read must see every commit made
-- before the lock was granted. One SQL statement doing both would read from the snapshot taken
-- when the statement started, before the wait. In a VOLATILE PL/pgSQL function each statement
-- takes a fresh snapshot (READ COMMITTED), so the read here starts after the lock is held.
CREATE FUNCTION stowage_lock_and_read(lock_key BIGINT, known BIGINT)
RETURNS TABLE (kind TEXT, namespace TEXT, name TEXT, rv BIGINT, type TEXT, data BYTEA, created_at BIGINT)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(lock_key);
    RETURN QUERY
        SELECT c.kind, c.namespace, c.name, c.rv, c.type, c.data, c.created_at
        FROM changes c WHERE c.rv > known ORDER BY c.rv;
END
$$;
