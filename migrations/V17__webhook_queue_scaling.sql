-- Settling a delivery (delivered, failed, or a retry scheduled by the runner that made the
-- attempt) no longer wakes every runner: under load that was one notification per delivery,
-- each answered by a pass of every replica. A delivery is announced when it is queued, or when
-- it is queued again with a fresh schedule (a retry or replay request sets attempts to 0;
-- the runner's own settling always counts the attempt).
DROP TRIGGER webhook_deliveries_notify_due ON webhook_deliveries;

CREATE TRIGGER webhook_deliveries_notify_queued
    AFTER INSERT ON webhook_deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION notify_webhook_delivery_due();

CREATE TRIGGER webhook_deliveries_notify_requeued
    AFTER UPDATE OF next_attempt_at ON webhook_deliveries
    FOR EACH ROW
    WHEN (NEW.status = 'pending' AND NEW.attempts = 0)
    EXECUTE FUNCTION notify_webhook_delivery_due();

-- Leasing looks at each endpoint with pending deliveries (a loose scan of this index) and
-- takes at most its free share of the earliest due, so its cost follows the endpoints with
-- work, not the length of the backlog (a lease over 3,000 queued deliveries took 20 ms).
CREATE INDEX webhook_deliveries_pending_by_endpoint_idx
    ON webhook_deliveries (endpoint_id, next_attempt_at, id) WHERE status = 'pending';
-- Deliveries in flight, counted per endpoint against its concurrency bound.
CREATE INDEX webhook_deliveries_leased_idx
    ON webhook_deliveries (endpoint_id, leased_until)
    WHERE status = 'pending' AND leased_until IS NOT NULL;
