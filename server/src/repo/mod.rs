//! `GET /v1/repo`: automerge-repo's WebSocket protocol (v1) under Thôn
//! Sync's rules, so stock automerge-repo clients (JS `automerge-repo`,
//! Rust `samod`, …) sync the survey documents.
//!
//! The socket is only a transport: every `request` / `sync` frame becomes a
//! document's message in a round of an exchange of protocol v1 and is
//! played by `sync_api::play`, the code `POST /v1/sync` runs (scope,
//! the hub's inbound checks, type and actor rules, attribution, waiting
//! changes, refused bytes kept, the commit), so the server's answer to a
//! change, the sync message whose heads include it, leaves only after the
//! change is committed. Frames that arrive together are played as one round
//! per exchange (one commit each), up to what one `/v1/sync` request may
//! hold (`max_documents` frames; frames are added while under `max_body_bytes`). Up to [`MAX_IN_FLIGHT`] rounds of a
//! connection are under way at once, answered in the order they began: a
//! round hands its device's turn on once its batch is in the writer's queue,
//! so the next is judged while it commits (still one round judged per
//! device at a time). A connection's documents are grouped in
//! exchanges `repo-<random>-<n>` of at most [`EXCHANGE_DOCUMENTS`] each, with no
//! cap on their rounds (a round is bounded by its frames; a cap would reset
//! the sessions of a live connection, and with them make it resend); they
//! end with the connection (changes still waiting for a dependency are then
//! kept as refused uploads, as for any exchange).
//!
//! - **Authentication** at the upgrade: `Authorization: Bearer tsd_…`, or,
//!   for browsers (which cannot set headers on a WebSocket), `?token=tsd_…`.
//!   An administrator token never opens it. The token is checked again every
//!   [`RECHECK`]: a revoked or rotated device gets an `error` frame and the
//!   socket is closed (4401).
//! - **Addresses**: a document is named by [`sync_core::repo_url`]; one that
//!   is not a document of the device's communes in an open round is
//!   `doc-unavailable`, and nothing is created.
//! - **Refusals**: the first refusal of a document on a connection is sent
//!   as an `ephemeral` frame whose data is the error shape of
//!   `docs/protocol.md` (`{"error": {…}}`, CBOR); later frames of that
//!   document on the same connection are dropped unread, so a client that
//!   keeps resending a refused change costs one refusal per connection.
//! - **Pings**: every [`crate::state::Limits::repo_ping`] (20 s unless
//!   set), whatever else the socket carries. A client that answers no ping
//!   is not closed for it: a socket closes when its TCP connection fails,
//!   on `leave`, a bad frame, or a device no longer allowed.
//! - **Ephemeral** frames of a client, about a document it has open here,
//!   go to the other sockets that have it open ([`relay`]), within
//!   [`crate::state::Limits::max_ephemeral_bytes`] and
//!   [`crate::state::Limits::ephemeral_per_second`]; never stored.
//! - **Pushes**: every [`TICK`] the connection looks at the in-memory heads
//!   of the documents it synced; a document changed by anyone else gets a
//!   round of its own (the server's sync message, if the client lacks
//!   something).

mod frames;
pub mod relay;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::Deserialize;
use sync_core::access::{check_token, DeviceRecord, DEVICE_TOKEN_PREFIX};
use sync_core::automerge::ChangeHash;
use sync_core::ids::DocumentId;
use sync_core::repo_url::{parse_repo_id, repo_id, repo_id_bytes};
use sync_core::wire::{DocumentMessage, SyncRequest};

use crate::error::{ApiError, ErrorCode};
use crate::AppState;

pub use frames::{decode as decode_frame, Incoming, PROTOCOL_VERSION};

/// How often a connection looks for documents changed by others.
pub const TICK: Duration = Duration::from_millis(250);
/// How often a connection's token is checked again (revocation, rotation).
pub const RECHECK: Duration = Duration::from_secs(2);
/// How long a client has to send `join` after the upgrade.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// The peer id the server gives itself.
pub const SERVER_PEER: &str = "thonsync-server";
/// The close code of a socket whose device is no longer allowed.
pub const CLOSE_UNAUTHORIZED: u16 = 4401;
/// Rounds of one connection under way at once: one judged while those
/// before it commit. A round to begin beyond them first waits for the
/// oldest to be answered, and the connection reads no frame meanwhile.
pub const MAX_IN_FLIGHT: usize = 3;
/// Documents in one of a connection's exchanges, at most (or `max_documents`
/// if lower). The rounds of one exchange follow one another through their
/// commits; those of different exchanges overlap, so smaller exchanges keep
/// both cores judging while the writer commits (16 against 64: about 12 %
/// faster at 1 client × 100 villages, `bench --repo`; 8 was slower).
pub const EXCHANGE_DOCUMENTS: usize = 16;

