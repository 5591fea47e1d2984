//! Polling until something holds.

use std::time::{Duration, Instant};

/// Polls `probe` every 50 ms until it returns `Ok`, for at most `secs`; panics with `what` and
/// the last `Err` (what it observed) otherwise.
pub async fn wait_for<T>(
    secs: u64,
    what: &str,
    mut probe: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let last = match probe().await {
            Ok(t) => return t,
            Err(e) => e,
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}; last: {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
