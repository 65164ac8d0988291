-- V8: every committed change to a tenant (or to which products it has) is announced on
-- the `tenants_changed` channel, whatever code or person made it, so every replica's tenant
-- cache forgets the tenant. The payload names the tenant and its slugs before and after.

CREATE FUNCTION notify_tenant_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'tenants' THEN
        PERFORM pg_notify('tenants_changed', json_build_object(
            'id', COALESCE(NEW.id, OLD.id),
            'slugs', json_build_array(OLD.slug, NEW.slug))::text);
    ELSE
        PERFORM pg_notify('tenants_changed', json_build_object(
            'id', COALESCE(NEW.tenant_id, OLD.tenant_id),
            'slugs', json_build_array())::text);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER tenants_notify_change
    AFTER INSERT OR UPDATE OR DELETE ON tenants
    FOR EACH ROW EXECUTE FUNCTION notify_tenant_change();

CREATE TRIGGER tenant_products_notify_change
    AFTER INSERT OR UPDATE OR DELETE ON tenant_products
    FOR EACH ROW EXECUTE FUNCTION notify_tenant_change();
