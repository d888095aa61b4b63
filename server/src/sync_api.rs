//! `POST /v1/sync`: one round of a device's exchange, for many documents.
//!
//! Each round: decode the device's messages, receive each into its
//! document with validation (a refused message is kept aside, the other
//! documents go on), generate the server's replies, then commit the new
//! changes, the refused bytes and the sessions' shared heads in one batch,
//! and only then answer. All of it runs on a blocking thread, after
//! [`admit`] let the request in (before its body was read) and a place in
//! the pool of rounds came free.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use rayon::prelude::*;
use sync_core::exchange::{Begin, HubEnv, HubError, HubExchange, Prepared};
use sync_core::ids::{check_id, DocumentId, PeerId};
use sync_core::store::{NewRefusedUpload, WriteBatch};
use sync_core::survey::SurveyDocument;
use sync_core::sync::{ChangeRecord, RefusalCode};

use crate::error::{ApiError, ErrorCode};
use sync_core::access::{AuditEvent, DeviceRecord};

use crate::auth::AuthedDevice;
use crate::state::{now_ms, ExchangeKey, ExchangeState, Shared};
use crate::wire::{SyncRequest, SyncResponse};
use crate::AppState;

/// Maps a body extraction failure to the error shape (413 for a body over the limit).
pub fn body_error(rejection: BytesRejection, limit: usize) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            ErrorCode::BodyTooLarge,
            format!("the request body is over {limit} bytes; split the documents across rounds or requests"),
        )
    } else {
        ApiError::new(ErrorCode::BadBody, rejection.body_text()).with_status(rejection.status())
    }
}

/// What a request got hold of, so that a panic while handling it can be
/// cleaned up: its exchange and the documents it locked.
#[derive(Default)]
pub struct Touched {
    /// The exchange, once known.
    exchange: Option<ExchangeKey>,
    /// The documents locked.
    documents: Vec<DocumentId>,
}

/// The sync endpoint.
pub async fn sync(
    State(state): State<AppState>,
    Extension(AuthedDevice(device)): Extension<AuthedDevice>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = std::time::Instant::now();
    let metrics_of = state.shared.clone();
    let response = sync_round(state, device, headers, body).await;
    metrics_of.metrics.round_seconds(started.elapsed());
    response
}

/// One sync request, answered; the refusals of the whole request are counted here.
async fn sync_round(
    state: AppState,
    device: DeviceRecord,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let refused = |e: ApiError| {
        state.shared.metrics.refused(&e.body.code);
        e.into_response()
    };
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return refused(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "a sync request is JSON: send `Content-Type: application/json` (gzip as Content-Encoding)",
        ));
    }
    let shared = state.shared.clone();
    let body = match body {
        Ok(b) => b,
        Err(e) => return refused(body_error(e, shared.limits.max_body_bytes)),
    };
    // Admitted by [`admit`] (one request per device); now a place in the
    // bounded pool of rounds (about the machine's size).
    match on_worker(&state, move |shared, touched| handle(shared, &device, &body, touched)).await {
        Ok((status, response)) => {
            (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), Json(response)).into_response()
        }
        Err(e) => refused(e),
    }
}

/// Runs a round's `work` on a blocking thread once a place in the pool of
/// rounds is free. A panic in it evicts the documents it locked and ends its
/// exchange, so the next round reloads them as stored; it answers `internal`.
pub(crate) async fn on_worker<F, T>(state: &AppState, work: F) -> Result<T, ApiError>
where
    F: FnOnce(&Shared, &Mutex<Touched>) -> Result<T, ApiError> + Send + 'static,
    T: Send + 'static,
{
    let shared = state.shared.clone();
    let Ok(_place) = shared.rounds_pool.clone().acquire_owned().await else {
        return Err(ApiError::internal("the server is shutting down"));
    };
    let touched = Arc::new(Mutex::new(Touched::default()));
    let mine = touched.clone();
    let outcome = tokio::task::spawn_blocking(move || work(&shared, &mine)).await;
    match outcome {
        Ok(result) => result,
        Err(e) => {
            // A panic while documents were locked: forget them and the
            // exchange, so the next request reloads them as stored.
            let touched = std::mem::take(&mut *touched.lock().unwrap_or_else(|p| p.into_inner()));
            for id in &touched.documents {
                state.shared.docs.evict(id);
            }
            if let Some(key) = touched.exchange {
                let shared = state.shared.clone();
                let _ = tokio::task::spawn_blocking(move || shared.forget_exchange(&key)).await;
            }
            tracing::error!(error = %e, documents = touched.documents.len(), "the sync worker failed; its documents were evicted");
            let mut err = ApiError::internal(
                "the server failed while handling this request; nothing of it was kept, the documents are as they were stored",
            );
            if let [only] = touched.documents.as_slice() {
                err = err.with_document(only);
            }
            Err(err)
        }
    }
}