/// `?token=` on the upgrade, for browsers.
#[derive(Debug, Deserialize)]
pub struct TokenQuery {
    /// A device token.
    pub token: Option<String>,
}

/// The endpoint: authenticate, then upgrade.
pub async fn connect(
    State(state): State<AppState>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let token = crate::auth::bearer(&headers).map(str::to_owned).or(query.token);
    let Some(token) = token else {
        return ApiError::new(
            ErrorCode::Unauthorized,
            "this endpoint needs the device token: `Authorization: Bearer tsd_...`, or `?token=tsd_...` where headers cannot be set (browsers)",
        )
        .into_response();
    };
    if check_token(&token, DEVICE_TOKEN_PREFIX, "device").is_err() {
        return ApiError::new(ErrorCode::Unauthorized, "not a device token; a device token starts with tsd_")
            .into_response();
    }
    let version = crate::auth::app_version(&headers);
    let shared = state.shared.clone();
    let checked = token.clone();
    let found =
        tokio::task::spawn_blocking(move || crate::auth::device_for_token(&shared, &checked, version))
            .await
            .unwrap_or_else(|e| Err(ApiError::internal(format!("authentication failed: {e}"))));
    let device = match found {
        Ok(device) => device,
        Err(e) => return e.into_response(),
    };
    let Some(socket_place) = SocketPlace::take(&state, &device.id) else {
        let max = state.shared.limits.max_sockets_per_device;
        return ApiError::new(
            ErrorCode::TooManyRequests,
            format!("this device already has {max} automerge-repo connections open, the most it may; close one first"),
        )
        .into_response();
    };
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(e) => {
            return ApiError::new(ErrorCode::BadRequest, format!("GET /v1/repo is a WebSocket: {e}"))
                .with_status(e.status())
                .into_response()
        }
    };
    let max = state.shared.limits.max_body_bytes;
    upgrade
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| async move {
            let _place = socket_place;
            let mut conn = Connection::new(state, device, token);
            conn.run(socket).await;
            conn.end().await;
        })
        .into_response()
}

/// One of a device's [`crate::state::Limits::max_sockets_per_device`]
/// places for an open socket; given back on drop.
struct SocketPlace {
    state: AppState,
    device: String,
}

impl SocketPlace {
    /// A place for `device`'s socket, if it has one left.
    fn take(state: &AppState, device: &str) -> Option<Self> {
        let mut open = state.shared.sockets.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(device.to_owned()).or_default();
        if *n >= state.shared.limits.max_sockets_per_device {
            return None;
        }
        *n += 1;
        Some(Self { state: state.clone(), device: device.to_owned() })
    }
}

impl Drop for SocketPlace {
    fn drop(&mut self) {
        let mut open = self.state.shared.sockets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.device) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.device);
            }
        }
    }
}

/// A document the connection has synced.
struct Synced {
    /// Its automerge-repo id, as the client names it.
    repo_id: String,
    /// The server's heads that the connection's last answer for it was
    /// made against ([`crate::sync_api::Played::heads`]).
    heads: Option<Vec<ChangeHash>>,
}

