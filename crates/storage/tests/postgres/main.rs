//! The storage crate against a real PostgreSQL: one test binary, one module per area.

mod cancellation;
mod events;
mod idempotency;
mod migrations;
mod retry;
mod schema;
mod tenant_lookups;
mod tls;
