-- V2: what the tenants API needs: optimistic concurrency, slug history, status history,
-- idempotency records and the encrypted contact email.

-- The ETag of a tenant: bumped by every update, whatever code path writes the row.
ALTER TABLE tenants
    ADD COLUMN version bigint NOT NULL DEFAULT 1,
    -- AES-256-GCM ciphertext of the contact email (PII), in the key ring's envelope format.
    ADD COLUMN contact_email_encrypted bytea;

CREATE FUNCTION bump_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := OLD.version + 1;
    RETURN NEW;
END;
$$;

CREATE TRIGGER tenants_bump_version BEFORE UPDATE ON tenants
    FOR EACH ROW EXECUTE FUNCTION bump_version();

-- A slug a tenant used to have: still resolvable until another tenant takes it.
CREATE TABLE tenant_slug_history (
    slug       text        NOT NULL,
    tenant_id  uuid        NOT NULL,
    retired_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tenant_slug_history_pkey PRIMARY KEY (slug),
    CONSTRAINT tenant_slug_history_tenant_id_fkey FOREIGN KEY (tenant_id)
        REFERENCES tenants (id) ON DELETE CASCADE
);
CREATE INDEX tenant_slug_history_tenant_id_idx ON tenant_slug_history (tenant_id);

-- Every lifecycle move: who, when, why.
CREATE TABLE tenant_status_history (
    id          bigint        GENERATED ALWAYS AS IDENTITY,
    tenant_id   uuid          NOT NULL,
    from_status tenant_status NOT NULL,
    to_status   tenant_status NOT NULL,
    reason      text          NOT NULL,
    actor_id    text          NOT NULL,
    created_at  timestamptz   NOT NULL DEFAULT now(),
    CONSTRAINT tenant_status_history_pkey PRIMARY KEY (id),
    CONSTRAINT tenant_status_history_tenant_id_fkey FOREIGN KEY (tenant_id)
        REFERENCES tenants (id) ON DELETE CASCADE
);
CREATE INDEX tenant_status_history_tenant_idx ON tenant_status_history (tenant_id, created_at);

-- The first response to a POST with an Idempotency-Key, replayed for 24 h to the same
-- principal. status is NULL while the first request is still running.
CREATE TABLE idempotency_keys (
    principal    text        NOT NULL,
    key          text        NOT NULL,
    request_hash text        NOT NULL,
    status       smallint,
    headers      jsonb       NOT NULL DEFAULT '{}',
    body         bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (principal, key)
);
CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);
