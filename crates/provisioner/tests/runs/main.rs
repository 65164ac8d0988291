//! The provisioning runner against a real PostgreSQL: the registry's database, and a
//! product cluster that is the same server (tenant schemas in the test's database, tenant
//! databases beside it).

mod bucket;
mod claims;
mod fleet;
mod leases;
mod plans;
mod probes;
mod reports;
mod support;
mod teardown;
