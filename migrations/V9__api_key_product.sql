-- V9: the product an API key belongs to (say `billing`), recorded as the `product` of the
-- audit events the key ingests. Optional: a key without one is recorded by its own id.

ALTER TABLE api_keys
    ADD COLUMN product text,
    ADD CONSTRAINT api_keys_product_format
        CHECK (product IS NULL OR product ~ '^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$');
