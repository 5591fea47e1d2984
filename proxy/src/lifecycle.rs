//! The sidecar's lifecycle state, in the terms of OpenFeature and flagd providers: `NOT_READY`,
//! `READY`, `STALE`, `ERROR` (docs/operations.md#start-policy).
//!
//! - `NOT_READY`: starting, nothing loaded yet, the init timeout not over (`/readyz` answers 503).
//! - `READY`: a flag set is served (from control, a persisted snapshot, the bootstrap file or a
//!   flags file) and control was in reach within the last grace period (`--stale-grace-secs`).
//! - `STALE`: a flag set is served, but control has been out of reach for longer than the grace
//!   period (since start, when it never answered).
//! - `ERROR`: the init timeout (`--init-timeout`) passed with no flag set: the sidecar is ready and
//!   serves without flags (proxied requests go out without decisions, lookups answer "flag not
//!   found" so providers use the code defaults) until the first snapshot arrives.
//!
//! [`Machine`] is the pure state machine (time is passed in); [`spawn`] runs it against the
//! snapshot cell and the sync client's status, publishes the empty stand-in
//! ([`Snapshot::nothing`]) when the init timeout passes, exports one gauge per state
//! (`vexil_proxy_lifecycle_state{state}`) and hands the state to `/debug/snapshot` and the gRPC
//! `EventStream`.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::snapshot::{Snapshot, SnapshotCell, Source};
use crate::sync::{SyncState, SyncStatus};

/// Where the sidecar stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lifecycle {
    /// Starting: nothing loaded, the init timeout not over.
    NotReady,
    /// Serving a flag set, control in reach (or lost for less than the grace period).
    Ready,
    /// Serving a flag set, control lost for longer than the grace period.
    Stale,
    /// Serving without flags: nothing loaded within the init timeout.
    Error,
}

impl Lifecycle {
    /// Every state, in the order of the gauges.
    pub const ALL: [Lifecycle; 4] = [
        Lifecycle::NotReady,
        Lifecycle::Ready,
        Lifecycle::Stale,
        Lifecycle::Error,
    ];

    /// `NOT_READY`, `READY`, `STALE` or `ERROR`.
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::NotReady => "NOT_READY",
            Lifecycle::Ready => "READY",
            Lifecycle::Stale => "STALE",
            Lifecycle::Error => "ERROR",
        }
    }

    /// The flagd `EventStream` event announcing this state: `provider_ready`, `provider_stale`,
    /// `provider_error`; none for `NOT_READY`.
    pub fn event(self) -> Option<&'static str> {
        match self {
            Lifecycle::NotReady => None,
            Lifecycle::Ready => Some("provider_ready"),
            Lifecycle::Stale => Some("provider_stale"),
            Lifecycle::Error => Some("provider_error"),
        }
    }
}

/// The two settings of the start policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartPolicy {
    /// Time allowed to load a first snapshot before serving without flags; `None`: wait for ever.
    pub init_timeout: Option<Duration>,
    /// Time control may be out of reach before a served flag set turns `STALE`.
    pub stale_grace: Duration,
}

impl Default for StartPolicy {
    fn default() -> Self {
        StartPolicy {
            init_timeout: Some(Duration::from_secs(10)),
            stale_grace: Duration::from_secs(30),
        }
    }
}

/// The lifecycle state machine: events in, state out, time passed in.
#[derive(Clone, Debug)]
pub struct Machine {
    policy: StartPolicy,
    started: Instant,
    flag_set: bool,
    /// Since when control has been out of reach; `None` while in contact (or without control).
    lost_since: Option<Instant>,
}

impl Machine {
    /// A machine started at `started`. `follows_control`: flags come from control, which counts
    /// as out of reach from the start until the first sync; a flags file is never "lost".
    pub fn new(policy: StartPolicy, started: Instant, follows_control: bool) -> Machine {
        Machine {
            policy,
            started,
            flag_set: false,
            lost_since: follows_control.then_some(started),
        }
    }

    /// Whether a flag set is served (the stand-in of [`Snapshot::nothing`] is not one).
    pub fn flag_set(&mut self, loaded: bool) {
        self.flag_set = loaded;
    }

    /// Control is in reach (subscribed and caught up) or not, as of `now`.
    pub fn contact(&mut self, in_reach: bool, now: Instant) {
        if in_reach {
            self.lost_since = None;
        } else if self.lost_since.is_none() {
            self.lost_since = Some(now);
        }
    }

    /// When the init timeout ends (`None`: never).
    fn init_deadline(&self) -> Option<Instant> {
        self.policy.init_timeout.map(|t| self.started + t)
    }

