-- V22: trial expiry and warnings (issue 15). A scheduled task freezes a trial tenant whose
-- trial_ends_at has passed (a recorded transition) and, TRIAL_WARNING_DAYS before, announces
-- tenant.trial_ending once per trial end: this table remembers which end each tenant was
-- warned of, so extending a trial warns again and several replicas warn once (the insert
-- is the guard: only the replica whose upsert changed the row emits the event).

CREATE TABLE tenant_trial_warnings (
    tenant_id     uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    trial_ends_at timestamptz NOT NULL,
    warned_at     timestamptz NOT NULL,
    CONSTRAINT tenant_trial_warnings_pkey PRIMARY KEY (tenant_id)
);

-- The task looks only at trials, by when they end.
CREATE INDEX tenants_trial_ends_at_idx ON tenants (trial_ends_at) WHERE status = 'trial';