/// Middleware of `/v1/sync`, after authentication and before the body is
/// read: one request per device at a time (a device, or a stolen token used
/// from many connections, gets at most one place and one worker thread),
/// a lease among the devices whose exchanges may hold documents
/// ([`crate::leases`]), and at most
/// [`crate::state::Limits::max_admitted_syncs`] requests past this point. Devices beyond them wait here holding a connection, not
/// their upload in memory, so memory follows the limit, not the devices
/// syncing at once.
pub async fn admit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(AuthedDevice(device)) = req.extensions().get::<AuthedDevice>().cloned() else {
        return ApiError::internal("a sync request reached admission unauthenticated").into_response();
    };
    let shared = state.shared.clone();
    let _turn = shared.device_turn(&device.id).await;
    let Some(_lease) = shared.leases.enter(&device.id, |idle| shared.unpin_devices(idle)).await else {
        return ApiError::internal("the server is shutting down").into_response();
    };
    let Ok(_admitted) = shared.admitted_syncs.clone().acquire_owned().await else {
        return ApiError::internal("the server is shutting down").into_response();
    };
    next.run(req).await
}

fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::Forbidden, message)
}

fn audit_event(who: &str, action: &str, subject: &str, detail: String) -> AuditEvent {
    AuditEvent {
        at: now_ms(),
        who: who.to_owned(),
        action: action.to_owned(),
        subject: subject.to_owned(),
        detail,
    }
}

/// Keeps a body that is not a sync request aside, and says why.
fn refuse_body(shared: &Shared, body: &[u8], source: Option<String>, why: String) -> ApiError {
    let mut batch = WriteBatch::default();
    batch.refused.push(NewRefusedUpload {
        source,
        document: None,
        code: RefusalCode::Undecodable,
        reason: why.clone(),
        bytes: body.to_vec(),
        received_at: now_ms(),
    });
    let mut err = ApiError::new(ErrorCode::BadRequest, why);
    match shared.writer.commit(batch, now_ms()) {
        Ok(summary) => err.body.refused_upload = summary.first_refused_id,
        Err(e) => return ApiError::store(e),
    }
    err
}

fn handle(
    shared: &Shared,
    record: &DeviceRecord,
    body: &[u8],
    touched: &Mutex<Touched>,
) -> Result<(u16, SyncResponse), ApiError> {
    let who = format!("device:{}", record.id);
    let request: SyncRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            let err = refuse_body(
                shared,
                body,
                Some(record.id.clone()),
                format!("the body is not a sync request: {e}"),
            );
            let kept = err
                .body
                .refused_upload
                .map(|id| format!(", kept as refused upload {id}"))
                .unwrap_or_default();
            shared.audit(vec![audit_event(
                &who,
                "upload.refused",
                "-",
                format!("{}: {}{kept}", err.body.code, err.body.message),
            )]);
            return Err(err);
        }
    };
    let rules = RoundRules { max_rounds: shared.limits.max_rounds, only_named: false };
    // The device's turn is the request's: `admit` holds it until the answer.
    play(shared, record, &request, rules, None, touched).map(|played| (played.status, played.response))
}

/// What a round holds while it is judged and hands on once its batch is
/// queued for its commit, by dropping it: `/v1/repo` passes its device's
/// turn, so the device's next round is judged while this one commits.
/// `/v1/sync` passes none: its turn lasts the whole request.
pub(crate) type Handoff = Option<Box<dyn Send>>;

/// How [`play`] differs between its two callers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RoundRules {
    /// The rounds a new exchange may take (`/v1/sync`: the limit; `/v1/repo`:
    /// none, a socket's exchanges live as long as the socket).
    pub max_rounds: u32,
    /// Play only the documents the request names (`/v1/repo`, whose frames
    /// come one document at a time), not every document of the exchange.
    pub only_named: bool,
}

