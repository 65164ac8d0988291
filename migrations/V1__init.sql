-- V1: the seed schema of tenant-registry, end to end.
-- Constraint names are part of the API: the service maps each one to its 409 or 422.

CREATE TYPE tenant_status AS ENUM ('demo', 'trial', 'active', 'frozen', 'archived');
CREATE TYPE tenant_kind AS ENUM ('customer', 'demo');
CREATE TYPE idp_kind AS ENUM ('oidc', 'saml');
CREATE TYPE tenant_project_status AS ENUM ('active', 'archived');

-- Keeps updated_at truthful whatever code path writes the row.
CREATE FUNCTION set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE TABLE tenants (
    id                 uuid          NOT NULL DEFAULT gen_random_uuid(),
    slug               text          NOT NULL,
    name               text          NOT NULL,
    status             tenant_status NOT NULL DEFAULT 'trial',
    kind               tenant_kind   NOT NULL DEFAULT 'customer',
    plan               text          NOT NULL,
    erp_id             text,
    stripe_id          text,
    trial_ends_at      timestamptz,
    contract_starts_on date,
    contract_ends_on   date,
    sales_owner        text,
    created_at         timestamptz   NOT NULL DEFAULT now(),
    updated_at         timestamptz   NOT NULL DEFAULT now(),
    CONSTRAINT tenants_pkey PRIMARY KEY (id),
    CONSTRAINT tenants_slug_key UNIQUE (slug),
    CONSTRAINT tenants_erp_id_key UNIQUE (erp_id),
    CONSTRAINT tenants_stripe_id_key UNIQUE (stripe_id),
    CONSTRAINT tenants_slug_format CHECK (slug ~ '^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$'),
    CONSTRAINT tenants_name_not_blank CHECK (btrim(name) <> ''),
    CONSTRAINT tenants_plan_not_blank CHECK (btrim(plan) <> ''),
    CONSTRAINT tenants_contract_dates_ordered
        CHECK (contract_ends_on IS NULL OR contract_starts_on IS NULL
               OR contract_ends_on >= contract_starts_on)
);
CREATE INDEX tenants_status_idx ON tenants (status);
CREATE INDEX tenants_created_at_idx ON tenants (created_at, id);
CREATE TRIGGER tenants_set_updated_at BEFORE UPDATE ON tenants
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE tenant_projects (
    id         uuid                  NOT NULL DEFAULT gen_random_uuid(),
    tenant_id  uuid                  NOT NULL,
    slug       text                  NOT NULL,
    name       text                  NOT NULL,
    status     tenant_project_status NOT NULL DEFAULT 'active',
    created_at timestamptz           NOT NULL DEFAULT now(),
    updated_at timestamptz           NOT NULL DEFAULT now(),
    CONSTRAINT tenant_projects_pkey PRIMARY KEY (id),
    CONSTRAINT tenant_projects_tenant_id_fkey FOREIGN KEY (tenant_id)
        REFERENCES tenants (id) ON DELETE CASCADE,
    CONSTRAINT tenant_projects_tenant_slug_key UNIQUE (tenant_id, slug),
    CONSTRAINT tenant_projects_slug_format CHECK (slug ~ '^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$'),
    CONSTRAINT tenant_projects_name_not_blank CHECK (btrim(name) <> '')
);
CREATE TRIGGER tenant_projects_set_updated_at BEFORE UPDATE ON tenant_projects
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE tenant_products (
    tenant_id  uuid        NOT NULL,
    product    text        NOT NULL,
    enabled    boolean     NOT NULL DEFAULT true,
    config     jsonb       NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tenant_products_pkey PRIMARY KEY (tenant_id, product),
    CONSTRAINT tenant_products_tenant_id_fkey FOREIGN KEY (tenant_id)
        REFERENCES tenants (id) ON DELETE CASCADE,
    CONSTRAINT tenant_products_product_not_blank CHECK (btrim(product) <> ''),
    CONSTRAINT tenant_products_config_is_object CHECK (jsonb_typeof(config) = 'object')
);
CREATE INDEX tenant_products_product_idx ON tenant_products (product);
CREATE TRIGGER tenant_products_set_updated_at BEFORE UPDATE ON tenant_products
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE tenant_idp_config (
    id                   uuid        NOT NULL DEFAULT gen_random_uuid(),
    tenant_id            uuid        NOT NULL,
    kind                 idp_kind    NOT NULL,
    name                 text        NOT NULL,
    enabled              boolean     NOT NULL DEFAULT true,
    oidc_issuer          text,
    oidc_client_id       text,
    oidc_client_secret   bytea,
    saml_metadata_xml    text,
    saml_metadata_url    text,
    saml_entity_id       text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tenant_idp_config_pkey PRIMARY KEY (id),
    CONSTRAINT tenant_idp_config_tenant_id_fkey FOREIGN KEY (tenant_id)
        REFERENCES tenants (id) ON DELETE CASCADE,
    CONSTRAINT tenant_idp_config_name_not_blank CHECK (btrim(name) <> ''),
    -- An OIDC row carries issuer and client id; a SAML row carries metadata (inline or by URL)
    -- and its entity id. Columns of the other kind stay empty so a row has one meaning.
    CONSTRAINT tenant_idp_config_columns_match_kind CHECK (
        CASE kind
            WHEN 'oidc' THEN oidc_issuer IS NOT NULL AND oidc_client_id IS NOT NULL
                AND saml_metadata_xml IS NULL AND saml_metadata_url IS NULL
                AND saml_entity_id IS NULL
            WHEN 'saml' THEN (saml_metadata_xml IS NOT NULL OR saml_metadata_url IS NOT NULL)
                AND saml_entity_id IS NOT NULL
                AND oidc_issuer IS NULL AND oidc_client_id IS NULL
                AND oidc_client_secret IS NULL
        END
    )
);
CREATE INDEX tenant_idp_config_tenant_id_idx ON tenant_idp_config (tenant_id);
CREATE TRIGGER tenant_idp_config_set_updated_at BEFORE UPDATE ON tenant_idp_config
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE api_keys (
    id           uuid        NOT NULL DEFAULT gen_random_uuid(),
    tenant_id    uuid,
    name         text        NOT NULL,
    prefix       text        NOT NULL,
    hash         text        NOT NULL,
    scopes       text[]      NOT NULL DEFAULT '{}',
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT api_keys_pkey PRIMARY KEY (id),
    CONSTRAINT api_keys_tenant_id_fkey FOREIGN KEY (tenant_id)
        REFERENCES tenants (id) ON DELETE CASCADE,
    CONSTRAINT api_keys_prefix_key UNIQUE (prefix),
    CONSTRAINT api_keys_name_not_blank CHECK (btrim(name) <> ''),
    CONSTRAINT api_keys_hash_is_argon2id CHECK (hash LIKE '$argon2id$%')
);
CREATE INDEX api_keys_tenant_id_idx ON api_keys (tenant_id);
CREATE TRIGGER api_keys_set_updated_at BEFORE UPDATE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Retraced-shaped events. History outlives its tenant: the FK sets tenant_id NULL on delete
-- and group_id / group_name keep who it was about as text.
CREATE TABLE audit_log (
    id           bigint      GENERATED ALWAYS AS IDENTITY,
    tenant_id    uuid,
    group_id     text,
    group_name   text,
    product      text,
    action       text        NOT NULL,
    crud         text        NOT NULL,
    actor_id     text,
    actor_name   text,
    actor_href   text,
    target_id    text,
    target_name  text,
    target_type  text,
    target_href  text,
    source_ip    inet,
    description  text,
    is_failure   boolean     NOT NULL DEFAULT false,
    is_anonymous boolean     NOT NULL DEFAULT false,
    fields       jsonb       NOT NULL DEFAULT '{}',
    external_id  text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    received_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT audit_log_pkey PRIMARY KEY (id),
    CONSTRAINT audit_log_tenant_id_fkey FOREIGN KEY (tenant_id)
        REFERENCES tenants (id) ON DELETE SET NULL,
    CONSTRAINT audit_log_action_not_blank CHECK (btrim(action) <> ''),
    CONSTRAINT audit_log_crud_valid CHECK (crud IN ('c', 'r', 'u', 'd')),
    CONSTRAINT audit_log_fields_is_object CHECK (jsonb_typeof(fields) = 'object')
);
CREATE INDEX audit_log_tenant_created_idx ON audit_log (tenant_id, created_at DESC, id DESC);
CREATE INDEX audit_log_product_created_idx ON audit_log (product, created_at DESC, id DESC);
CREATE INDEX audit_log_action_created_idx ON audit_log (action, created_at DESC, id DESC);
CREATE INDEX audit_log_actor_created_idx ON audit_log (actor_id, created_at DESC, id DESC);
CREATE INDEX audit_log_target_created_idx ON audit_log (target_id, created_at DESC, id DESC);
