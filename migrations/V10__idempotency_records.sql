-- V10: idempotency records that belong to a principal AND to a method and path, with the
-- stored response body sealed by the key ring (AES-256-GCM, the record's identity as
-- associated data), swept 24 h after they were made.
--
-- They replace idempotency_keys, which was keyed by (principal, key) alone and held response
-- bodies in clear (a new API key's secret among them). That table is emptied here and stays
-- only for replicas of the previous release during a rolling deploy; a later migration
-- drops it.

CREATE TABLE idempotency_records (
    principal    text        NOT NULL,
    method       text        NOT NULL,
    path         text        NOT NULL,
    key          text        NOT NULL,
    request_hash text        NOT NULL,
    status       smallint,
    headers      jsonb       NOT NULL DEFAULT '{}',
    sealed_body  bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_records_pkey PRIMARY KEY (principal, method, path, key),
    -- kind:tenant:holder, never a shared name such as 'anonymous'.
    CONSTRAINT idempotency_records_principal_format
        CHECK (principal ~ '^(platform_key|tenant_key|oidc_user):[^:]+:.+$'),
    CONSTRAINT idempotency_records_response_complete
        CHECK ((status IS NULL) = (sealed_body IS NULL))
);
CREATE INDEX idempotency_records_created_at_idx ON idempotency_records (created_at);

TRUNCATE idempotency_keys;
