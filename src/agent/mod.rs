//! The connection agent: claims approved jobs, checks the command's SHA-256, runs it against the
//! real resource and reports the result.

pub mod executor;
mod queue;
mod worker;

pub use queue::{HttpQueue, LocalQueue};
pub use worker::{Agent, Job, JobQueue, QueueError};
