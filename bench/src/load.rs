//! The load generator: open loop at a fixed rate, corrected for coordinated omission (each
//! latency is measured from the request's intended send time, so a stalled server is charged for
//! the requests it kept waiting), and closed loop (a fixed number of requests in flight) for peak
//! throughput.
//!
//! Requests are [`Call`]s. The generator runs on the harness's runtime; with pinning, that is one
//! core of its own, so a saturated generator shows as a peak that the server's CPU use (reported
//! next to it) does not explain.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::hist::{Latencies, Summary};

/// One request of a load.
pub trait Call: Clone + Send + Sync + 'static {
    /// Sends the request and waits for its answer; an error counts as a failed request.
    fn call(&self) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// The outcome of one load run.
#[derive(Clone, Debug, Serialize)]
pub struct LoadResult {
    /// `open` (fixed rate) or `closed` (peak).
    pub mode: &'static str,
    /// Requests per second asked for (open loop).
    pub target_rps: Option<f64>,
    /// Requests kept in flight (closed loop).
    pub concurrency: Option<usize>,
    /// Requests answered successfully.
    pub ok: u64,
    /// Requests that failed.
    pub errors: u64,
    /// The first failure, if any.
    pub first_error: Option<String>,
    /// Wall time of the run in seconds (until the last answer).
    pub seconds: f64,
    /// Successful requests per second.
    pub achieved_rps: f64,
    /// Open loop: every request was sent, without ever exceeding the in-flight limit.
    pub sustained: bool,
    /// Latency (open loop: from the intended send time).
    pub latency: Summary,
    /// Share of one core the measured server used during the run, when known.
    pub server_cores: Option<f64>,
    /// The measured server's user-mode and system-mode shares of a core, when known.
    pub server_user_system: Option<(f64, f64)>,
    /// Cores kept busy by other processes during the run: the machine's busy time less the
    /// measured server's and the harness's (noise from whatever else runs on the machine).
    pub other_cores: Option<f64>,
}

impl LoadResult {
    /// The measured server's CPU per successful request, user and system (µs).
    pub fn cpu_us_per_request(&self) -> Option<(f64, f64)> {
        let (user, system) = self.server_user_system?;
        (self.achieved_rps > 0.0).then(|| {
            (
                user * 1e6 / self.achieved_rps,
                system * 1e6 / self.achieved_rps,
            )
        })
    }

    /// Requests per second per core of the measured server: the throughput one fully used core
    /// would give at the same cost per request (`None` when its CPU use is unknown or tiny).
    pub fn per_server_core(&self) -> Option<f64> {
        self.server_cores
            .filter(|c| *c > 0.05)
            .map(|c| self.achieved_rps / c)
    }
}