/// One client's socket.
struct Connection {
    state: AppState,
    device: DeviceRecord,
    token: String,
    /// The client's peer id, after `join`.
    client: String,
    /// automerge-repo ids → the device's documents (its communes, open rounds).
    addresses: HashMap<[u8; 16], DocumentId>,
    synced: BTreeMap<DocumentId, Synced>,
    /// Documents refused on this connection: their frames are dropped.
    refused: BTreeSet<DocumentId>,
    /// The connection's exchanges, `repo-<base>-<n>`: the last round of
    /// each, and each document's exchange (at most [`EXCHANGE_DOCUMENTS`] each).
    base: String,
    rounds: Vec<u32>,
    exchange_of: HashMap<DocumentId, usize>,
    /// The `ephemeral` frames sent.
    count: u64,
    /// A frame read while batching that must wait for the next round.
    held: Option<(DocumentId, Vec<u8>)>,
    /// The rounds under way, oldest first (answered in this order), and
    /// what the newest hands on when its batch is queued (the next round
    /// waits for it before taking the device's turn).
    in_flight: VecDeque<InFlight>,
    baton: Option<tokio::sync::oneshot::Receiver<()>>,
    /// The connection's place in the `ephemeral` relay, its channel, the
    /// pace of what it may have relayed, and the last count relayed of
    /// each of its client's sessions.
    relay_id: u64,
    relay_tx: tokio::sync::mpsc::Sender<relay::Relayed>,
    relay_rx: Option<tokio::sync::mpsc::Receiver<relay::Relayed>>,
    rate: relay::Rate,
    sessions: HashMap<String, u64>,
}

/// A round begun and not yet answered.
struct InFlight {
    /// Its documents: a push leaves them alone until it is answered.
    documents: Vec<DocumentId>,
    /// It, playing: its task ends after the round's commit.
    task: tokio::task::JoinHandle<Result<crate::sync_api::Played, ApiError>>,
}

/// What the loop does next.
enum Step {
    Go,
    Close(Option<(u16, String)>),
}

impl Connection {
    fn new(state: AppState, device: DeviceRecord, token: String) -> Self {
        let base: String = (0..8).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
        let (relay_id, relay_tx, relay_rx) = state.relay.join();
        let rate = relay::Rate::new(state.shared.limits.ephemeral_per_second);
        Self {
            state,
            device,
            token,
            client: String::new(),
            addresses: HashMap::new(),
            synced: BTreeMap::new(),
            refused: BTreeSet::new(),
            base,
            rounds: Vec::new(),
            exchange_of: HashMap::new(),
            count: 0,
            held: None,
            in_flight: VecDeque::new(),
            baton: None,
            relay_id,
            relay_tx,
            relay_rx: Some(relay_rx),
            rate,
            sessions: HashMap::new(),
        }
    }