    /// The state at `now`.
    pub fn state(&self, now: Instant) -> Lifecycle {
        if !self.flag_set {
            return match self.init_deadline() {
                Some(deadline) if now >= deadline => Lifecycle::Error,
                _ => Lifecycle::NotReady,
            };
        }
        match self.lost_since {
            Some(since) if now >= since + self.policy.stale_grace => Lifecycle::Stale,
            _ => Lifecycle::Ready,
        }
    }

    /// The next instant after `now` at which the state changes by itself (a deadline passing),
    /// if any.
    pub fn next_change(&self, now: Instant) -> Option<Instant> {
        let at = if self.flag_set {
            self.lost_since.map(|since| since + self.policy.stale_grace)
        } else {
            self.init_deadline()
        };
        at.filter(|at| *at > now)
    }
}

/// The gauges `vexil_proxy_lifecycle_state{state}`: 1 for the current state, 0 for the others.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

fn export(gauges: &Family<StateLabels, Gauge>, current: Lifecycle) {
    for state in Lifecycle::ALL {
        gauges
            .get_or_create(&StateLabels {
                state: state.as_str(),
            })
            .set(i64::from(state == current));
    }
}

/// Runs the lifecycle of a sidecar serving `environment` from `cell` until `stop` turns true.
///
/// `status` is the sync client's (`None` for a flags file). When the init timeout passes with
/// nothing published, it publishes [`Snapshot::nothing`] (only into an empty cell) after turning
/// `ERROR`. Returns the state, updated as it changes.
pub fn spawn(
    policy: StartPolicy,
    cell: Arc<SnapshotCell>,
    environment: String,
    status: Option<watch::Receiver<SyncStatus>>,
    metrics: &Metrics,
    mut stop: watch::Receiver<bool>,
) -> watch::Receiver<Lifecycle> {
    let gauges = Family::<StateLabels, Gauge>::default();
    metrics.register(
        "lifecycle_state",
        "The sidecar's lifecycle state (NOT_READY, READY, STALE, ERROR): 1 for the current one",
        gauges.clone(),
    );
    export(&gauges, Lifecycle::NotReady);
    let (tx, rx) = watch::channel(Lifecycle::NotReady);
    let mut published = cell.subscribe();
    let mut machine = Machine::new(policy, Instant::now(), status.is_some());
    let mut status = status;
    tokio::spawn(async move {
        // A snapshot just received from control is contact, even before the client reports
        // itself synced (it publishes, then acknowledges).
        let mut from_control = false;
        loop {
            let now = Instant::now();
            machine.flag_set(cell.has_flag_set());
            if std::mem::take(&mut from_control) {
                machine.contact(true, now);
            }
            if let Some(status) = &status {
                machine.contact(status.borrow().state == SyncState::Synced, now);
            }
            let state = machine.state(now);
            if tx.send_if_modified(|s| std::mem::replace(s, state) != state) {
                export(&gauges, state);
                match state {
                    Lifecycle::Error => tracing::warn!(
                        init_timeout_secs = policy.init_timeout.map(|t| t.as_secs()),
                        "no flag set within the init timeout: ready, serving without flags"
                    ),
                    Lifecycle::Stale => tracing::warn!(
                        grace_secs = policy.stale_grace.as_secs(),
                        "control out of reach for longer than the grace period: STALE"
                    ),
                    other => tracing::info!(state = other.as_str(), "lifecycle"),
                }
            }
            // After the state turned ERROR, so that anyone seeing the stand-in reads ERROR.
            if state == Lifecycle::Error && !cell.is_loaded() {
                let why = "no flag set loaded within the init timeout: serving without flags";
                cell.publish_if_empty(Snapshot::nothing(environment.clone(), why));
            }
            let wake = machine.next_change(now);
            let status_changed = async {
                match &mut status {
                    Some(rx) => rx.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                received = published.recv() => {
                    from_control = received.is_ok_and(|s| matches!(s.source, Source::Control(_)));
                }
                alive = status_changed => {
                    if !alive {
                        // The sync client is gone (shutting down): no more contact to follow.
                        status = None;
                    }
                }
                _ = sleep_until(wake) => {}
            }
        }
    });
    rx
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(init: Option<u64>, grace: u64) -> StartPolicy {
        StartPolicy {
            init_timeout: init.map(Duration::from_secs),
            stale_grace: Duration::from_secs(grace),
        }
    }

    fn at(t0: Instant, secs: u64) -> Instant {
        t0 + Duration::from_secs(secs)
    }

    #[tokio::test]
    async fn nothing_loaded_turns_error_after_the_init_timeout_then_ready_when_flags_arrive() {
        let t0 = Instant::now();
        let mut m = Machine::new(policy(Some(10), 30), t0, true);
        assert_eq!(m.state(t0), Lifecycle::NotReady);
        assert_eq!(m.next_change(t0), Some(at(t0, 10)));
        assert_eq!(m.state(at(t0, 9)), Lifecycle::NotReady);
        assert_eq!(m.state(at(t0, 10)), Lifecycle::Error);
        assert_eq!(m.next_change(at(t0, 10)), None);
        // Control delivers at 12 s.
        m.flag_set(true);
        m.contact(true, at(t0, 12));
        assert_eq!(m.state(at(t0, 12)), Lifecycle::Ready);
        assert_eq!(m.next_change(at(t0, 12)), None);
    }

    #[tokio::test]
    async fn an_init_timeout_of_none_waits_for_ever() {
        let t0 = Instant::now();
        let m = Machine::new(policy(None, 30), t0, true);
        assert_eq!(m.state(at(t0, 86_400)), Lifecycle::NotReady);
        assert_eq!(m.next_change(t0), None);
    }

    #[tokio::test]
    async fn a_served_set_turns_stale_after_the_grace_and_ready_on_contact() {
        let t0 = Instant::now();
        // A persisted snapshot at start, control never answering.
        let mut m = Machine::new(policy(Some(10), 30), t0, true);
        m.flag_set(true);
        assert_eq!(m.state(t0), Lifecycle::Ready);
        assert_eq!(m.next_change(t0), Some(at(t0, 30)));
        assert_eq!(m.state(at(t0, 30)), Lifecycle::Stale);
        // Control answers; then is lost at 100 s: ready during the grace, stale after.
        m.contact(true, at(t0, 40));
        assert_eq!(m.state(at(t0, 40)), Lifecycle::Ready);
        m.contact(false, at(t0, 100));
        m.contact(false, at(t0, 110)); // still lost: the loss dates from 100 s
        assert_eq!(m.state(at(t0, 129)), Lifecycle::Ready);
        assert_eq!(m.next_change(at(t0, 110)), Some(at(t0, 130)));
        assert_eq!(m.state(at(t0, 130)), Lifecycle::Stale);
        m.contact(true, at(t0, 131));
        assert_eq!(m.state(at(t0, 131)), Lifecycle::Ready);
    }

    #[tokio::test]
    async fn a_flags_file_is_never_stale() {
        let t0 = Instant::now();
        let mut m = Machine::new(policy(Some(10), 1), t0, false);
        assert_eq!(m.state(at(t0, 10)), Lifecycle::Error);
        m.flag_set(true);
        assert_eq!(m.state(at(t0, 1000)), Lifecycle::Ready);
        assert_eq!(m.next_change(at(t0, 1000)), None);
    }

    #[test]
    fn names_and_events() {
        let names: Vec<_> = Lifecycle::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ["NOT_READY", "READY", "STALE", "ERROR"]);
        let events: Vec<_> = Lifecycle::ALL.iter().map(|s| s.event()).collect();
        assert_eq!(
            events,
            [
                None,
                Some("provider_ready"),
                Some("provider_stale"),
                Some("provider_error")
            ]
        );
    }

    #[tokio::test]
    async fn the_driver_publishes_the_stand_in_and_exports_the_gauges() {
        let cell = Arc::new(SnapshotCell::new());
        let metrics = Metrics::new(cell.clone());
        let (_stop_tx, stop) = watch::channel(false);
        let policy = StartPolicy {
            init_timeout: Some(Duration::from_millis(300)),
            stale_grace: Duration::from_secs(5),
        };
        let mut state = spawn(policy, cell.clone(), "prod".into(), None, &metrics, stop);
        tokio::task::yield_now().await;
        assert_eq!(*state.borrow(), Lifecycle::NotReady);
        assert!(!cell.is_loaded());
        state.changed().await.unwrap();
        assert_eq!(*state.borrow_and_update(), Lifecycle::Error);
        // The stand-in follows the state.
        let mut waited = 0;
        while !cell.is_loaded() && waited < 100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            waited += 1;
        }
        let stand_in = cell.load().expect("the stand-in is published");
        assert!(!stand_in.is_flag_set());
        let text = metrics.render();
        assert!(
            text.contains("vexil_proxy_lifecycle_state{state=\"ERROR\"} 1"),
            "{text}"
        );
        assert!(text.contains("vexil_proxy_lifecycle_state{state=\"READY\"} 0"));
        // A flag set arrives: READY.
        let set = vexil_engine::FlagSet::from_json(&serde_json::json!({"flags": {}})).unwrap();
        cell.publish(Snapshot::new(
            "prod",
            0,
            set,
            crate::snapshot::Source::File("f".into()),
        ));
        state.changed().await.unwrap();
        assert_eq!(*state.borrow(), Lifecycle::Ready);
    }
}
