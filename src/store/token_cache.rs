//! Recently checked API tokens, so a busy client's every call is not a database read.
//!
//! An entry says "this token was active a moment ago" and is trusted for [`TOKEN_TTL`] at most.
//! Revoking through this store empties the cache at once, and so does hearing that another replica
//! or process revoked tokens (Postgres NOTIFY); a lookup that raced with a revocation is not
//! cached. So a revoked token stops working at once on the replica that revoked it and on every
//! replica that hears of it, and within [`TOKEN_TTL`] everywhere else (a `hoop token revoke` run
//! against a SQLite file, which cannot tell the running server).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::TokenSubject;

/// How long a successful lookup is trusted without asking the database again.
pub const TOKEN_TTL: Duration = Duration::from_secs(1);
/// Entries kept at most; past that the cache starts afresh (each entry is re-read once).
const MAX_ENTRIES: usize = 10_000;

#[derive(Default)]
pub(super) struct TokenCache {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Token SHA-256 → subject and when the database said it was active.
    entries: HashMap<String, (TokenSubject, Instant)>,
    /// Goes up on every revocation, so a lookup that started before one is not cached after it.
    generation: u64,
}

impl TokenCache {
    /// The subject of an active token, if it was looked up within [`TOKEN_TTL`].
    pub(super) fn get(&self, sha256: &str) -> Option<TokenSubject> {
        let state = self.state.lock().expect("token cache lock");
        let (subject, checked_at) = state.entries.get(sha256)?;
        (checked_at.elapsed() < TOKEN_TTL).then(|| subject.clone())
    }

    /// Where revocations stand; read before a database lookup and passed to [`Self::put`].
    pub(super) fn generation(&self) -> u64 {
        self.state.lock().expect("token cache lock").generation
    }

    /// Remembers what a database lookup that began at `generation` found, unless tokens were
    /// revoked since it began.
    pub(super) fn put(&self, sha256: &str, subject: &TokenSubject, generation: u64, at: Instant) {
        let mut state = self.state.lock().expect("token cache lock");
        if state.generation != generation {
            return;
        }
        if state.entries.len() >= MAX_ENTRIES {
            state.entries.clear();
        }
        state
            .entries
            .insert(sha256.to_string(), (subject.clone(), at));
    }

    /// Forgets every entry: some token was revoked.
    pub(super) fn revoked(&self) {
        let mut state = self.state.lock().expect("token cache lock");
        state.generation += 1;
        state.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> TokenSubject {
        TokenSubject::User(crate::domain::Email::parse("alice@x.com").unwrap())
    }

    #[test]
    fn a_revocation_empties_the_cache() {
        let cache = TokenCache::default();
        cache.put("t", &alice(), cache.generation(), Instant::now());
        assert_eq!(cache.get("t"), Some(alice()));
        cache.revoked();
        assert_eq!(cache.get("t"), None);
    }

    #[test]
    fn a_lookup_that_raced_a_revocation_is_not_cached() {
        let cache = TokenCache::default();
        let before = cache.generation();
        cache.revoked();
        cache.put("t", &alice(), before, Instant::now());
        assert_eq!(cache.get("t"), None);
    }

    #[test]
    fn entries_are_trusted_for_a_moment_only() {
        let cache = TokenCache::default();
        let long_ago = Instant::now() - TOKEN_TTL;
        cache.put("t", &alice(), cache.generation(), long_ago);
        assert_eq!(cache.get("t"), None);
    }
}
