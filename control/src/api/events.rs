//! `GET /api/v1/environments/{env}/events`: the change stream, a WebSocket of JSON text
//! messages, one per committed change and one per fleet change of the environment.
//!
//! Everything it sends is read from the store (the change log with each change's audit entry,
//! and the fleet's session rows), so a stream served by any replica carries every commit and
//! every sidecar, whichever replica they went through. One poller per environment (shared by all
//! of the replica's streams of that environment) reads the environment and its fleet twice a
//! second, and at once on a commit made on this replica; a stream reads the change log only when
//! the environment moved.
//!
//! Authentication is the REST API's: `Authorization: Bearer`, or, since browsers cannot set
//! headers on a WebSocket, the token as a subprotocol `vexil.token.<token>` (never in the query
//! string, which ends up in logs). The stream is bounded: a queue of [`QUEUE`] messages per
//! connection, and a client that leaves it full for [`SLOW_AFTER`] is closed (`1008`, with the
//! revision to resume from); at most [`MAX_STREAMS`] streams per replica; a ping every
//! [`PING_EVERY`], and a client silent for two of them is closed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::Caller;
use super::{AppState, Problem};
use crate::auth::Permission;
use crate::model::{now_millis, rfc3339};
use crate::store::{SessionState, Store, StoreError};

/// The subprotocol of the stream; chosen when the client offers it (so a token offered as a
/// subprotocol is not echoed back).
pub const PROTOCOL: &str = "vexil.events.v1";

/// A token offered as a subprotocol: `vexil.token.<token>`.
pub const TOKEN_PROTOCOL: &str = "vexil.token.";

/// Streams served at once by one replica; one more is answered `503`.
pub const MAX_STREAMS: usize = 256;

/// Messages queued per stream.
pub const QUEUE: usize = 256;

/// A client that leaves its queue full (or a write pending) this long is closed.
pub const SLOW_AFTER: Duration = Duration::from_secs(10);

/// A ping goes out this often; a client that answers nothing for two of them is closed.
pub const PING_EVERY: Duration = Duration::from_secs(20);

/// How often the store is read for changes and fleet events.
const POLL: Duration = Duration::from_millis(500);

/// How often the token is checked again (a revoked one ends the stream).
const REAUTH: Duration = Duration::from_secs(60);

/// Changes read per query.
const BATCH: i64 = 100;

/// Largest message a client may send (it has nothing to say but pongs and close).
const MAX_CLIENT_MESSAGE: usize = 4096;

pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(events))
}

/// The change stream of an environment (WebSocket). Messages are JSON text:
/// `{"type":"change","environment","revision","kind","action","keys","evaluators","actor","time"}`
/// per committed change; `{"type":"sidecar","event":"connected"|"acked"|"disconnected","environment",
/// "id","session_id","replica","revision","time"}` per fleet change; `{"type":"ready",
/// "environment","revision","incarnation"}` once the replay is done and live events follow;
/// `{"type":"reset","environment","revision","incarnation"}` when changes after `from_revision`
/// are no longer in the change log (or the environment has another incarnation): read the
/// environment again, then follow from there; `{"type":"gone"}` when the environment is deleted
/// (then the stream closes). Authenticate with `Authorization: Bearer`, or offer the
/// subprotocol `vexil.token.<token>` (plus `vexil.events.v1`, which is then chosen); never in the
/// query string.
#[utoipa::path(get, path = "/api/v1/environments/{env}/events", tag = "events",
    security(("bearer" = [])),
    params(("env" = String, Path, description = "Environment key"),
           ("from_revision" = Option<i64>, Query, description = "Replay the changes after this revision still in the change log first (else `reset`)"),
           ("Sec-WebSocket-Protocol" = Option<String>, Header, description = "`vexil.events.v1`, and/or `vexil.token.<token>` instead of `Authorization`")),
    responses((status = 101, description = "Switching to the WebSocket stream"),
               (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
               (status = 404, body = Problem), (status = 503, description = "Too many streams", body = Problem)))]
