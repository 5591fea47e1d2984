//! The decision cache: the finished headers of a request, kept per worker thread and reused by the
//! next request that would decide exactly the same (ADR 0033).
//!
//! A request's decisions are a function of the snapshot, the route, and the values of the context
//! attributes its flags read ([`vexil_engine::Flag::context_reads`]); the key is exactly that: the
//! plan it was made with (a new snapshot empties the cache), the route, and those values as
//! [`ContextMapping::write_key`](super::context::ContextMapping::write_key) writes them. Only
//! requests that carry no `vexil-flags` of their own use it, and only routes whose flags' reads
//! are known and come from no `jwt:` source (see [`super::plan::Plan::cache_key`]).
//!
//! One `lru` cache per thread: no lock and no shared cache line on the request path; with
//! pingora's few worker threads the same context is decided at most once per thread.

use std::cell::RefCell;
use std::num::NonZeroUsize;
use std::rc::Rc;

use http::{HeaderName, HeaderValue};
use lru::LruCache;

/// The decisions of one request, ready to write.
#[derive(Debug)]
pub(crate) struct Cached {
    /// The `vexil-flags` value (`None`: no decision).
    pub flags: Option<HeaderValue>,
    /// The per-flag headers (when enabled).
    pub per_flag: Box<[(HeaderName, HeaderValue)]>,
    /// The sidecar's baggage members (when enabled).
    pub baggage: Box<str>,
    /// Decisions left out by the byte limit.
    pub dropped: u32,
    /// `(flag, variant)` of every decision, for the evaluation counters.
    pub decisions: Box<[(u32, Option<u32>)]>,
}

struct Worker {
    /// The plan the entries were made with.
    plan: u64,
    lru: LruCache<Box<[u8]>, Rc<Cached>>,
}

thread_local! {
    static CACHE: RefCell<Option<Worker>> = const { RefCell::new(None) };
    /// The key being built, reused by every request of the thread.
    static KEY: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// What a lookup found.
pub(crate) enum Lookup {
    /// The decisions, made before.
    Hit(Rc<Cached>),
    /// Not there: decide, then [`store`] under the same key.
    Miss,
}

/// Builds the key with `write` into the thread's key buffer and looks it up among the entries of
/// plan `plan` (entries of another plan are dropped first); `entries` tracks the number of entries
/// across threads.
pub(crate) fn lookup(
    plan: u64,
    capacity: usize,
    write: impl FnOnce(&mut Vec<u8>),
    entries: impl Fn(i64),
) -> Lookup {
    KEY.with_borrow_mut(|key| {
        key.clear();
        write(key);
        CACHE.with_borrow_mut(|cache| {
            let worker = worker(cache, plan, capacity, &entries);
            match worker.lru.get(key.as_slice()) {
                Some(found) => Lookup::Hit(found.clone()),
                None => Lookup::Miss,
            }
        })
    })
}

/// Keeps `cached` under the key of the last [`lookup`] of this thread.
pub(crate) fn store(plan: u64, capacity: usize, cached: Cached, entries: impl Fn(i64)) {
    KEY.with_borrow(|key| {
        CACHE.with_borrow_mut(|cache| {
            let worker = worker(cache, plan, capacity, &entries);
            let before = worker.lru.len();
            worker.lru.push(key.as_slice().into(), Rc::new(cached));
            entries(worker.lru.len() as i64 - before as i64);
        })
    })
}

/// The thread's cache for `plan`, emptied when it held another plan's entries (or was sized
/// otherwise).
fn worker<'c>(
    cache: &'c mut Option<Worker>,
    plan: u64,
    capacity: usize,
    entries: &impl Fn(i64),
) -> &'c mut Worker {
    let stale = cache
        .as_ref()
        .is_none_or(|w| w.plan != plan || w.lru.cap().get() != capacity);
    if stale {
        if let Some(old) = cache.take() {
            entries(-(old.lru.len() as i64));
        }
        let cap = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        *cache = Some(Worker {
            plan,
            lru: LruCache::new(cap),
        });
    }
    cache.as_mut().expect("just set")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn cached(dropped: u32) -> Cached {
        Cached {
            flags: None,
            per_flag: Box::new([]),
            baggage: "".into(),
            dropped,
            decisions: Box::new([]),
        }
    }

    #[test]
    fn entries_are_per_plan_bounded_and_counted() {
        let count = Cell::new(0i64);
        let add = |n: i64| count.set(count.get() + n);
        let key = |k: &'static [u8]| move |b: &mut Vec<u8>| b.extend_from_slice(k);
        assert!(matches!(lookup(1, 2, key(b"a"), add), Lookup::Miss));
        store(1, 2, cached(1), add);
        let Lookup::Hit(hit) = lookup(1, 2, key(b"a"), add) else {
            panic!("a miss after the store")
        };
        assert_eq!(hit.dropped, 1);
        for k in [&b"b"[..], b"c"] {
            assert!(matches!(lookup(1, 2, key(k), add), Lookup::Miss));
            store(1, 2, cached(2), add);
        }
        // Two entries at most: "a" was the least recently used.
        assert_eq!(count.get(), 2);
        assert!(matches!(lookup(1, 2, key(b"a"), add), Lookup::Miss));
        // A new plan starts empty.
        assert!(matches!(lookup(2, 2, key(b"c"), add), Lookup::Miss));
        assert_eq!(count.get(), 0);
    }
}
