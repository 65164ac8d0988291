-- V15: leftovers of the security review.
--
-- 1. Every change to a former slug is announced on `tenants_changed`, like a change to the
--    tenant itself, so that releasing one (a DELETE here and nowhere else) makes every
--    replica stop leading the slug to its old tenant at once, not when its cache entry ages.
--    The payload has V8's shape: the tenant and the slugs touched.

CREATE FUNCTION notify_tenant_slug_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tenants_changed', json_build_object(
        'id', COALESCE(NEW.tenant_id, OLD.tenant_id),
        'slugs', json_build_array(OLD.slug, NEW.slug))::text);
    RETURN NULL;
END $$;

CREATE TRIGGER tenant_slug_history_notify_change
    AFTER INSERT OR UPDATE OR DELETE ON tenant_slug_history
    FOR EACH ROW EXECUTE FUNCTION notify_tenant_slug_change();

-- 2. A key's product names a product of the catalog, so that the events it ingests cannot
--    claim to come from a product that does not exist (the catalog refuses the registry's
--    own name). NOT VALID: keys made before V15 keep the product they were given (the
--    service refuses ingest under the registry's own name whatever a key says); every key
--    written from now on is checked. Products are never deleted.

ALTER TABLE api_keys
    ADD CONSTRAINT api_keys_product_fkey FOREIGN KEY (product)
        REFERENCES products (id) NOT VALID;

-- 3. idempotency_keys was retired in V10 (emptied, kept for replicas of the release before
--    it during a rolling deploy); nothing reads or writes it any more.

DROP TABLE idempotency_keys;
