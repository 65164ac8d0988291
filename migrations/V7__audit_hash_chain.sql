-- V7: tamper evidence. Each tenant's trail is a hash chain (the nil uuid chains events that
-- belong to no tenant). The chain key is the tenant at write time, kept apart from
-- tenant_id so deleting a tenant (which nulls tenant_id) does not break its history.

ALTER TABLE audit_log
    ADD COLUMN chain_key uuid,
    ADD COLUMN chain_seq bigint,
    ADD COLUMN prev_hash bytea,
    ADD COLUMN hash      bytea;

-- Rows written before V7 carry no chain (all four columns null) and are not verified.
ALTER TABLE audit_log ADD CONSTRAINT audit_log_chain_complete CHECK (
    (chain_key IS NULL AND chain_seq IS NULL AND prev_hash IS NULL AND hash IS NULL)
    OR (chain_key IS NOT NULL AND chain_seq > 0 AND length(prev_hash) = 32 AND length(hash) = 32)
);

CREATE UNIQUE INDEX audit_log_chain_seq_key ON audit_log (chain_key, chain_seq);
-- Retention deletes by age of arrival.
CREATE INDEX audit_log_received_idx ON audit_log (received_at);

-- The head of every chain. Appending locks the head row, so events of one tenant are
-- chained in commit order while other tenants' appends proceed in parallel. Retention
-- moves the anchor (pruned_seq, pruned_hash) forward as it deletes a chain's oldest events.
CREATE TABLE audit_chains (
    chain_key   uuid   NOT NULL,
    last_seq    bigint NOT NULL DEFAULT 0,
    last_hash   bytea  NOT NULL DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000',
    pruned_seq  bigint NOT NULL DEFAULT 0,
    pruned_hash bytea  NOT NULL DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000',
    CONSTRAINT audit_chains_pkey PRIMARY KEY (chain_key),
    CONSTRAINT audit_chains_seq_order CHECK (0 <= pruned_seq AND pruned_seq <= last_seq)
);
