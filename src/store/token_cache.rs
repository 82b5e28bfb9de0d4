//! Recently checked API tokens, so a busy client's every call is not a database read.
//!
//! An entry says "this token was active a moment ago" and is trusted for [`TOKEN_TTL`] at most.
//! Revoking through this store empties the cache at once, and so does hearing that another replica
//! or process revoked tokens (Postgres NOTIFY); a lookup that raced with a revocation is not
//! cached (the guard of [`ExpiringMap`], which holds the entries). So a revoked token stops working at once on the replica that revoked it and on every
//! replica that hears of it, and within [`TOKEN_TTL`] everywhere else (a `hoop token revoke` run
//! against a SQLite file, which cannot tell the running server).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::ActiveToken;
use crate::expiring::{ExpiringMap, Generation};

/// How long a successful lookup is trusted without asking the database again.
pub const TOKEN_TTL: Duration = Duration::from_secs(1);
/// Entries kept at most; past that the expired ones are dropped (or, if none, all).
const MAX_ENTRIES: usize = 10_000;

pub(super) struct TokenCache {
    /// Token SHA-256 → what the database said of the active token.
    entries: Mutex<ExpiringMap<String, ActiveToken>>,
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache {
            entries: Mutex::new(ExpiringMap::new(MAX_ENTRIES)),
        }
    }
}

impl TokenCache {
    /// The subject of an active token, if it was looked up within [`TOKEN_TTL`].
    pub(super) fn get(&self, sha256: &str) -> Option<ActiveToken> {
        self.lock().get(sha256).cloned()
    }

    /// Where revocations stand; read before a database lookup and passed to [`Self::put`].
    pub(super) fn generation(&self) -> Generation {
        self.lock().generation()
    }

    /// Remembers what a database lookup that began at `generation` (at time `at`) found, unless
    /// tokens were revoked since it began.
    pub(super) fn put(
        &self,
        sha256: &str,
        token: &ActiveToken,
        generation: Generation,
        at: Instant,
    ) {
        self.lock().insert_unless_removed_since(
            generation,
            sha256.to_string(),
            token.clone(),
            at + TOKEN_TTL,
        );
    }

    /// Forgets every entry: some token was revoked.
    pub(super) fn revoked(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ExpiringMap<String, ActiveToken>> {
        self.entries.lock().expect("token cache lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> ActiveToken {
        ActiveToken {
            subject: crate::store::TokenSubject::User(
                crate::domain::Email::parse("alice@x.com").unwrap(),
            ),
            terms: Default::default(),
        }
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
