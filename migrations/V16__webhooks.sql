-- V16: webhook endpoints, one delivery per (event, endpoint), and the history of attempts.
--
-- The delivery rows are the queue: the runner leases due rows (leased_until) so that several
-- replicas never send the same delivery at once, and a replica that dies mid-delivery leaves
-- a lease that simply runs out. The fan-out position is one row, locked by the replica that
-- fans out.

CREATE TABLE webhook_endpoints (
    id                          uuid        NOT NULL,
    -- NULL: a platform endpoint, sent the events of every tenant and platform-level events.
    tenant_id                   uuid,
    url                         text        NOT NULL,
    -- NULL: every event type; otherwise filters such as 'tenant.*' or 'api_key.revoked'.
    event_types                 text[],
    description                 text        NOT NULL DEFAULT '',
    enabled                     boolean     NOT NULL DEFAULT true,
    disabled_reason             text,
    -- Secrets are sealed by the key ring, bound to the endpoint's id.
    secret_sealed               bytea       NOT NULL,
    previous_secret_sealed      bytea,
    previous_secret_expires_at  timestamptz,
    -- Set by the first failure after a success, cleared by a success.
    failing_since               timestamptz,
    version                     bigint      NOT NULL DEFAULT 1,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_endpoints_pkey PRIMARY KEY (id),
    CONSTRAINT webhook_endpoints_tenant_fkey FOREIGN KEY (tenant_id)
        REFERENCES tenants (id) ON DELETE CASCADE,
    CONSTRAINT webhook_endpoints_url_length CHECK (char_length(url) BETWEEN 8 AND 2048),
    CONSTRAINT webhook_endpoints_previous_secret_complete
        CHECK ((previous_secret_sealed IS NULL) = (previous_secret_expires_at IS NULL)),
    CONSTRAINT webhook_endpoints_disabled_has_reason
        CHECK (enabled OR disabled_reason IS NOT NULL)
);
CREATE INDEX webhook_endpoints_tenant_idx ON webhook_endpoints (tenant_id, created_at, id);

CREATE TABLE webhook_deliveries (
    id               uuid        NOT NULL,
    endpoint_id      uuid        NOT NULL,
    -- NULL for a test message, which is no event of the feed.
    event_id         uuid,
    -- The webhook-id header: the event's id, so a receiver drops duplicates by it.
    message_id       text        NOT NULL,
    event_type       text        NOT NULL,
    -- The body sent, {type, timestamp, data}, fixed when the delivery is made.
    payload          jsonb       NOT NULL,
    status           text        NOT NULL DEFAULT 'pending',
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz,
    leased_until     timestamptz,
    last_attempt_at  timestamptz,
    last_status_code smallint,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_deliveries_pkey PRIMARY KEY (id),
    CONSTRAINT webhook_deliveries_endpoint_fkey FOREIGN KEY (endpoint_id)
        REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    CONSTRAINT webhook_deliveries_event_fkey FOREIGN KEY (event_id)
        REFERENCES events (id) ON DELETE CASCADE,
    CONSTRAINT webhook_deliveries_once_per_event UNIQUE (endpoint_id, event_id),
    CONSTRAINT webhook_deliveries_status_known
        CHECK (status IN ('pending', 'delivered', 'failed', 'cancelled')),
    CONSTRAINT webhook_deliveries_pending_is_scheduled
        CHECK ((status = 'pending') = (next_attempt_at IS NOT NULL)),
    CONSTRAINT webhook_deliveries_attempts_non_negative CHECK (attempts >= 0)
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id, created_at DESC, id);

CREATE TABLE webhook_attempts (
    id               bigint      GENERATED ALWAYS AS IDENTITY,
    delivery_id      uuid        NOT NULL,
    attempted_at     timestamptz NOT NULL,
    duration_ms      integer     NOT NULL,
    outcome          text        NOT NULL,
    status_code      smallint,
    -- Why no answer came (timeout, no connection), in words fit for the endpoint's owner.
    error            text,
    -- The first KiB of the answer, as text.
    response_excerpt text,
    CONSTRAINT webhook_attempts_pkey PRIMARY KEY (id),
    CONSTRAINT webhook_attempts_delivery_fkey FOREIGN KEY (delivery_id)
        REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    CONSTRAINT webhook_attempts_outcome_known CHECK (outcome IN ('delivered', 'gone', 'failed')),
    CONSTRAINT webhook_attempts_excerpt_bounded CHECK (octet_length(response_excerpt) <= 4096)
);
CREATE INDEX webhook_attempts_delivery_idx ON webhook_attempts (delivery_id, id);

-- Where fan-out stands in the events feed: one row, locked by the replica fanning out.
CREATE TABLE webhook_fanout_position (
    singleton  boolean     NOT NULL DEFAULT true,
    position   text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_fanout_position_pkey PRIMARY KEY (singleton),
    CONSTRAINT webhook_fanout_position_one_row CHECK (singleton)
);
INSERT INTO webhook_fanout_position (singleton) VALUES (true);

-- A delivery made due wakes the runners of every replica.
CREATE FUNCTION notify_webhook_delivery_due() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('webhook_deliveries_due', '');
    RETURN NULL;
END $$;

CREATE TRIGGER webhook_deliveries_notify_due
    AFTER INSERT OR UPDATE OF next_attempt_at ON webhook_deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION notify_webhook_delivery_due();
