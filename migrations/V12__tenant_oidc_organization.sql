-- V12: the Keycloak organization whose users belong to a tenant. OIDC tokens map to a tenant
-- by an identifier that never moves to another tenant: the tenant's id, or the (issuer,
-- organization) pair set here by platform principals. Slugs move, so they no longer map.

ALTER TABLE tenants
    ADD COLUMN oidc_issuer text,
    ADD COLUMN oidc_organization text,
    ADD CONSTRAINT tenants_oidc_organization_key UNIQUE (oidc_issuer, oidc_organization),
    ADD CONSTRAINT tenants_oidc_organization_complete
        CHECK ((oidc_issuer IS NULL) = (oidc_organization IS NULL));
