//! How many link codes a person, and an address, may get wrong: failed confirmations are counted
//! per user and per source address in windows of [`LINK_FAILURE_WINDOW`], and past [`LINK_FAILURES_PER_USER`] (or
//! [`LINK_FAILURES_PER_SOURCE`]) in a window every confirmation is refused until it ends, a right code
//! too — otherwise a guesser would learn from the answer which guess was right.
//!
//! The counts live in this replica's memory: with N replicas behind a balancer a guesser gets at
//! most N times the limit (docs/security.md says what that still leaves them).

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use crate::domain::{Clock, Millis};
use crate::expiring::ExpiringMap;

/// How long failures are counted together.
pub const LINK_FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Failed confirmations a user may make in a window.
pub const LINK_FAILURES_PER_USER: u32 = 10;
/// Failed confirmations from one address in a window, whoever makes them: more than one user's
/// worth, since colleagues may share an address (a NAT, a proxy).
pub const LINK_FAILURES_PER_SOURCE: u32 = 30;

/// Users are configured, so their entries stay few; addresses are not, and past this many live
/// ones the map starts afresh (see `ExpiringMap`) — which is why users are counted apart.
const USERS_KEPT: usize = 100_000;
const SOURCES_KEPT: usize = 100_000;

/// One window of failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    failures: u32,
    ends: Millis,
}

/// This replica's counts of failed confirmations.
pub(super) struct LinkAttempts {
    by_user: Mutex<ExpiringMap<String, Window, Millis>>,
    by_source: Mutex<ExpiringMap<IpAddr, Window, Millis>>,
}

/// A confirmation let through: it counts as failed unless [`LinkAttempts::succeeded`] gives it
/// back. Counting it before the code is looked up keeps guesses sent at once within the limit.
#[must_use]
pub(super) struct Attempt {
    user: (String, Window),
    source: Option<(IpAddr, Window)>,
}

impl LinkAttempts {
    /// Counts on `clock` (the service's clock, which tests move).
    pub(super) fn new(clock: &Clock) -> LinkAttempts {
        let (users, sources) = (clock.clone(), clock.clone());
        LinkAttempts {
            by_user: Mutex::new(ExpiringMap::with_clock(USERS_KEPT, move || users.now())),
            by_source: Mutex::new(ExpiringMap::with_clock(SOURCES_KEPT, move || sources.now())),
        }
    }

    /// Lets a confirmation by `user` from `source` through, counted as a failure until it
    /// succeeds; or, when either has used up its window, how long until both may try again.
    pub(super) fn begin(&self, user: &str, source: Option<IpAddr>) -> Result<Attempt, Duration> {
        let mut by_user = self.by_user.lock().expect("link attempts lock");
        let mut by_source = self.by_source.lock().expect("link attempts lock");
        let now = by_user.now();
        let user_window = current(by_user.get(user), now);
        let source_window = source.map(|ip| (ip, current(by_source.get(&ip), now)));
        let mut free_at = None;
        if user_window.failures >= LINK_FAILURES_PER_USER {
            free_at = Some(user_window.ends);
        }
        if let Some((_, window)) = source_window
            && window.failures >= LINK_FAILURES_PER_SOURCE
        {
            free_at = free_at.max(Some(window.ends));
        }
        if let Some(free_at) = free_at {
            return Err(Duration::from_millis((free_at - now).max(0) as u64));
        }
        let user_window = counted(user_window);
        by_user.insert(user.to_string(), user_window, user_window.ends);
        if user_window.failures == LINK_FAILURES_PER_USER {
            tracing::warn!(
                user,
                "link code confirmations refused for a while: too many wrong codes"
            );
        }
        let source = source_window.map(|(ip, window)| {
            let window = counted(window);
            by_source.insert(ip, window, window.ends);
            if window.failures == LINK_FAILURES_PER_SOURCE {
                tracing::warn!(source = %ip, "link code confirmations refused for a while: too many wrong codes from this address");
            }
            (ip, window)
        });
        Ok(Attempt {
            user: (user.to_string(), user_window),
            source,
        })
    }

