-- V3: the products catalog (manifests) and per-tenant feature overrides.

CREATE TABLE products (
    id         text        NOT NULL,
    manifest   jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT products_pkey PRIMARY KEY (id),
    CONSTRAINT products_id_format CHECK (id ~ '^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$'),
    CONSTRAINT products_manifest_is_object CHECK (jsonb_typeof(manifest) = 'object')
);
CREATE TRIGGER products_set_updated_at BEFORE UPDATE ON products
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

ALTER TABLE tenant_products
    ADD COLUMN feature_overrides jsonb NOT NULL DEFAULT '{}',
    ADD CONSTRAINT tenant_products_feature_overrides_is_object
        CHECK (jsonb_typeof(feature_overrides) = 'object'),
    ADD CONSTRAINT tenant_products_product_fkey FOREIGN KEY (product)
        REFERENCES products (id);
