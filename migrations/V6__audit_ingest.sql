-- V6: the rest of Retraced's event shape, and idempotent ingest per calling product.

ALTER TABLE audit_log
    ADD COLUMN component     text,
    ADD COLUMN version       text,
    ADD COLUMN actor_fields  jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN target_fields jsonb NOT NULL DEFAULT '{}';

-- An event a product sends twice (same external_id) is stored once.
CREATE UNIQUE INDEX audit_log_product_external_id_key ON audit_log (product, external_id)
    WHERE external_id IS NOT NULL;
