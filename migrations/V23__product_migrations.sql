-- V23: products' tenant-schema migrations (issue 15), registered with
-- PUT /v1/products/{product}/migrations: append-only (a registered version never changes
-- and is never removed), each with the SHA-256 of its SQL so a changed copy is caught.
-- Provisioning applies them in version order inside each tenant's schema.

CREATE TABLE product_migrations (
    product_id    text        NOT NULL REFERENCES products (id) ON DELETE CASCADE,
    version       integer     NOT NULL,
    name          text        NOT NULL,
    sql           text        NOT NULL,
    checksum      text        NOT NULL,
    registered_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT product_migrations_pkey PRIMARY KEY (product_id, version),
    CONSTRAINT product_migrations_version_positive CHECK (version > 0),
    CONSTRAINT product_migrations_checksum_is_sha256 CHECK (checksum ~ '^[0-9a-f]{64}$')
);