    /// The attempt linked: it is not a failure after all.
    pub(super) fn succeeded(&self, attempt: Attempt) {
        give_back(
            &mut self.by_user.lock().expect("link attempts lock"),
            attempt.user,
        );
        if let Some(source) = attempt.source {
            give_back(
                &mut self.by_source.lock().expect("link attempts lock"),
                source,
            );
        }
    }
}

/// The window in force at `now`: the remembered one, or a fresh one when it has ended — or lies
/// further ahead than a window can (the clock was set back), which must not lock anyone out.
fn current(remembered: Option<&Window>, now: Millis) -> Window {
    match remembered {
        Some(window) if window.ends - now <= LINK_FAILURE_WINDOW.as_millis() as Millis => *window,
        _ => Window {
            failures: 0,
            ends: now + LINK_FAILURE_WINDOW.as_millis() as Millis,
        },
    }
}

/// `window` with one more failure.
fn counted(window: Window) -> Window {
    Window {
        failures: window.failures + 1,
        ..window
    }
}

/// Takes back the failure an attempt counted, if its window is still the one in force.
fn give_back<K: Eq + std::hash::Hash>(
    map: &mut ExpiringMap<K, Window, Millis>,
    (key, counted): (K, Window),
) {
    if let Some(&window) = map.get(&key)
        && window.ends == counted.ends
    {
        let window = Window {
            failures: window.failures.saturating_sub(1),
            ..window
        };
        map.insert(key, window, window.ends);
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};

    use super::*;

    fn attempts() -> (LinkAttempts, Arc<AtomicI64>) {
        let offset = Arc::new(AtomicI64::new(0));
        (LinkAttempts::new(&Clock::shifted(offset.clone())), offset)
    }

    const HOME: Option<IpAddr> = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));

    #[test]
    fn a_user_is_stopped_after_the_limit_until_the_window_ends() {
        let (attempts, offset) = attempts();
        for _ in 0..LINK_FAILURES_PER_USER {
            let _failed = attempts.begin("bob", HOME).unwrap();
        }
        let wait = attempts.begin("bob", HOME).err().expect("limited");
        assert!(
            wait > Duration::ZERO && wait <= LINK_FAILURE_WINDOW,
            "{wait:?}"
        );
        // Someone else, from elsewhere, is not.
        let _other = attempts.begin("dora", None).unwrap();
        offset.fetch_add(LINK_FAILURE_WINDOW.as_millis() as i64, Ordering::SeqCst);
        let _again = attempts.begin("bob", HOME).unwrap();
    }

    #[test]
    fn an_address_is_stopped_after_its_own_limit_whoever_tries() {
        let (attempts, _) = attempts();
        for i in 0..LINK_FAILURES_PER_SOURCE {
            let _failed = attempts.begin(&format!("user{}", i % 5), HOME).unwrap();
        }
        assert!(attempts.begin("someone-new", HOME).is_err());
        let _elsewhere = attempts.begin("someone-new", None).unwrap();
    }

    #[test]
    fn a_success_is_not_counted() {
        let (attempts, _) = attempts();
        for _ in 0..3 * LINK_FAILURES_PER_USER {
            let attempt = attempts.begin("bob", HOME).unwrap();
            attempts.succeeded(attempt);
        }
        let _still_free = attempts.begin("bob", HOME).unwrap();
    }

    #[test]
    fn a_clock_set_back_locks_nobody_out() {
        let (attempts, offset) = attempts();
        for _ in 0..LINK_FAILURES_PER_USER {
            let _failed = attempts.begin("bob", HOME).unwrap();
        }
        offset.fetch_sub(3_600_000, Ordering::SeqCst);
        let _free = attempts.begin("bob", HOME).unwrap();
    }
}
