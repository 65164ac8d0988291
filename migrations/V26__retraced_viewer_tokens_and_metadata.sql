-- V26 (issue 17, the Retraced drop-in): viewer tokens for an embedded audit log viewer
-- (Retraced's `viewertoken`), and Retraced's event metadata (at the end).
-- A token is 256 random bits shown once; only its SHA-256 is stored. It reads one tenant's
-- audit log, of one product, until it expires (minutes), and dies with the key that issued
-- it or with its tenant.

CREATE TABLE audit_viewer_tokens (
    id          uuid        NOT NULL DEFAULT gen_random_uuid(),
    token_hash  bytea       NOT NULL,
    tenant_id   uuid        NOT NULL,
    product     text        NOT NULL,
    actor_id    text        NOT NULL,
    is_admin    boolean     NOT NULL,
    issued_by   uuid        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    CONSTRAINT audit_viewer_tokens_pkey PRIMARY KEY (id),
    CONSTRAINT audit_viewer_tokens_token_hash_key UNIQUE (token_hash),
    CONSTRAINT audit_viewer_tokens_tenant_id_fkey FOREIGN KEY (tenant_id)
        REFERENCES tenants (id) ON DELETE CASCADE,
    CONSTRAINT audit_viewer_tokens_issued_by_fkey FOREIGN KEY (issued_by)
        REFERENCES api_keys (id) ON DELETE CASCADE,
    CONSTRAINT audit_viewer_tokens_hash_is_sha256 CHECK (octet_length(token_hash) = 32),
    CONSTRAINT audit_viewer_tokens_expiry_after_creation CHECK (expires_at > created_at)
);
CREATE INDEX audit_viewer_tokens_expires_at_idx ON audit_viewer_tokens (expires_at);
CREATE INDEX audit_viewer_tokens_tenant_id_idx ON audit_viewer_tokens (tenant_id);
CREATE INDEX audit_viewer_tokens_issued_by_idx ON audit_viewer_tokens (issued_by);

-- Retraced's `metadata` (string → string, like `fields`), stored beside the fields. The
-- chain hash covers it only when it is not empty, so every hash written before stays valid.
ALTER TABLE audit_log
    ADD COLUMN metadata jsonb NOT NULL DEFAULT '{}',
    ADD CONSTRAINT audit_log_metadata_is_object CHECK (jsonb_typeof(metadata) = 'object');
