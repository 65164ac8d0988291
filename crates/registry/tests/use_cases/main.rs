//! The registry's use cases against a real PostgreSQL, one module per area (one test binary
//! for the crate, so a build links it once).

mod lifecycle_gate;
mod trials;