#[derive(Default)]
struct Tally {
    latencies: Mutex<Latencies>,
    ok: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Tally {
    fn record(&self, result: anyhow::Result<()>, latency: Duration) {
        match result {
            Ok(()) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                self.latencies.lock().expect("tally").record(latency);
            }
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                self.first_error
                    .lock()
                    .expect("tally")
                    .get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }

    fn finish(&self, mode: &'static str, seconds: f64) -> LoadResult {
        let ok = self.ok.load(Ordering::Relaxed);
        LoadResult {
            mode,
            target_rps: None,
            concurrency: None,
            ok,
            errors: self.errors.load(Ordering::Relaxed),
            first_error: self.first_error.lock().expect("tally").clone(),
            seconds,
            achieved_rps: if seconds > 0.0 {
                ok as f64 / seconds
            } else {
                0.0
            },
            sustained: true,
            latency: self.latencies.lock().expect("tally").summary(),
            server_cores: None,
            server_user_system: None,
            other_cores: None,
        }
    }
}

/// Settings of an open-loop run.
#[derive(Clone, Copy, Debug)]
pub struct OpenLoop {
    /// Requests per second.
    pub rate: f64,
    /// How long to send.
    pub duration: Duration,
    /// Most requests in flight; past it the rate is not sustained and sending stops.
    pub max_in_flight: usize,
}

/// Sends `call` at `spec.rate` for `spec.duration`. Request `i` is due at `start + i / rate`; the
/// sender wakes as often as the runtime lets it (it yields between rounds rather than sleeping,
/// because timers have millisecond resolution) and sends whatever is due, so a late round is
/// charged to the latencies of the requests it delayed.
pub async fn open_loop<C: Call>(call: &C, spec: OpenLoop) -> LoadResult {
    let tally = Arc::new(Tally::default());
    let in_flight = Arc::new(AtomicUsize::new(0));
    let total = (spec.rate * spec.duration.as_secs_f64()).round().max(1.0) as u64;
    let interval = Duration::from_secs_f64(1.0 / spec.rate);
    let start = Instant::now();
    let mut sent = 0u64;
    let mut sustained = true;
    while sent < total {
        let due = ((start.elapsed().as_secs_f64() * spec.rate) as u64 + 1).min(total);
        while sent < due {
            if in_flight.load(Ordering::Relaxed) >= spec.max_in_flight {
                sustained = false;
                break;
            }
            let intended = start + interval.mul_f64(sent as f64);
            spawn_one(call, &tally, &in_flight, intended);
            sent += 1;
        }
        if !sustained {
            break;
        }
        tokio::task::yield_now().await;
    }
    drain(&in_flight, Duration::from_secs(30)).await;
    let mut result = tally.finish("open", start.elapsed().as_secs_f64());
    result.target_rps = Some(spec.rate);
    result.sustained = sustained && result.errors == 0;
    result
}

fn spawn_one<C: Call>(
    call: &C,
    tally: &Arc<Tally>,
    in_flight: &Arc<AtomicUsize>,
    intended: Instant,
) {
    let (call, tally, in_flight) = (call.clone(), tally.clone(), in_flight.clone());
    in_flight.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(async move {
        let result = call.call().await;
        tally.record(result, intended.elapsed());
        in_flight.fetch_sub(1, Ordering::Relaxed);
    });
}

async fn drain(in_flight: &AtomicUsize, limit: Duration) {
    let deadline = Instant::now() + limit;
    while in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Keeps `concurrency` requests in flight for `duration`: each worker sends its next request as
/// soon as the previous one is answered. Latency is per request.
pub async fn closed_loop<C: Call>(call: &C, concurrency: usize, duration: Duration) -> LoadResult {
    let tally = Arc::new(Tally::default());
    let start = Instant::now();
    let end = start + duration;
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (call, tally) = (call.clone(), tally.clone());
        workers.push(tokio::spawn(async move {
            while Instant::now() < end {
                let sent = Instant::now();
                let result = call.call().await;
                let failed = result.is_err();
                tally.record(result, sent.elapsed());
                if failed {
                    // A failing target must not turn into a busy loop.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let mut result = tally.finish("closed", start.elapsed().as_secs_f64());
    result.concurrency = Some(concurrency);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone)]
    struct Sleep(Duration);

    impl Call for Sleep {
        async fn call(&self) -> anyhow::Result<()> {
            tokio::time::sleep(self.0).await;
            Ok(())
        }
    }

    #[derive(Clone)]
    struct Fail;

    impl Call for Fail {
        async fn call(&self) -> anyhow::Result<()> {
            anyhow::bail!("refused")
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn open_loop_sends_the_rate_and_measures_from_the_intended_time() {
        let spec = OpenLoop {
            rate: 1000.0,
            duration: Duration::from_millis(200),
            max_in_flight: 1000,
        };
        let r = open_loop(&Sleep(Duration::from_millis(2)), spec).await;
        assert_eq!(r.ok, 200);
        assert!(r.sustained);
        assert!(r.latency.p50_us >= 2000.0, "{:?}", r.latency);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_slow_target_is_not_sustained() {
        let spec = OpenLoop {
            rate: 10_000.0,
            duration: Duration::from_millis(100),
            max_in_flight: 10,
        };
        let r = open_loop(&Sleep(Duration::from_millis(50)), spec).await;
        assert!(!r.sustained);
        assert!(r.ok < 1000);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn closed_loop_counts_answers_and_errors() {
        let r = closed_loop(
            &Sleep(Duration::from_millis(1)),
            4,
            Duration::from_millis(100),
        )
        .await;
        assert!(r.ok > 20, "{r:?}");
        assert_eq!(r.concurrency, Some(4));
        let r = closed_loop(&Fail, 2, Duration::from_millis(50)).await;
        assert_eq!(r.ok, 0);
        assert!(r.errors > 0);
        assert_eq!(r.first_error.as_deref(), Some("refused"));
    }
}
