//! The REST API through its router, against a real PostgreSQL: one test binary, one module per
//! area, so the stack is linked once rather than once per file (each binary was ~90 MB).

mod api_keys;
mod audit;
mod audit_bounds;
mod audit_export_failures;
mod audit_integrity;
mod authorization_matrix;
mod bounded_work;
mod credential_grants;
mod database_outage;
mod domains;
mod events;
mod former_slugs;
mod health;
mod idempotency;
mod idempotency_failures;
mod idps;
mod input_hygiene;
mod key_revocation_rules;
mod key_rotation_grace;
mod lifecycle_events;
mod oidc;
mod oidc_key_rotation;
mod openapi_conformance;
mod problems_and_probes;
mod product_migrations;
mod products;
mod projects;
mod provisioning;
mod revocation;
mod tenant_cache;
mod tenant_privileges;
mod tenants;
mod tls;
mod webhook_delivery;
mod webhooks_api;