    async fn run(&mut self, mut socket: WebSocket) {
        match tokio::time::timeout(JOIN_TIMEOUT, self.handshake(&mut socket)).await {
            Ok(Step::Go) => {}
            Ok(Step::Close(why)) => return close(&mut socket, why).await,
            Err(_) => return close(&mut socket, Some((1008, "no join in time".into()))).await,
        }
        tracing::info!(device = %self.device.id, client = %self.client, "repo client connected");
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut last_check, mut last_ping) = (Instant::now(), Instant::now());
        let Some(mut relayed) = self.relay_rx.take() else { return };
        loop {
            let step = tokio::select! {
                frame = socket.recv() => match frame {
                    Some(Ok(Message::Binary(bytes))) => self.on_frame(&mut socket, bytes.to_vec()).await,
                    Some(Ok(Message::Text(_))) => Step::Close(Some((1003, "frames are binary CBOR".into()))),
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => Step::Go, // ping, pong
                },
                Some(message) = relayed.recv() => self.deliver(&mut socket, message).await,
                outcome = next_outcome(&mut self.in_flight) => self.answer(&mut socket, outcome).await,
                _ = tick.tick() => {
                    if last_check.elapsed() >= RECHECK {
                        last_check = Instant::now();
                        match self.recheck().await {
                            Ok(()) => {}
                            Err(e) => {
                                let _ = socket.send(binary(frames::error(&e.body.message))).await;
                                return close(&mut socket, Some((CLOSE_UNAUTHORIZED, e.body.code.to_string()))).await;
                            }
                        }
                    }
                    if last_ping.elapsed() >= self.state.shared.limits.repo_ping {
                        last_ping = Instant::now();
                        if socket.send(Message::Ping(Default::default())).await.is_err() {
                            return;
                        }
                    }
                    self.push(&mut socket).await
                }
            };
            if let Step::Close(why) = step {
                return close(&mut socket, why).await;
            }
        }
    }

    /// `join` → `peer`, or `error` and close.
    async fn handshake(&mut self, socket: &mut WebSocket) -> Step {
        loop {
            let bytes = match socket.recv().await {
                Some(Ok(Message::Binary(b))) => b,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                _ => return Step::Close(None),
            };
            return match frames::decode(&bytes) {
                Ok(Incoming::Join { sender_id, versions }) => {
                    if !versions.iter().any(|v| v == PROTOCOL_VERSION) {
                        let message = format!("this server speaks protocol version {PROTOCOL_VERSION} only");
                        let _ = socket.send(binary(frames::error(&message))).await;
                        return Step::Close(Some((1002, "unsupported protocol version".into())));
                    }
                    self.client = sender_id.chars().take(256).collect();
                    if socket
                        .send(binary(frames::peer(SERVER_PEER, &self.client, &self.state.storage_id)))
                        .await
                        .is_err()
                    {
                        return Step::Close(None);
                    }
                    Step::Go
                }
                Ok(_) | Err(_) => {
                    let _ = socket.send(binary(frames::error("the first frame must be a join"))).await;
                    Step::Close(Some((1002, "expected join".into())))
                }
            };
        }
    }

    /// A frame after the handshake; `request` and `sync` frames that are
    /// already there are played with it, up to `max_documents` frames and
    /// `max_body_bytes` bytes, as one `/v1/sync` request could hold.
    async fn on_frame(&mut self, socket: &mut WebSocket, bytes: Vec<u8>) -> Step {
        let mut batch: BTreeMap<DocumentId, Vec<u8>> = BTreeMap::new();
        if let Step::Close(why) = self.take(socket, &bytes, &mut batch).await {
            return Step::Close(why);
        }
        let (max, max_bytes) = {
            let limits = &self.state.shared.limits;
            (limits.max_documents.max(1), limits.max_body_bytes)
        };
        let mut size = bytes.len();
        while self.held.is_none() && batch.len() < max && size < max_bytes {
            let more = match tokio::time::timeout(Duration::ZERO, socket.recv()).await {
                Ok(Some(Ok(Message::Binary(b)))) => b,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(Some(Ok(Message::Text(_)))) => {
                    return Step::Close(Some((1003, "frames are binary CBOR".into())))
                }
                Ok(_) => return Step::Close(None),
                Err(_) => break, // nothing more at hand
            };
            size += more.len();
            if let Step::Close(why) = self.take(socket, &more, &mut batch).await {
                return Step::Close(why);
            }
        }
        let step = self.play(socket, batch).await;
        if let (Step::Go, Some((id, data))) = (&step, self.held.take()) {
            return self.play(socket, BTreeMap::from([(id, data)])).await;
        }
        step
    }

    /// Reads one frame into the round being gathered (or answers it at once).
    async fn take(
        &mut self,
        socket: &mut WebSocket,
        bytes: &[u8],
        batch: &mut BTreeMap<DocumentId, Vec<u8>>,
    ) -> Step {
        match frames::decode(bytes) {
            Ok(Incoming::Sync { document_id, data }) => {
                let Some(id) = self.resolve(&document_id) else {
                    tracing::debug!(device = %self.device.id, document = %document_id, "doc-unavailable");
                    let frame = frames::doc_unavailable(SERVER_PEER, &self.client, &document_id);
                    return if socket.send(binary(frame)).await.is_ok() {
                        Step::Go
                    } else {
                        Step::Close(None)
                    };
                };
                if self.refused.contains(&id) {
                    return Step::Go; // told once on this connection; dropped unread
                }
                if !self.synced.contains_key(&id) {
                    self.state.relay.open(self.relay_id, &id, &self.relay_tx);
                    self.synced.insert(id.clone(), Synced { repo_id: document_id, heads: None });
                }
                match batch.entry(id) {
                    std::collections::btree_map::Entry::Occupied(e) => {
                        self.held = Some((e.key().clone(), data))
                    }
                    std::collections::btree_map::Entry::Vacant(e) => {
                        e.insert(data);
                    }
                }
                Step::Go
            }
            Ok(Incoming::Ephemeral { sender_id, document_id, session_id, count, data }) => {
                self.relay(bytes.len(), sender_id, &document_id, session_id, count, data);
                Step::Go
            }
            Ok(Incoming::Leave) => Step::Close(Some((1000, "leave".into()))),
            Ok(Incoming::Join { .. }) => Step::Go,
            Ok(Incoming::Other(kind)) => {
                tracing::trace!(device = %self.device.id, kind, "frame left alone");
                Step::Go
            }
            Err(e) => {
                let _ = socket.send(binary(frames::error(&e.to_string()))).await;
                Step::Close(Some((1007, "not an automerge-repo frame".into())))
            }
        }
    }

    /// The device's document an automerge-repo id names, if any: one of its
    /// communes' documents in an open survey round.
    fn resolve(&mut self, repo: &str) -> Option<DocumentId> {
        let bytes = parse_repo_id(repo)?;
        if let Some(id) = self.addresses.get(&bytes) {
            return Some(id.clone());
        }
        self.addresses.clear();
        let shared = &self.state.shared;
        let rounds: Vec<_> =
            shared.rounds.read().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect();
        let registry = shared.registry.read().unwrap_or_else(|p| p.into_inner());
        for commune in &self.device.communes {
            for round in &rounds {
                for id in registry.documents_for_commune(commune, round) {
                    self.addresses.insert(repo_id_bytes(&id), id);
                }
            }
        }
        self.addresses.get(&bytes).cloned()
    }

    /// Documents changed by others since the connection last played them.
    async fn push(&mut self, socket: &mut WebSocket) -> Step {
        let busy: HashSet<&DocumentId> = self.in_flight.iter().flat_map(|r| &r.documents).collect();
        let ids: Vec<DocumentId> = self
            .synced
            .keys()
            .filter(|id| !self.refused.contains(*id) && !busy.contains(id))
            .cloned()
            .collect();
        let mut batch = BTreeMap::new();
        for (id, now) in self.heads(ids).await {
            if now.is_some() && self.synced.get(&id).is_some_and(|s| s.heads != now) {
                batch.insert(id, Vec::new());
            }
        }
        if batch.is_empty() {
            return Step::Go;
        }
        self.play(socket, batch).await
    }

    /// The server's in-memory heads of `ids` ([`crate::state::Shared::current_heads`]),
    /// looked up on a blocking thread when they may read the store (a
    /// database several servers share).
    async fn heads(&self, ids: Vec<DocumentId>) -> Vec<(DocumentId, Option<Vec<ChangeHash>>)> {
        let shared = self.state.shared.clone();
        let look = move || {
            ids.into_iter()
                .map(|id| {
                    let heads = shared.current_heads(&id);
                    (id, heads)
                })
                .collect::<Vec<_>>()
        };
        if self.state.shared.shared_database {
            tokio::task::spawn_blocking(look).await.unwrap_or_default()
        } else {
            look()
        }
    }

    /// Plays `messages` (an empty one: no message, the server says what it
    /// has) through the code of `/v1/sync`, one round per exchange they
    /// belong to; their answers are sent as they come ([`Self::answer`]).
    /// Nothing is sent before the round's commit.
    async fn play(&mut self, socket: &mut WebSocket, messages: BTreeMap<DocumentId, Vec<u8>>) -> Step {
        let max = EXCHANGE_DOCUMENTS.min(self.state.shared.limits.max_documents).max(1);
        let mut by_exchange: BTreeMap<usize, BTreeMap<DocumentId, Vec<u8>>> = BTreeMap::new();
        for (id, data) in messages {
            let n = match self.exchange_of.get(&id) {
                Some(n) => *n,
                None => {
                    // The first exchange with room, else a new one.
                    let mut counts = vec![0usize; self.rounds.len()];
                    for n in self.exchange_of.values() {
                        counts[*n] += 1;
                    }
                    let n = counts.iter().position(|c| *c < max).unwrap_or_else(|| {
                        self.rounds.push(0);
                        self.rounds.len() - 1
                    });
                    self.exchange_of.insert(id.clone(), n);
                    n
                }
            };
            by_exchange.entry(n).or_default().insert(id, data);
        }
        for (n, messages) in by_exchange {
            if let Step::Close(why) = self.play_round(socket, n, messages).await {
                return Step::Close(why);
            }
        }
        Step::Go
    }

    /// Begins a round of exchange `n` (after answering the oldest round
    /// under way, if [`MAX_IN_FLIGHT`] are): a task that waits for the round
    /// before it to hand on, takes the device's turn, and plays.
    async fn play_round(
        &mut self,
        socket: &mut WebSocket,
        n: usize,
        messages: BTreeMap<DocumentId, Vec<u8>>,
    ) -> Step {
        while self.in_flight.len() >= MAX_IN_FLIGHT {
            let outcome = next_outcome(&mut self.in_flight).await;
            if let Step::Close(why) = self.answer(socket, outcome).await {
                return Step::Close(why);
            }
        }
        self.rounds[n] += 1;
        let request = SyncRequest {
            device: None,
            exchange: self.exchange(n),
            round: self.rounds[n],
            documents: messages
                .iter()
                .map(|(id, data)| DocumentMessage {
                    document: id.to_string(),
                    message: (!data.is_empty()).then(|| B64.encode(data)),
                    heads: None,
                })
                .collect(),
        };
        let (state, device) = (self.state.clone(), self.device.clone());
        let (hand_on, next) = tokio::sync::oneshot::channel::<()>();
        let before = self.baton.replace(next);
        let task = tokio::spawn(async move {
            if let Some(before) = before {
                let _ = before.await; // sent or dropped: the round before handed on
            }
            let shared = state.shared.clone();
            let turn = shared.device_turn(&device.id).await;
            let Ok(_admitted) = shared.admitted_syncs.clone().acquire_owned().await else {
                return Err(ApiError::internal("the server is shutting down"));
            };
            let handoff: crate::sync_api::Handoff = Some(Box::new((turn, hand_on)));
            crate::sync_api::on_worker(&state, move |shared, touched| {
                let rules = crate::sync_api::RoundRules { max_rounds: u32::MAX, only_named: true };
                crate::sync_api::play(shared, &device, &request, rules, handoff, touched)
            })
            .await
        });
        self.in_flight.push_back(InFlight { documents: messages.into_keys().collect(), task });
        Step::Go
    }

    /// Sends the answers of the oldest round under way: the server's sync
    /// messages, and a refusal (once per document and connection).
    async fn answer(
        &mut self,
        socket: &mut WebSocket,
        outcome: Result<crate::sync_api::Played, ApiError>,
    ) -> Step {
        let played = match outcome {
            Ok(played) => played,
            Err(e) => {
                tracing::warn!(device = %self.device.id, code = %e.body.code, "a repo round failed; closing the socket");
                let _ = socket.send(binary(frames::error(&e.body.message))).await;
                return Step::Close(Some((1011, e.body.code.to_string())));
            }
        };
        for reply in played.response.documents {
            let Ok(id) = reply.document.parse::<DocumentId>() else { continue };
            let repo = self.synced.get(&id).map(|s| s.repo_id.clone()).unwrap_or_else(|| repo_id(&id));
            if let Some(error) = reply.error {
                if !self.refused.insert(id.clone()) {
                    continue; // told already, by a round before this one
                }
                self.state.relay.close(self.relay_id, &id);
                let body = serde_json::json!({ "error": error });
                self.count += 1;
                let frame = frames::ephemeral(
                    SERVER_PEER,
                    &self.client,
                    &repo,
                    &self.base,
                    self.count,
                    &frames::json_to_cbor(&body),
                );
                if socket.send(binary(frame)).await.is_err() {
                    return Step::Close(None);
                }
                continue;
            }
            if let Some(message) = reply.message.and_then(|m| B64.decode(m).ok()) {
                if socket
                    .send(binary(frames::sync(SERVER_PEER, &self.client, &repo, &message)))
                    .await
                    .is_err()
                {
                    return Step::Close(None);
                }
            }
        }
        // The heads each answer was made against, not the heads now: a
        // change another device committed since is then pushed at the next
        // tick (reading them now would take it as sent already).
        for (id, heads) in played.heads {
            if let Some(synced) = self.synced.get_mut(&id) {
                synced.heads = Some(heads);
            }
        }
        Step::Go
    }

    fn exchange(&self, n: usize) -> String {
        format!("repo-{}-{n}", self.base)
    }

    /// An `ephemeral` frame of the client's: handed to the other sockets
    /// that have its document open, if it is the client's own (not one it
    /// passes on: the server handed that one out already), about a document
    /// it has open here, newer than the last of its session, within the
    /// size and the pace. Otherwise dropped, and counted.
    fn relay(
        &mut self,
        size: usize,
        sender_id: String,
        document_id: &str,
        session_id: String,
        count: u64,
        data: Vec<u8>,
    ) {
        let shared = self.state.shared.clone();
        let (metrics, limits) = (&shared.metrics, &shared.limits);
        if size > limits.max_ephemeral_bytes {
            return metrics.ephemeral_dropped("too_large", 1);
        }
        if sender_id != self.client {
            return metrics.ephemeral_dropped("not_author", 1);
        }
        let open =
            self.resolve(document_id).filter(|id| self.synced.contains_key(id) && !self.refused.contains(id));
        let Some(document) = open else {
            return metrics.ephemeral_dropped("not_open", 1);
        };
        if self.sessions.get(&session_id).is_some_and(|last| count <= *last) {
            return metrics.ephemeral_dropped("stale", 1);
        }
        if !self.rate.take(limits.ephemeral_per_second, Instant::now()) {
            return metrics.ephemeral_dropped("rate", 1);
        }
        if self.sessions.len() >= 16 && !self.sessions.contains_key(&session_id) {
            self.sessions.clear();
        }
        self.sessions.insert(session_id.clone(), count);
        let message = relay::Relayed { document, sender_id, session_id, count, data };
        let (handed, missed) = self.state.relay.publish(self.relay_id, message);
        metrics.ephemeral_relayed(handed);
        if missed > 0 {
            metrics.ephemeral_dropped("queue_full", missed);
        }
    }

    /// Another socket's `ephemeral` message, sent on if this socket still
    /// has the document open and its device may still see it.
    async fn deliver(&mut self, socket: &mut WebSocket, message: relay::Relayed) -> Step {
        let Some(repo) = self.synced.get(&message.document).map(|s| s.repo_id.clone()) else {
            return Step::Go;
        };
        if self.refused.contains(&message.document) || self.resolve(&repo).as_ref() != Some(&message.document)
        {
            return Step::Go;
        }
        let frame = frames::ephemeral(
            &message.sender_id,
            &self.client,
            &repo,
            &message.session_id,
            message.count,
            &message.data,
        );
        if socket.send(binary(frame)).await.is_err() {
            return Step::Close(None);
        }
        Step::Go
    }

    /// Ends the connection's exchanges (what waits for a dependency is kept
    /// as refused uploads).
    async fn end(&mut self) {
        // Rounds under way finish (their answers are not sent) before
        // their exchanges end.
        for round in std::mem::take(&mut self.in_flight) {
            let _ = round.task.await;
        }
        self.state.relay.leave(self.relay_id, self.synced.keys());
        let Ok(device) = sync_core::ids::PeerId::new(self.device.id.as_str()) else { return };
        let keys: Vec<_> = (0..self.rounds.len())
            .filter(|n| self.rounds[*n] > 0)
            .map(|n| (device.clone(), self.exchange(n)))
            .collect();
        self.rounds.clear();
        self.exchange_of.clear();
        let shared = self.state.shared.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for key in keys {
                shared.forget_exchange(&key);
            }
        })
        .await;
    }

    /// The token again: revoked, rotated or gone closes the socket; the
    /// device's communes are refreshed.
    async fn recheck(&mut self) -> Result<(), ApiError> {
        let shared = self.state.shared.clone();
        let token = self.token.clone();
        let device =
            tokio::task::spawn_blocking(move || crate::auth::device_for_token(&shared, &token, None))
                .await
                .unwrap_or_else(|e| Err(ApiError::internal(format!("authentication failed: {e}"))))?;
        if device.communes != self.device.communes {
            self.addresses.clear();
        }
        self.device = device;
        Ok(())
    }
}

/// The outcome of the oldest round under way, once it ends (never, while
/// none is). Cancel-safe: the round stays first until its outcome is taken.
async fn next_outcome(in_flight: &mut VecDeque<InFlight>) -> Result<crate::sync_api::Played, ApiError> {
    let Some(oldest) = in_flight.front_mut() else {
        return std::future::pending().await;
    };
    let outcome = (&mut oldest.task).await;
    in_flight.pop_front();
    outcome.unwrap_or_else(|e| Err(ApiError::internal(format!("a round's task failed: {e}"))))
}

fn binary(bytes: Vec<u8>) -> Message {
    Message::Binary(bytes.into())
}

async fn close(socket: &mut WebSocket, why: Option<(u16, String)>) {
    let frame = why.map(|(code, reason)| CloseFrame { code, reason: reason.into() });
    let _ = socket.send(Message::Close(frame)).await;
}