async fn events(
    State(state): State<Arc<AppState>>,
    Path(env): Path<String>,
    parts: Parts,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, Problem> {
    let from_revision = parse_query(parts.uri.query())?;
    let offered = offered_protocols(&parts.headers);
    let authorization = match parts.headers.get(header::AUTHORIZATION) {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| Problem::bad_request("Authorization is not valid text"))?
                .to_string(),
        ),
        None => offered
            .iter()
            .find_map(|p| p.strip_prefix(TOKEN_PROTOCOL))
            .map(|token| format!("Bearer {token}")),
    };
    let caller = Caller::authenticate(&parts, &state, authorization.as_deref()).await?;
    caller.require(Permission::Read, Some(&env))?;
    let upgrade = upgrade.map_err(|e| {
        Problem::new(
            e.status(),
            format!("expected a WebSocket upgrade: {}", e.body_text()),
        )
    })?;
    let environment = state.store.get_environment(&env).await?;
    let permit = state
        .streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| Problem {
            retry_after: Some(1),
            ..Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{MAX_STREAMS} change streams are open on this replica; retry later"),
            )
        })?;
    // The protocol answered must be one the client offered: ours when offered, else the token's.
    let chosen = if offered.iter().any(|p| p == PROTOCOL) {
        Some(PROTOCOL.to_string())
    } else {
        offered
            .iter()
            .find(|p| p.starts_with(TOKEN_PROTOCOL))
            .cloned()
    };
    let mut upgrade = upgrade
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE);
    if let Some(chosen) = chosen {
        upgrade = upgrade.protocols([chosen]);
    }
    let poller = state.pollers.get(&state.store, &env);
    let stream = Stream {
        state: state.clone(),
        poller,
        environment: env,
        incarnation: environment.incarnation,
        head: environment.revision,
        from_revision,
        authorization,
    };
    Ok(upgrade.on_upgrade(move |socket| async move {
        stream.serve(socket).await;
        drop(permit);
    }))
}

/// `from_revision` from the query; a token there is refused by name, so it is not logged twice.
fn parse_query(query: Option<&str>) -> Result<Option<i64>, Problem> {
    let mut from = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "from_revision" => {
                let n = value.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                    Problem::bad_request(format!(
                        "from_revision: expected a revision (a whole number, 0 or more), got {value:?}"
                    ))
                })?;
                if from.replace(n).is_some() {
                    return Err(Problem::bad_request("from_revision: given more than once"));
                }
            }
            "token" | "access_token" | "authorization" => {
                return Err(Problem::bad_request(format!(
                    "{name}: a token is not accepted in the query string (it would be logged); \
                     send Authorization: Bearer, or the WebSocket subprotocol {TOKEN_PROTOCOL}<token>"
                )));
            }
            other => {
                return Err(Problem::bad_request(format!(
                    "{other}: unknown query parameter (only from_revision)"
                )));
            }
        }
    }
    Ok(from)
}

/// The subprotocols the client offered, in order.
fn offered_protocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// What the producer hands the connection.
enum Out {
    /// A message; `revision` when it is a change (the resume point once sent).
    Event { text: String, revision: Option<i64> },
    /// Close with this code and reason.
    Close(u16, String),
}

/// One open stream.
struct Stream {
    state: Arc<AppState>,
    poller: Arc<Poller>,
    environment: String,
    incarnation: String,
    head: i64,
    from_revision: Option<i64>,
    authorization: Option<String>,
}

impl Stream {
    async fn serve(self, socket: WebSocket) {
        let (mut sink, mut incoming) = socket.split();
        let (tx, mut rx) = mpsc::channel::<Out>(QUEUE);
        let stop = CancellationToken::new();
        let slow = CancellationToken::new();
        let producer = tokio::spawn(
            Producer {
                store: self.state.store.clone(),
                ticks: self.poller.subscribe(),
                environment: self.environment.clone(),
                incarnation: self.incarnation.clone(),
                stale_after: self.state.config.fleet_stale_after,
                tx,
                slow: slow.clone(),
            }
            .run(self.head, self.from_revision, stop.clone()),
        );
        let shutdown = self.state.shutdown.clone();
        let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
        let mut reauth = tokio::time::interval_at(Instant::now() + REAUTH, REAUTH);
        let mut heard = Instant::now();
        // The revision of the last change sent: where the client resumes.
        let mut sent = self.from_revision.unwrap_or(self.head);
        let close: Option<(u16, String)> = loop {
            tokio::select! {
                // A slow client is closed before its queue is drained any further.
                biased;
                _ = shutdown.cancelled() => {
                    break Some((close_code::AWAY, "control is shutting down; reconnect".into()));
                }
                _ = slow.cancelled() => {
                    break Some((close_code::POLICY, format!(
                        "too slow: {QUEUE} messages waited more than {}s; resume with from_revision={sent}",
                        SLOW_AFTER.as_secs()
                    )));
                }
                out = rx.recv() => match out {
                    Some(Out::Event { text, revision }) => {
                        match tokio::time::timeout(SLOW_AFTER, sink.send(Message::Text(text.into()))).await {
                            Ok(Ok(())) => {
                                if let Some(r) = revision {
                                    sent = r;
                                }
                            }
                            Ok(Err(_)) => break None,
                            Err(_) => break Some((close_code::POLICY, format!(
                                "too slow: a message waited more than {}s; resume with from_revision={sent}",
                                SLOW_AFTER.as_secs()
                            ))),
                        }
                    }
                    Some(Out::Close(code, reason)) => break Some((code, reason)),
                    None => break None,
                },
                message = incoming.next() => match message {
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break None,
                    // Pongs (and anything else) show the client is there; it has nothing to say.
                    Some(Ok(_)) => heard = Instant::now(),
                },
                _ = ping.tick() => {
                    if heard.elapsed() > PING_EVERY * 2 {
                        break Some((close_code::POLICY, format!(
                            "no answer to pings for {}s", (PING_EVERY * 2).as_secs()
                        )));
                    }
                    if tokio::time::timeout(SLOW_AFTER, sink.send(Message::Ping(Default::default()))).await.is_err() {
                        break None;
                    }
                }
                _ = reauth.tick() => {
                    if let Err(e) = self.state.auth.authenticate(self.authorization.as_deref()).await
                        && !matches!(e, crate::auth::AuthError::Store(_))
                    {
                        break Some((close_code::POLICY, "the token is no longer valid".into()));
                    }
                }
            }
        };
        stop.cancel();
        if let Some((code, reason)) = close {
            let frame = CloseFrame {
                code,
                reason: reason.into(),
            };
            // As patient as with any message: a slow client that reads on gets the reason (and
            // the revision to resume from) after what was queued before it.
            let _ = tokio::time::timeout(SLOW_AFTER, sink.send(Message::Close(Some(frame)))).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), sink.close()).await;
        let _ = producer.await;
    }
}

