-- V24: provisioning (issue 15). Each (tenant, product) whose product declares a plan has a
-- row saying where its run stands; the background runner leases due rows, runs their steps
-- on the product's cluster, and records each step's progress here, so a crash resumes at the
-- step it was on. Default roles, backups taken before a drop, and long-running operations
-- (a purge, a fleet migration) with one item per tenant they touch.

CREATE TABLE tenant_provisioning (
    tenant_id         uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    product_id        text        NOT NULL REFERENCES products (id),
    -- provision: run the plan; deprovision: undo it; migrate: only the migrations step.
    goal              text        NOT NULL,
    state             text        NOT NULL,
    -- The plan as it was when the run was queued: a manifest published meanwhile does not
    -- change a run under way.
    plan              jsonb       NOT NULL,
    -- The index of the next step to run (of the plan, or of its teardown).
    step              integer     NOT NULL DEFAULT 0,
    -- Bumped each time a run is queued, so the runner of an older run stops at its next
    -- record instead of overwriting the new one.
    generation        bigint      NOT NULL DEFAULT 1,
    attempts          integer     NOT NULL DEFAULT 0,
    last_error        text,
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    lease_token       uuid,
    lease_expires_at  timestamptz,
    -- Waiting for the product to report back on its hook (202): until when.
    hook_waiting_until timestamptz,
    isolation         text,
    object_name       text,
    migration_version integer,
    seeded_at         timestamptz,
    roles_created_at  timestamptz,
    hook_answered_at  timestamptz,
    backup_id         uuid,
    operation_id      uuid,
    queued_at         timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tenant_provisioning_pkey PRIMARY KEY (tenant_id, product_id),
    CONSTRAINT tenant_provisioning_goal_known CHECK (goal IN ('provision', 'deprovision', 'migrate')),
    CONSTRAINT tenant_provisioning_state_known CHECK (state IN
        ('pending', 'running', 'ready', 'failed', 'deprovisioning', 'deprovisioned')),
    CONSTRAINT tenant_provisioning_step_not_negative CHECK (step >= 0),
    CONSTRAINT tenant_provisioning_isolation_known CHECK (isolation IN ('schema', 'database'))
);

-- The runner looks only at runs with work to do, by when they are due.
CREATE INDEX tenant_provisioning_due_idx ON tenant_provisioning (next_attempt_at)
    WHERE state IN ('pending', 'running', 'deprovisioning');
CREATE INDEX tenant_provisioning_product_idx ON tenant_provisioning (product_id, state);

CREATE TABLE tenant_roles (
    tenant_id   uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        text        NOT NULL,
    -- The product whose plan created it; null for a role made in the tenant.
    product_id  text        REFERENCES products (id),
    description text        NOT NULL DEFAULT '',
    permissions text[]      NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tenant_roles_pkey PRIMARY KEY (tenant_id, name)
);

-- A backup outlives its tenant (that is its point), so it names the tenant without a key.
CREATE TABLE tenant_backups (
    id          uuid        NOT NULL,
    tenant_id   uuid        NOT NULL,
    tenant_slug text        NOT NULL,
    product_id  text        NOT NULL,
    isolation   text        NOT NULL,
    object_name text        NOT NULL,
    location    text        NOT NULL,
    format      text        NOT NULL DEFAULT 'pg_dump-custom',
    size_bytes  bigint      NOT NULL,
    sha256      text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    deleted_at  timestamptz,
    CONSTRAINT tenant_backups_pkey PRIMARY KEY (id),
    CONSTRAINT tenant_backups_sha256_hex CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    CONSTRAINT tenant_backups_size_not_negative CHECK (size_bytes >= 0)
);

CREATE INDEX tenant_backups_tenant_idx ON tenant_backups (tenant_id, created_at);
CREATE INDEX tenant_backups_expiry_idx ON tenant_backups (expires_at) WHERE deleted_at IS NULL;

-- Long-running operations, in the manner of Google's: a purge, a fleet migration.
CREATE TABLE operations (
    id          uuid        NOT NULL,
    kind        text        NOT NULL,
    tenant_id   uuid,
    product_id  text,
    -- Who asked, for reading it back: the tenant's own principals see their tenant's.
    requested_by text       NOT NULL,
    state       text        NOT NULL DEFAULT 'running',
    result      jsonb,
    error       jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    done_at     timestamptz,
    CONSTRAINT operations_pkey PRIMARY KEY (id),
    CONSTRAINT operations_kind_known CHECK (kind IN ('tenant.purge', 'product.migrations')),
    CONSTRAINT operations_state_known CHECK (state IN ('running', 'succeeded', 'failed'))
);

-- One item per tenant an operation touches: its progress is counted from these.
CREATE TABLE operation_items (
    operation_id uuid        NOT NULL REFERENCES operations (id) ON DELETE CASCADE,
    tenant_id    uuid        NOT NULL,
    product_id   text        NOT NULL,
    state        text        NOT NULL DEFAULT 'running',
    error        text,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT operation_items_pkey PRIMARY KEY (operation_id, tenant_id, product_id),
    CONSTRAINT operation_items_state_known CHECK (state IN ('running', 'succeeded', 'failed'))
);

CREATE INDEX operations_tenant_idx ON operations (tenant_id) WHERE tenant_id IS NOT NULL;
