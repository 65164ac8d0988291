//! Webhooks of tenant-registry, per the Standard Webhooks specification: signing secrets,
//! signatures, one delivery attempt, and the durable runner that fans events out to
//! endpoints and delivers them at least once on the retry schedule of `domain::webhook`.

pub mod announce;
pub mod clock;
pub mod deliver;
pub mod fanout;
pub mod runner;
pub mod secret;
pub mod send;
pub mod sign;

pub use clock::{Clock, ManualClock, SystemClock};
pub use runner::{Observer, Pass, Runner, RunnerConfig, RunnerError};