/// Reads the store and queues the messages of one stream.
struct Producer {
    store: Store,
    /// The environment's shared poll.
    ticks: watch::Receiver<Arc<Tick>>,
    environment: String,
    incarnation: String,
    stale_after: Duration,
    tx: mpsc::Sender<Out>,
    slow: CancellationToken,
}

/// A fleet session as last seen: live, acknowledged revision.
type Seen = HashMap<String, (bool, i64)>;

impl Producer {
    async fn run(mut self, head: i64, from: Option<i64>, stop: CancellationToken) {
        let ended = tokio::select! {
            _ = stop.cancelled() => return,
            ended = self.stream(head, from) => ended,
        };
        if let Err(Ended::Closed(code, reason)) = ended {
            let _ = self.tx.try_send(Out::Close(code, reason));
        }
    }

    /// Replays (when asked), says `ready`, then streams until the connection or the store fails.
    async fn stream(
        &mut self,
        head: i64,
        from: Option<i64>,
    ) -> Result<std::convert::Infallible, Ended> {
        let mut cursor = match from {
            None => head,
            Some(from) => self.replay(from, head).await?,
        };
        // The fleet as it is before `ready`: what changes after `ready` is an event.
        let mut seen = self.fleet_baseline().await;
        self.ready(cursor).await?;
        loop {
            if self.ticks.changed().await.is_err() {
                // The poller ended: the replica is shutting down.
                return Err(Ended::Gone);
            }
            let tick = self.ticks.borrow_and_update().clone();
            // The poll read the fleet before the environment, and the changes are read after
            // both: an acknowledgement the fleet shows is of a commit the changes' read sees, so
            // a change comes before its acks. The store is asked for changes only when the
            // environment moved (or is gone, or failed): an idle stream costs it nothing.
            let moved = match &tick.environment {
                Ok(e) => e.revision > cursor || e.incarnation != self.incarnation,
                Err(_) => true,
            };
            if moved {
                cursor = self.changes(cursor).await?;
            }
            self.fleet(&mut seen, tick.fleet.clone()).await?;
        }
    }

