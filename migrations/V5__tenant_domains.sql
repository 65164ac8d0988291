-- V5: email domains a tenant claims, proven by a DNS TXT record, for home-realm discovery.

CREATE TABLE tenant_domains (
    id                 uuid        NOT NULL DEFAULT gen_random_uuid(),
    tenant_id          uuid        NOT NULL,
    domain             text        NOT NULL,
    verification_token text        NOT NULL,
    verified_at        timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tenant_domains_pkey PRIMARY KEY (id),
    CONSTRAINT tenant_domains_tenant_id_fkey FOREIGN KEY (tenant_id)
        REFERENCES tenants (id) ON DELETE CASCADE,
    CONSTRAINT tenant_domains_tenant_domain_key UNIQUE (tenant_id, domain),
    CONSTRAINT tenant_domains_domain_format
        CHECK (domain ~ '^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]$')
);
-- A domain is verified for at most one tenant.
CREATE UNIQUE INDEX tenant_domains_verified_domain_key ON tenant_domains (domain)
    WHERE verified_at IS NOT NULL;
CREATE TRIGGER tenant_domains_set_updated_at BEFORE UPDATE ON tenant_domains
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
