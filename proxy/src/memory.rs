//! Giving the heap pages freed by a snapshot change back to the operating system (the sidecar RSS
//! budget; docs/adr/0015-sidecar-memory-jemalloc-purge-and-compact-definitions.md).
//!
//! Compiling a flag set parses the whole document into a `serde_json::Value` first (about 4.4 KB
//! per flag: every JSON object is a `BTreeMap` node of 640 bytes) and frees it as soon as the set
//! is compiled; replacing a snapshot frees the previous one. jemalloc keeps freed pages resident
//! ("dirty") until its decay clock purges them, and that clock only advances with allocation
//! activity: an idle sidecar kept ~44 MiB of a 10,000-flag document's garbage resident for good
//! (RSS 104 MiB instead of 60 MiB; 20.8 MiB instead of 17 MiB at 1,000 flags). Purging once
//! after each publication costs a few `madvise` calls per snapshot change and nothing on the
//! request path.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

use crate::snapshot::Snapshot;

/// How long after a publication the purge waits, so that the publisher's buffers and the previous
/// snapshot (still held by requests in flight) are freed first.
const SETTLE: Duration = Duration::from_millis(200);

/// Returns the unused dirty pages of every jemalloc arena to the operating system
/// (`arena.<MALLCTL_ARENAS_ALL>.purge`). True when jemalloc accepted the request.
///
/// Only the binary allocates through jemalloc (its `#[global_allocator]`); elsewhere (library
/// tests) this purges an empty jemalloc and has no effect.
// jemalloc's controls are reached only through its C `mallctl`.
#[allow(unsafe_code)]
pub fn release_freed_memory() -> bool {
    // MALLCTL_ARENAS_ALL is 4096 in jemalloc 5.
    const PURGE_ALL: &std::ffi::CStr = c"arena.4096.purge";
    // SAFETY: `arena.<i>.purge` is a documented control that reads and writes no argument, so
    // null pointers and a zero length are what it expects.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            PURGE_ALL.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    rc == 0
}

/// Starts jemalloc's background purging thread, so that freed pages go back to the operating
/// system within jemalloc's decay time (10 s) even when the process is idle. Without it the decay
/// clock only advances with allocation activity: the buffers of a burst of connections, closed
/// since, stayed resident in an idle sidecar (1,200 connections: +39 MiB for good). True when
/// jemalloc accepted the request.
// jemalloc's controls are reached only through its C `mallctl`.
#[allow(unsafe_code)]
pub fn start_background_purge() -> bool {
    let mut enable = true;
    // SAFETY: `background_thread` is a documented read-write bool control; `newp` points to a bool
    // that lives across the call and `newlen` is its size.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            c"background_thread".as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            (&raw mut enable).cast(),
            std::mem::size_of::<bool>(),
        )
    };
    rc == 0
}

/// Purges freed pages after every snapshot published on `published` (several publications in
/// quick succession are purged once), until the cell is dropped.
pub async fn purge_after_publish(mut published: broadcast::Receiver<Arc<Snapshot>>) {
    loop {
        match published.recv().await {
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return,
        }
        tokio::time::sleep(SETTLE).await;
        loop {
            match published.try_recv() {
                Ok(_) | Err(TryRecvError::Lagged(_)) => {}
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Closed) => return,
            }
        }
        let _ = tokio::task::spawn_blocking(release_freed_memory).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// jemalloc accepts the purge control (the name and calling convention are right).
    #[test]
    fn purge_is_accepted() {
        assert!(release_freed_memory());
    }

    /// jemalloc was built with background threads and accepts starting them.
    #[test]
    fn background_purge_is_accepted() {
        assert!(start_background_purge());
    }
}