/// A round [`play`]ed: its answer, and the server's heads of each document
/// it answered for as they were when its message was made.
pub(crate) struct Played {
    pub status: u16,
    pub response: SyncResponse,
    /// What each answer's message reflects: a change committed by another
    /// device after it is not in it, even if the heads read later are. A
    /// repeated round's answer, made before, has none.
    pub heads: Vec<(DocumentId, Vec<sync_core::automerge::ChangeHash>)>,
}

/// Plays one round of `request` for the authenticated device `record`: the
/// scope check, the hub, the commit, then the answer (nothing answered
/// before the commit). `/v1/sync` after parsing its body, and `/v1/repo`
/// for the messages of its socket, both run this, each with its [`RoundRules`].
/// `handoff` is dropped once the round's batch is in the writer's queue
/// (or when the round ends, if it has nothing to commit).
pub(crate) fn play(
    shared: &Shared,
    record: &DeviceRecord,
    request: &SyncRequest,
    rules: RoundRules,
    mut handoff: Handoff,
    touched: &Mutex<Touched>,
) -> Result<Played, ApiError> {
    let who = format!("device:{}", record.id);
    if let Some(named) = request.device.as_deref().filter(|d| *d != record.id) {
        let mut err = forbidden(format!(
            "the request names device {named:?} but its token is device {:?}'s",
            record.id
        ));
        err.body.field = Some("device".into());
        return Err(err);
    }
    let device =
        PeerId::new(record.id.as_str()).map_err(|e| ApiError::internal(format!("device id: {e}")))?;
    check_id("exchange id", &request.exchange).map_err(|e| {
        let mut err = ApiError::new(ErrorCode::BadRequest, e.to_string());
        err.body.field = Some("exchange".into());
        err
    })?;
    if request.documents.len() > shared.limits.max_documents {
        return Err(ApiError::new(
            ErrorCode::TooManyDocuments,
            format!(
                "{} documents in one request; at most {} are accepted, split them across exchanges",
                request.documents.len(),
                shared.limits.max_documents
            ),
        ));
    }
    let mut named: Vec<DocumentId> = Vec::with_capacity(request.documents.len());
    for entry in &request.documents {
        named.push(entry.document.parse().map_err(|e: sync_core::error::IdError| {
            let mut err = ApiError::new(ErrorCode::BadRequest, e.to_string());
            err.body.field = Some("documents[].document".into());
            err
        })?);
    }
    // Scope: every document must be of the device's communes, or nothing of the request applies.
    let outside = {
        let registry = shared.registry.read().unwrap_or_else(|p| p.into_inner());
        named.iter().find(|id| !record.may_access(id, &registry)).cloned()
    };
    if let Some(id) = outside {
        tracing::warn!(device = %record.id, document = %id, "document outside the device's communes");
        shared.audit(vec![audit_event(
            &who,
            "access.denied",
            &id.to_string(),
            format!("sync of a document outside {}", record.communes.join(", ")),
        )]);
        return Err(forbidden(format!(
            "{id} is not in this device's communes ({}); nothing of this request was applied",
            record.communes.join(", ")
        ))
        .with_document(&id));
    }
    let key = (device.clone(), request.exchange.clone());
    touched.lock().unwrap_or_else(|p| p.into_inner()).exchange = Some(key.clone());
    let exchange = shared.exchange(key.clone());
    let mut ex = match exchange.lock() {
        Ok(g) => g,
        Err(poisoned) => {
            // A panic in an earlier round of this exchange: start it over.
            let mut g = poisoned.into_inner();
            *g = ExchangeState::default();
            exchange.clear_poison();
            g
        }
    };
    ex.last_used = Some(std::time::Instant::now());
    let limits = &shared.limits;
    let ex = &mut *ex;
    let hub = ex.hub.get_or_insert_with(|| {
        HubExchange::new(device.clone(), request.exchange.clone(), limits.max_documents, rules.max_rounds)
    });
    let env = ServerEnv { shared, device: &device };
    let now = now_ms();
    // Before `begin`, which may end the sessions of rounds played elsewhere.
    let waiting_before = hub.waiting();
    let mut round = match hub.begin(request, &named, &env, now).map_err(hub_error)? {
        Begin::Replay(status, response) => {
            tracing::debug!(%device, exchange = %request.exchange, round = request.round, "duplicate round answered again");
            shared.metrics.round(0, 0);
            return Ok(Played { status, response, heads: Vec::new() });
        }
        Begin::Round(round) => round,
    };

    // The exchange's documents stay loaded for its life (its slots are
    // pinned: the cache never evicts a slot in use). Each is locked in id
    // order (no deadlock between rounds) and played; one that did not change
    // is released at once, one that changed stays locked until the commit,
    // so memory never serves an uncommitted change and a shared document
    // (the commune's) is held only while it is really written.
    let ids = hub.documents();
    ex.slots.retain(|id, _| ids.contains(id));
    for id in &ids {
        ex.slots.entry(id.clone()).or_insert_with(|| shared.docs.slot(id));
    }
    // `/v1/repo` plays only the documents its frames name; `/v1/sync`
    // answers for every document of the exchange each round.
    let ids: Vec<DocumentId> =
        if rules.only_named { ids.into_iter().filter(|id| named.contains(id)).collect() } else { ids };
    touched.lock().unwrap_or_else(|p| p.into_inner()).documents = ids.clone();
    if let Some(fault) = shared.fault_document.as_deref() {
        if ids.iter().any(|id| id.to_string() == fault && round.has_message(id)) {
            panic!("fault injected while handling {fault}");
        }
    }
    let elsewhere = shared.waiting_of(&device).saturating_sub(waiting_before);
    let mut held: Vec<DocGuard<'_>> = Vec::new();
    let mut genesis: Vec<ChangeRecord> = Vec::new();
    let mut heads = Vec::new();
    let evict = |held: &mut Vec<DocGuard<'_>>| {
        for g in held.iter_mut() {
            **g = None;
        }
    };
    // A few documents at a time (each judged on a fork, so the fork and the
    // document are both in memory until it is kept): locked and loaded in
    // id order, their messages judged at once on the machine's cores, the
    // verdicts kept in id order.
    for chunk in ids.chunks(judged_at_once()) {
        let mut loaded: Vec<(&DocumentId, DocGuard<'_>, bool, Prepared)> = Vec::with_capacity(chunk.len());
        for id in chunk {
            let mut guard = ex.slots[id].lock();
            let created = match shared.ensure_loaded(id, &mut guard) {
                Ok(Some(created)) => created,
                // Known when the exchange started, gone now (registry replaced).
                Ok(None) => {
                    hub.forget(id);
                    continue;
                }
                Err(e) => {
                    held.extend(loaded.into_iter().map(|(_, g, _, _)| g));
                    evict(&mut held);
                    return Err(ApiError::store(e).with_document(id));
                }
            };
            let doc = guard.as_ref().expect("loaded");
            if created {
                // A created document holds its genesis alone: store it.
                genesis.push(ChangeRecord::of(doc, doc.genesis().change().clone()));
            }
            match hub.prepare(&mut round, id, &shared.limits.input, elsewhere, &env) {
                Ok(prepared) => loaded.push((id, guard, created, prepared)),
                Err(e) => {
                    held.extend(loaded.into_iter().map(|(_, g, _, _)| g));
                    held.push(guard);
                    evict(&mut held);
                    return Err(hub_error(e));
                }
            }
        }
        let verdicts: Vec<_> = loaded
            .par_iter()
            .map(|(_, guard, _, prepared)| match prepared {
                Prepared::Judge(judgement) => Some(judgement.run(guard.as_ref().expect("loaded"), &env)),
                _ => None,
            })
            .collect();
        for ((id, mut guard, created, prepared), verdict) in loaded.into_iter().zip(verdicts) {
            let doc = guard.as_mut().expect("loaded");
            let changed = match (prepared, verdict) {
                (Prepared::Judge(judgement), Some(verdict)) => {
                    hub.conclude(&mut round, *judgement, verdict, doc, elsewhere)
                }
                (Prepared::Reply, _) => {
                    hub.reply(&mut round, id, doc);
                    false
                }
                _ => continue,
            };
            heads.push(((*id).clone(), doc.heads()));
            if changed || created {
                held.push(guard);
            }
        }
    }
    let mut out = hub.close(round);
    shared.note_waiting(&device, waiting_before, out.waiting);
    let received = out.batch.changes.len();
    out.batch.changes.splice(0..0, genesis);

    let mut audits: Vec<AuditEvent> = Vec::new();
    for refusal in &out.refusals {
        tracing::info!(%device, document = %refusal.document, code = ?refusal.code, "message refused");
        shared.metrics.refused(&ErrorCode::from(refusal.code));
        if refusal.code == RefusalCode::ActorConflict {
            audits.push(audit_event(
                &who,
                "actor.conflict",
                &refusal.document.to_string(),
                refusal.message.clone(),
            ));
        }
    }
    let mut first_refused_id = None;
    if !out.batch.is_empty() {
        let batch = std::mem::take(&mut out.batch);
        let bindings = batch.actor_bindings.clone();
        let committed = shared.writer.queue(batch, now).and_then(|queued| {
            // In the queue: what comes after it commits after it, so the
            // device's next round may be judged now. The documents this
            // round changed stay locked, and its exchange held, until the commit.
            drop(handoff.take());
            queued.wait()
        });
        match committed {
            Ok(summary) => {
                shared.note_bindings(&bindings);
                first_refused_id = summary.first_refused_id;
            }
            Err(e) => {
                evict(&mut held);
                drop(held);
                let ended = std::mem::take(&mut *ex);
                shared.exchanges.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
                shared.end_exchanges(vec![(key, ended)]);
                return Err(ApiError::store(e));
            }
        }
    }
    drop(held);
    let messages = request.documents.iter().filter(|d| d.message.is_some()).count();
    shared.metrics.round(messages, received);
    let hub = ex.hub.as_mut().expect("the exchange's engine");
    let (status, response) = hub.finish(out, first_refused_id);
    if response.documents.iter().all(|d| d.message.is_none()) {
        // The server has nothing more to say: as far as it can tell the
        // exchange is done. Its documents and its device's lease go now; a
        // device with more to say queues again and finds them in the cache.
        ex.slots.clear();
        shared.leases.finish(&record.id);
    }
    for reply in &response.documents {
        if let Some(e) = &reply.error {
            let kept =
                e.refused_upload.map(|id| format!(", kept as refused upload {id}")).unwrap_or_default();
            audits.push(audit_event(
                &who,
                "upload.refused",
                &reply.document,
                format!("{}: {}{kept}", e.code, e.message),
            ));
        }
    }
    shared.audit(audits);
    Ok(Played { status, response, heads })
}

