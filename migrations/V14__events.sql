-- V14: domain events (issue 13), written by each use case in the transaction of the change
-- they describe, so a rolled-back change leaves none and a committed one always has its own.
--
-- The feed's order is (xact_id, seq): the writing transaction's id, then the insertion
-- number. A reader only returns events whose xact_id is below the oldest transaction still
-- running (pg_snapshot_xmin of its snapshot), so every event it could ever see before a
-- position it has read is already committed and visible: nothing appears behind a cursor
-- later. An insertion number alone cannot promise that (a transaction that took a smaller
-- number may commit after a larger one was read). See docs/api.md, "Ordering guarantee".
--
-- tenant_id has no foreign key: a tenant's events, `tenant.purged` last, outlive it.

CREATE TABLE events (
    id          uuid        NOT NULL DEFAULT gen_random_uuid(),
    -- pg_current_xact_id() is the top-level transaction's id, epoch-extended (never wraps);
    -- never set by hand.
    xact_id     bigint      NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    seq         bigint      GENERATED ALWAYS AS IDENTITY,
    type        text        NOT NULL,
    tenant_id   uuid,
    data        jsonb       NOT NULL DEFAULT '{}',
    occurred_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_pkey PRIMARY KEY (id),
    CONSTRAINT events_position_key UNIQUE (xact_id, seq),
    CONSTRAINT events_type_format CHECK (type ~ '^[a-z][a-z_]*(\.[a-z][a-z_]*)+$'),
    CONSTRAINT events_data_is_object CHECK (jsonb_typeof(data) = 'object')
);

-- A tenant principal's feed, in feed order.
CREATE INDEX events_tenant_position_idx ON events (tenant_id, xact_id, seq);
-- Retention deletes the oldest first.
CREATE INDEX events_occurred_at_idx ON events (occurred_at);

-- Listeners (each replica's event streams) wake when events commit. One notification per
-- inserting statement with an empty payload, which PostgreSQL folds to one per transaction;
-- readers then read the feed, which is the only source of truth.
CREATE FUNCTION notify_events_appended() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tenant_registry_events', '');
    RETURN NULL;
END $$;

CREATE TRIGGER events_notify_appended
    AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION notify_events_appended();
