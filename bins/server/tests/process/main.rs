//! The server binary run as a process: one test binary, one module per area.

mod binary;
mod faults;
mod listeners;
mod provisioning;
mod retraced_client;
mod traces;
