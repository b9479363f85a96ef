-- Synchronous revocation across replicas: every change to `tokens` bumps one epoch in the
-- same transaction, and each replica records the epoch its in-memory table has reached. A
-- revocation answers once every live replica has reached its epoch, so the very next request
-- to any replica is refused.
CREATE TABLE token_epoch (
    id    INT    PRIMARY KEY CHECK (id = 1),
    epoch BIGINT NOT NULL
);
INSERT INTO token_epoch (id, epoch) VALUES (1, 0);

CREATE TABLE token_replicas (
    replica TEXT   PRIMARY KEY,
    epoch   BIGINT NOT NULL,
    seen_at BIGINT NOT NULL
);
