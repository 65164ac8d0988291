-- V11: every committed change that can end an API key's validity is announced on the
-- `api_keys_changed` channel, whatever code or person made it, so every replica's
-- verification cache forgets exactly what changed.
--   {"key_id": …}     a key changed in anything but its name and use tracking, or was
--                      deleted (a purge deletes its tenant's keys by cascade);
--   {"tenant_id": …}  a tenant's status changed (an archived tenant's keys authenticate
--                      nothing) or the tenant was deleted.

CREATE FUNCTION notify_api_key_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND to_jsonb(OLD) - ARRAY['name', 'last_used_at', 'updated_at']
           = to_jsonb(NEW) - ARRAY['name', 'last_used_at', 'updated_at'] THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify('api_keys_changed', json_build_object('key_id', OLD.id)::text);
    RETURN NULL;
END $$;

CREATE TRIGGER api_keys_notify_change
    AFTER UPDATE OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION notify_api_key_change();

CREATE FUNCTION notify_tenant_keys_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.status IS NOT DISTINCT FROM NEW.status THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify('api_keys_changed', json_build_object('tenant_id', OLD.id)::text);
    RETURN NULL;
END $$;

CREATE TRIGGER tenants_notify_key_change
    AFTER UPDATE OF status OR DELETE ON tenants
    FOR EACH ROW EXECUTE FUNCTION notify_tenant_keys_change();
