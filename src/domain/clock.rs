//! The one clock: this replica's reading of the time, and how times are written at the edges.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use super::Millis;

/// This replica's reading of the time, shifted by an offset that tests move forward. Deadlines,
/// leases and decision times do not come from here directly but from the service's `Hoop::now`, which
/// asks the store: on Postgres that is the database's clock, so replicas with skewed clocks still agree.
#[derive(Clone)]
pub struct Clock {
    offset: Arc<AtomicI64>,
    /// How far this process's own clock is off; only its local readings are (tests use it to
    /// play a replica whose clock drifted).
    skew: Millis,
}

impl Clock {
    pub fn system() -> Clock {
        Clock::shifted(Arc::new(AtomicI64::new(0)))
    }

    /// The real clock plus `offset` milliseconds; tests advance the offset instead of sleeping.
    pub fn shifted(offset: Arc<AtomicI64>) -> Clock {
        Clock { offset, skew: 0 }
    }

    /// This clock on a machine whose own clock is `skew` ms off.
    pub fn skewed(self, skew: Millis) -> Clock {
        Clock { skew, ..self }
    }

    /// This process's own reading (system time plus the offset).
    pub fn now(&self) -> Millis {
        chrono::Utc::now().timestamp_millis() + self.offset() + self.skew
    }

    pub fn offset(&self) -> Millis {
        self.offset.load(Ordering::SeqCst)
    }
}

/// A time as RFC 3339 with milliseconds, in UTC: how the API, the audit trail and webhooks write
/// it.
pub fn rfc3339(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