/// The store's and registry's answers the exchange engine asks for.
struct ServerEnv<'a> {
    shared: &'a Shared,
    device: &'a PeerId,
}

impl HubEnv for ServerEnv<'_> {
    fn is_known(&self, id: &DocumentId) -> Result<bool, String> {
        if self.shared.in_registry(id) || self.shared.docs.peek(id).is_some() {
            return Ok(true);
        }
        let genesis = sync_core::survey::genesis_change(id).hash().to_string();
        self.shared.readers.with(|s| s.has_change(id, &genesis)).map_err(|e| e.to_string())
    }

    fn persisted_state(&self, id: &DocumentId) -> Result<Option<Vec<u8>>, String> {
        self.shared.readers.with(|s| s.sync_state(self.device, id)).map_err(|e| e.to_string())
    }

    fn legacy_owner(&self, actor: &str) -> Result<Option<String>, String> {
        self.shared.actor_owner(actor).map_err(|e| e.to_string())
    }

    fn current_heads(&self, id: &DocumentId) -> Option<Vec<sync_core::automerge::ChangeHash>> {
        self.shared.current_heads(id)
    }
}

/// A loaded document's slot, locked.
type DocGuard<'a> = std::sync::MutexGuard<'a, Option<SurveyDocument>>;

/// How many documents of a round are judged at once: two per thread of the
/// pool that judges them, so a round keeps every core busy while at most
/// that many forks are in memory beside their documents.
fn judged_at_once() -> usize {
    rayon::current_num_threads().max(1) * 2
}

