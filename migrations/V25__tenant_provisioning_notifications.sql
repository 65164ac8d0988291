-- V25: a tenant's views show where each product's provisioning stands, so a change of a
-- run's state, step, attempts or error is announced on `tenants_changed` (V8's payload: the
-- tenant, no slugs) and every replica's tenant cache forgets the tenant. Lease renewals and
-- other bookkeeping change none of these columns and stay silent.

CREATE TRIGGER tenant_provisioning_notify_insert_delete
    AFTER INSERT OR DELETE ON tenant_provisioning
    FOR EACH ROW EXECUTE FUNCTION notify_tenant_change();

CREATE TRIGGER tenant_provisioning_notify_progress
    AFTER UPDATE ON tenant_provisioning
    FOR EACH ROW
    WHEN (OLD.goal IS DISTINCT FROM NEW.goal
       OR OLD.state IS DISTINCT FROM NEW.state
       OR OLD.step IS DISTINCT FROM NEW.step
       OR OLD.attempts IS DISTINCT FROM NEW.attempts
       OR OLD.last_error IS DISTINCT FROM NEW.last_error)
    EXECUTE FUNCTION notify_tenant_change();
