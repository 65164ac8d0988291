-- V4: what the SSO configuration API keeps beyond V1's columns.

ALTER TABLE tenant_idp_config
    ADD COLUMN oidc_scopes                 text[] NOT NULL DEFAULT '{}',
    ADD COLUMN saml_sso_url                text,
    ADD COLUMN saml_certificate_expires_at timestamptz;
