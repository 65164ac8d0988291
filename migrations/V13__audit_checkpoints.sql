-- V13: checkpoints of the audit hash chains. Every 1,000th event of a chain (positions
-- 1000, 2000, …) has its hash recorded here as well, in the transaction that appends it,
-- so a verification can start at the newest checkpoint instead of the chain's beginning,
-- and a chain rewritten from some earlier point on no longer matches its checkpoints.
-- Retention deletes the checkpoints of the events it deletes.

CREATE TABLE audit_checkpoints (
    chain_key   uuid        NOT NULL,
    chain_seq   bigint      NOT NULL,
    hash        bytea       NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT audit_checkpoints_pkey PRIMARY KEY (chain_key, chain_seq),
    CONSTRAINT audit_checkpoints_position CHECK (chain_seq > 0 AND chain_seq % 1000 = 0),
    CONSTRAINT audit_checkpoints_hash_length CHECK (length(hash) = 32)
);

-- Chains written before this migration get their checkpoints from the hashes stored now.
INSERT INTO audit_checkpoints (chain_key, chain_seq, hash)
SELECT l.chain_key, l.chain_seq, l.hash
FROM audit_log l
JOIN audit_chains c ON c.chain_key = l.chain_key
WHERE l.chain_seq % 1000 = 0 AND l.chain_seq > c.pruned_seq AND l.chain_seq <= c.last_seq;