/// The error answer of a round that cannot be played.
fn hub_error(e: HubError) -> ApiError {
    let message = e.to_string();
    match e {
        HubError::OutOfStep { .. } => ApiError::new(ErrorCode::ExchangeOutOfStep, message),
        HubError::TooManyRounds { .. } => ApiError::new(ErrorCode::TooManyRounds, message),
        HubError::TooManyDocuments { .. } => ApiError::new(ErrorCode::TooManyDocuments, message),
        HubError::Store(e) => ApiError::store(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use std::sync::mpsc;
    use std::time::Duration;
    use sync_core::automerge::sync::SyncDoc as _;
    use sync_core::automerge::ActorId;
    use sync_core::wire::DocumentMessage;

    /// Only a guard against a hung test, never a timing assertion.
    const LONG: Duration = Duration::from_secs(30);

    /// Says on its channel when it is dropped: a stand-in for a device's turn.
    struct Probe(mpsc::Sender<()>);

    impl Drop for Probe {
        fn drop(&mut self) {
            let _ = self.0.send(());
        }
    }

    #[test]
    fn a_round_hands_on_once_its_batch_is_queued_and_answers_only_after_its_commit() {
        let dir = tempfile::tempdir().expect("a scratch folder");
        let db = crate::Database::parse(&dir.path().join("hub.db").to_string_lossy());
        let (state, writer_thread) =
            crate::open_state(&crate::Config::new(db, "127.0.0.1:0".parse().expect("addr"))).expect("state");
        let shared = state.shared.clone();

        // The writer is kept busy until the test says so.
        let (started_tx, started_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let writer = shared.writer.clone();
        let holder = std::thread::spawn(move || {
            writer.run(move |_| {
                let _ = started_tx.send(());
                let _ = release_rx.recv_timeout(LONG);
                Ok(())
            })
        });
        started_rx.recv_timeout(LONG).expect("the writer is held");

        // A device's first message for a village: the server creates the
        // document, so the round has its genesis to commit.
        let id: DocumentId =
            format!("village:nhu-co-01:{}", sync_core::ids::DEFAULT_ROUND).parse().expect("id");
        let device = DeviceRecord {
            id: "dev-hand-on".into(),
            name: "Tablet".into(),
            communes: vec!["nhu-co".into()],
            created_at: 0,
            enrolled_at: Some(0),
            revoked_at: None,
            last_seen: None,
            app_version: None,
        };
        let doc = SurveyDocument::create(id.clone(), ActorId::random());
        let message = doc
            .automerge()
            .generate_sync_message(&mut sync_core::automerge::sync::State::new())
            .expect("a first message")
            .encode();
        let request = SyncRequest {
            device: None,
            exchange: "hand-on".into(),
            round: 1,
            documents: vec![DocumentMessage {
                document: id.to_string(),
                message: Some(base64::engine::general_purpose::STANDARD.encode(message)),
                heads: None,
            }],
        };
        let (handed_tx, handed_rx) = mpsc::channel();
        let (played_tx, played_rx) = mpsc::channel();
        let player = {
            let shared = shared.clone();
            std::thread::spawn(move || {
                let rules = RoundRules { max_rounds: u32::MAX, only_named: true };
                let handoff: Handoff = Some(Box::new(Probe(handed_tx)));
                let outcome = play(&shared, &device, &request, rules, handoff, &Mutex::default());
                let _ = played_tx.send(outcome.map(|played| played.response));
            })
        };

        handed_rx.recv_timeout(LONG).expect("the round hands on while its commit still waits for the writer");
        assert!(
            played_rx.try_recv().is_err(),
            "the round has not answered: the writer has not committed its batch"
        );
        let genesis = sync_core::survey::genesis_change(&id).hash().to_string();
        let stored = |shared: &Shared| shared.readers.with(|s| s.has_change(&id, &genesis)).expect("read");
        assert!(!stored(&shared), "nothing is committed while the writer is held");

        release_tx.send(()).expect("release the writer");
        holder.join().expect("no panic").expect("the held job");
        let response = played_rx.recv_timeout(LONG).expect("an answer after the commit").expect("played");
        assert_eq!(response.documents.len(), 1, "{response:?}");
        assert!(response.documents[0].error.is_none(), "{response:?}");
        assert!(stored(&shared), "the answer came after the genesis was committed");
        player.join().expect("no panic");
        drop((shared, state));
        writer_thread.join();
    }
}