    /// Queues a message; a queue that stays full marks the client slow.
    async fn send(&self, message: Value, revision: Option<i64>) -> Result<(), Ended> {
        let out = Out::Event {
            text: message.to_string(),
            revision,
        };
        match tokio::time::timeout(SLOW_AFTER, self.tx.send(out)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Ended::Gone),
            Err(_) => {
                self.slow.cancel();
                Err(Ended::Gone)
            }
        }
    }

    async fn ready(&self, revision: i64) -> Result<(), Ended> {
        self.send(
            json!({"type": "ready", "environment": self.environment, "revision": revision,
                   "incarnation": self.incarnation}),
            None,
        )
        .await
    }

    async fn reset(&mut self, revision: i64, incarnation: &str) -> Result<i64, Ended> {
        self.incarnation = incarnation.to_string();
        self.send(
            json!({"type": "reset", "environment": self.environment, "revision": revision,
                   "incarnation": incarnation}),
            Some(revision),
        )
        .await?;
        Ok(revision)
    }

    /// Replays the changes after `from` still in the change log (or says `reset`); where live
    /// streaming goes on from.
    async fn replay(&mut self, from: i64, head: i64) -> Result<i64, Ended> {
        if from > head {
            // A revision this incarnation never had.
            let incarnation = self.incarnation.clone();
            return self.reset(head, &incarnation).await;
        }
        let oldest = self.store.oldest_change(&self.environment).await?;
        if from < head && oldest.is_none_or(|oldest| oldest > from + 1) {
            let incarnation = self.incarnation.clone();
            return self.reset(head, &incarnation).await;
        }
        self.changes(from).await
    }

    /// Sends the changes after `cursor` (all of them, in batches); the new cursor.
    async fn changes(&mut self, mut cursor: i64) -> Result<i64, Ended> {
        loop {
            let environment = match self.store.get_environment(&self.environment).await {
                Ok(e) => e,
                Err(StoreError::NotFound(_)) => {
                    self.send(
                        json!({"type": "gone", "environment": self.environment}),
                        None,
                    )
                    .await?;
                    return Err(Ended::Closed(
                        close_code::NORMAL,
                        "the environment was deleted".into(),
                    ));
                }
                Err(e) => return Err(e.into()),
            };
            if environment.incarnation != self.incarnation {
                return self
                    .reset(environment.revision, &environment.incarnation)
                    .await;
            }
            if environment.revision <= cursor {
                return Ok(cursor);
            }
            let events = self
                .store
                .change_events(&self.environment, &self.incarnation, cursor, BATCH)
                .await?;
            if events.first().is_none_or(|e| e.revision != cursor + 1) {
                // Pruned meanwhile, or another incarnation since.
                return self
                    .reset(environment.revision, &environment.incarnation)
                    .await;
            }
            for e in events {
                self.send(
                    json!({"type": "change", "environment": self.environment,
                           "revision": e.revision, "kind": e.kind, "action": e.action,
                           "keys": e.keys, "evaluators": e.evaluators, "actor": e.actor,
                           "time": rfc3339(e.at)}),
                    Some(e.revision),
                )
                .await?;
                cursor = e.revision;
            }
        }
    }

    /// The fleet as it is: no events for what was there before the stream.
    async fn fleet_baseline(&self) -> Seen {
        let Some((sessions, now)) = self.read_fleet().await else {
            return Seen::new();
        };
        sessions
            .iter()
            .map(|s| {
                (
                    s.row.id.clone(),
                    (s.is_live(now, self.stale_after), s.row.acked_revision),
                )
            })
            .collect()
    }

    async fn read_fleet(&self) -> Option<Fleet> {
        read_fleet(&self.store, &self.environment).await
    }

    /// Sends what changed in the fleet since `seen`: sessions connected, acknowledgements,
    /// sessions ended (or gone stale). `seen` becomes the fleet as read (rows retention deleted
    /// leave it).
    async fn fleet(&self, seen: &mut Seen, read: Option<Fleet>) -> Result<(), Ended> {
        let Some((sessions, now)) = read else {
            return Ok(());
        };
        let mut next = Seen::with_capacity(sessions.len());
        for s in sessions.iter() {
            let live = s.is_live(now, self.stale_after);
            let acked = s.row.acked_revision;
            next.insert(s.row.id.clone(), (live, acked));
            let event = match seen.get(&s.row.id) {
                None if live => Some("connected"),
                Some((false, _)) if live => Some("connected"),
                Some((true, _)) if !live => Some("disconnected"),
                Some((true, was)) if acked > *was => Some("acked"),
                _ => None,
            };
            if let Some(event) = event {
                self.send(sidecar_event(event, s, now, self.stale_after), None)
                    .await?;
            }
        }
        *seen = next;
        Ok(())
    }
}

/// An environment's fleet as read, with when.
type Fleet = (Arc<Vec<SessionState>>, i64);

/// The fleet's sessions of `environment` now (`None`, logged, when the store cannot say).
async fn read_fleet(store: &Store, environment: &str) -> Option<Fleet> {
    let now = now_millis();
    match store.sessions(Some(environment)).await {
        Ok(sessions) => Some((Arc::new(sessions), now)),
        Err(e) => {
            tracing::warn!(error = %e, "change stream: could not read the fleet");
            None
        }
    }
}

/// One poll of an environment, shared by its streams.
pub(crate) struct Tick {
    /// The environment (`Err` when it is gone or the store failed: each stream then asks the
    /// store itself, and says `gone` or closes).
    environment: Result<crate::model::Environment, ()>,
    /// Its fleet (`None` when the store could not say).
    fleet: Option<Fleet>,
}

