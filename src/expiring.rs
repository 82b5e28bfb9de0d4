//! A map whose entries are forgotten at a time of their own: what hoopbot remembers for a moment
//! instead of asking again — tokens found active (the store's token cache), Slack users' links
//! (the Slack surface), when a Slack channel may next be posted to (the Slack pacer), how many
//! wrong link codes a user or an address sent lately (the service's link attempts).
//!
//! Remembering what a lookup found has a race: a lookup that began before the thing was removed
//! (a token revoked, an account unlinked) can finish after the removal and put it back, to be
//! trusted until it expires. So every removal moves the map to a new [`Generation`], a lookup
//! reads the generation before it starts, and its answer is kept only while the map is still at
//! that generation ([`ExpiringMap::insert_unless_removed_since`]).
//!
//! The map does no locking of its own: its owner keeps it behind a mutex and decides what must
//! happen under one lock (the pacer reads and takes a slot at once).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::time::Instant;

/// Entries that expire at their own time `T`, read from a clock the map is given.
pub struct ExpiringMap<K, V, T = Instant> {
    entries: HashMap<K, (V, T)>,
    generation: Generation,
    /// Entries kept at most; past that, expired ones are dropped, and if none were, all.
    limit: usize,
    clock: Box<dyn Fn() -> T + Send + Sync>,
}

/// Where removals from an [`ExpiringMap`] stand: read it before a lookup whose answer is to be
/// remembered, and hand it to [`ExpiringMap::insert_unless_removed_since`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generation(u64);

impl<K: Eq + Hash, V> ExpiringMap<K, V, Instant> {
    /// An empty map on the process's monotonic clock, keeping at most `limit` entries.
    pub fn new(limit: usize) -> Self {
        ExpiringMap::with_clock(limit, Instant::now)
    }
}

impl<K: Eq + Hash, V, T: Ord + Copy> ExpiringMap<K, V, T> {
    /// An empty map whose entries expire by `clock`, keeping at most `limit` entries.
    pub fn with_clock(limit: usize, clock: impl Fn() -> T + Send + Sync + 'static) -> Self {
        ExpiringMap {
            entries: HashMap::new(),
            generation: Generation(0),
            limit,
            clock: Box::new(clock),
        }
    }

    /// The map's clock now: the time entries' expiry is compared with.
    pub fn now(&self) -> T {
        (self.clock)()
    }

    /// The value remembered for `key`, unless it has expired.
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        let (value, until) = self.entries.get(key)?;
        (self.now() < *until).then_some(value)
    }

    /// Where removals stand now.
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// Remembers `value` for `key` until `until`, whatever was removed meanwhile: for values no
    /// removal can make wrong.
    pub fn insert(&mut self, key: K, value: V, until: T) {
        self.make_room_for(&key);
        self.entries.insert(key, (value, until));
    }

    /// Remembers what a lookup that began at generation `since` found, unless something was
    /// removed since it began; says whether it was remembered.
    pub fn insert_unless_removed_since(
        &mut self,
        since: Generation,
        key: K,
        value: V,
        until: T,
    ) -> bool {
        if self.generation != since {
            return false;
        }
        self.insert(key, value, until);
        true
    }

    /// Forgets `key`; lookups that began before are not remembered.
    pub fn remove<Q>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.generation.0 += 1;
        self.entries.remove(key);
    }

    /// Forgets everything; lookups that began before are not remembered.
    pub fn clear(&mut self) {
        self.generation.0 += 1;
        self.entries.clear();
    }

    /// At the limit, drops what has expired; if that frees nothing, starts afresh (each key is
    /// looked up again once). Nothing is removed in the sense of [`Self::remove`]: what lookups
    /// in flight found is still true, so the generation stays.
    fn make_room_for(&mut self, key: &K) {
        if self.entries.len() < self.limit || self.entries.contains_key(key) {
            return;
        }
        let now = self.now();
        self.entries.retain(|_, (_, until)| now < *until);
        if self.entries.len() >= self.limit {
            self.entries.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    /// A map on a clock the test moves by hand.
    fn map(limit: usize) -> (ExpiringMap<&'static str, u32, u64>, Arc<AtomicU64>) {
        let now = Arc::new(AtomicU64::new(100));
        let clock = now.clone();
        let map = ExpiringMap::with_clock(limit, move || clock.load(Ordering::SeqCst));
        (map, now)
    }

    #[test]
    fn an_entry_is_kept_until_its_time() {
        let (mut map, now) = map(10);
        map.insert("a", 1, 105);
        assert_eq!(map.get("a"), Some(&1));
        now.store(104, Ordering::SeqCst);
        assert_eq!(map.get("a"), Some(&1));
        now.store(105, Ordering::SeqCst);
        assert_eq!(map.get("a"), None, "expired at its time");
        assert_eq!(map.get("b"), None);
    }

    #[test]
    fn removing_forgets_one_and_clearing_all() {
        let (mut map, _) = map(10);
        map.insert("a", 1, 200);
        map.insert("b", 2, 200);
        map.remove("a");
        assert_eq!(map.get("a"), None);
        assert_eq!(map.get("b"), Some(&2));
        map.clear();
        assert_eq!(map.get("b"), None);
    }

    /// The race the guard is for, step by step: a lookup reads the generation and starts; the
    /// key is removed (or everything cleared); the lookup finishes and tries to remember what it
    /// found before the removal.
    #[test]
    fn a_lookup_that_began_before_a_removal_is_not_remembered() {
        let (mut map, _) = map(10);
        let began = map.generation();
        map.remove("a");
        assert!(!map.insert_unless_removed_since(began, "a", 1, 200));
        assert_eq!(map.get("a"), None);

        let began = map.generation();
        map.clear();
        assert!(!map.insert_unless_removed_since(began, "a", 1, 200));
        assert_eq!(map.get("a"), None);

        // One that began after the removal is remembered.
        let began = map.generation();
        assert!(map.insert_unless_removed_since(began, "a", 1, 200));
        assert_eq!(map.get("a"), Some(&1));
    }

    #[test]
    fn a_plain_insert_lands_whatever_was_removed() {
        let (mut map, _) = map(10);
        map.remove("a");
        map.insert("a", 1, 200);
        assert_eq!(map.get("a"), Some(&1));
    }

    #[test]
    fn a_full_map_drops_expired_entries_first_then_everything() {
        let (mut map, now) = map(2);
        map.insert("old", 1, 150);
        map.insert("live", 2, 300);
        now.store(200, Ordering::SeqCst);
        map.insert("new", 3, 300);
        assert_eq!((map.get("live"), map.get("new")), (Some(&2), Some(&3)));
        // Replacing a key needs no room.
        map.insert("new", 4, 300);
        assert_eq!((map.get("live"), map.get("new")), (Some(&2), Some(&4)));
        // Full of live entries: starts afresh with the new one only.
        map.insert("newer", 5, 300);
        assert_eq!(map.get("newer"), Some(&5));
        assert_eq!((map.get("live"), map.get("new")), (None, None));
        // Making room is not a removal: a lookup in flight is still remembered.
        let began = map.generation();
        map.insert("a", 6, 300);
        map.insert("b", 7, 300);
        assert!(map.insert_unless_removed_since(began, "c", 8, 300));
    }
}
