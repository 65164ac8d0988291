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

-- 2. idempotency_keys was retired in V10 (emptied, kept for replicas of the release before
--    it during a rolling deploy); nothing reads or writes it any more.

DROP TABLE idempotency_keys;