/// The environments' pollers of this replica: one per environment that has streams, however many
/// streams follow it, so 256 streams of one environment read the store twice a second, not 512
/// times.
#[derive(Default)]
pub struct Pollers {
    live: std::sync::Mutex<HashMap<String, std::sync::Weak<Poller>>>,
}

impl Pollers {
    /// The poller of `environment`, started when it has none.
    fn get(&self, store: &Store, environment: &str) -> Arc<Poller> {
        let mut live = self.live.lock().expect("pollers");
        if let Some(p) = live.get(environment).and_then(std::sync::Weak::upgrade) {
            return p;
        }
        live.retain(|_, p| p.strong_count() > 0);
        let p = Poller::start(store.clone(), environment.to_string());
        live.insert(environment.to_string(), Arc::downgrade(&p));
        p
    }
}

/// Polls one environment every [`POLL`] (and at once on a commit on this replica) and publishes
/// each poll to its streams. Stops when the last stream drops it.
pub(crate) struct Poller {
    rx: watch::Receiver<Arc<Tick>>,
    stop: CancellationToken,
}

impl Poller {
    fn start(store: Store, environment: String) -> Arc<Poller> {
        let (tx, rx) = watch::channel(Arc::new(Tick {
            environment: Err(()),
            fleet: None,
        }));
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            let mut commits = Some(store.subscribe());
            let mut tick = tokio::time::interval(POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let woken = async {
                    match commits.as_mut() {
                        Some(rx) => Some(rx.recv().await),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tick.tick() => {}
                    c = woken => match c {
                        Some(Ok(c)) if c.environment != environment => continue,
                        Some(Err(tokio::sync::broadcast::error::RecvError::Closed)) => {
                            commits = None;
                        }
                        _ => {}
                    },
                }
                // The fleet first: see `Producer::stream`.
                let fleet = read_fleet(&store, &environment).await;
                let environment = store.get_environment(&environment).await.map_err(|_| ());
                let _ = tx.send(Arc::new(Tick { environment, fleet }));
            }
        });
        Arc::new(Poller { rx, stop })
    }

    fn subscribe(&self) -> watch::Receiver<Arc<Tick>> {
        let mut rx = self.rx.clone();
        // The value before this subscription is not news to it.
        rx.mark_unchanged();
        rx
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn sidecar_event(event: &str, s: &SessionState, now: i64, stale_after: Duration) -> Value {
    let r = &s.row;
    let time = match event {
        "disconnected" => r.disconnected_at.unwrap_or(r.last_seen),
        "connected" => r.connected_since,
        _ => now,
    };
    json!({"type": "sidecar", "event": event, "environment": r.environment, "id": r.client_id,
           "session_id": r.id, "replica": r.replica, "revision": r.acked_revision,
           "stale": s.is_stale(now, stale_after), "time": rfc3339(time)})
}

/// Why a producer stopped.
enum Ended {
    /// The connection is gone (or marked slow).
    Gone,
    /// Close the stream with this code and reason.
    Closed(u16, String),
}

impl From<StoreError> for Ended {
    fn from(e: StoreError) -> Self {
        tracing::warn!(error = %e, "change stream: the store failed; closing");
        Ended::Closed(
            close_code::AGAIN,
            "the store is unavailable; reconnect with from_revision".into(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_takes_a_revision_and_never_a_token() {
        assert_eq!(parse_query(None).unwrap(), None);
        assert_eq!(parse_query(Some("from_revision=7")).unwrap(), Some(7));
        for (query, named) in [
            ("from_revision=-1", "from_revision: "),
            ("from_revision=x", "from_revision: "),
            ("from_revision=1&from_revision=2", "from_revision: "),
            ("token=vxl_secret", "token: "),
            ("access_token=vxl_secret", "access_token: "),
            ("other=1", "other: "),
        ] {
            let p = parse_query(Some(query)).unwrap_err();
            assert_eq!(p.status, 400);
            assert!(p.detail.starts_with(named), "{query}: {}", p.detail);
        }
    }

    #[test]
    fn offered_protocols_are_split_and_trimmed() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::SEC_WEBSOCKET_PROTOCOL,
            "vexil.events.v1, vexil.token.abc".parse().unwrap(),
        );
        headers.append(header::SEC_WEBSOCKET_PROTOCOL, "x".parse().unwrap());
        assert_eq!(
            offered_protocols(&headers),
            ["vexil.events.v1", "vexil.token.abc", "x"]
        );
    }
}
