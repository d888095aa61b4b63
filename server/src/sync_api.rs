//! `POST /v1/sync`: one round of a device's exchange, for many documents.
//!
//! Each round: decode the device's messages, receive each into its
//! document with validation (a refused message is kept aside, the other
//! documents go on), generate the server's replies, then commit the new
//! changes, the refused bytes and the sessions' shared heads in one batch,
//! and only then answer. All of it runs on a blocking thread.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use sync_core::ids::{check_id, DocumentId, PeerId};
use sync_core::store::{NewRefusedUpload, Store, WriteBatch};
use sync_core::sync::{ChangeRecord, DocSession, RefusalCode, Uploader};

use crate::error::{ApiError, ErrorBody, ErrorCode};
use sync_core::access::{AuditEvent, DeviceRecord};

use crate::auth::AuthedDevice;
use crate::state::{now_ms, ExchangeKey, ExchangeState, Shared};
use crate::wire::{DocumentReply, SyncRequest, SyncResponse};
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
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "a sync request is JSON: send `Content-Type: application/json` (gzip as Content-Encoding)",
        )
        .into_response();
    }
    let shared = state.shared.clone();
    let body = match body {
        Ok(b) => b,
        Err(e) => return body_error(e, shared.limits.max_body_bytes).into_response(),
    };
    // One sync request per device at a time: a device (or a stolen token
    // used from many connections) gets at most one worker thread.
    let _turn = shared.device_turn(&device.id).await;
    let touched = Arc::new(Mutex::new(Touched::default()));
    let mine = touched.clone();
    let outcome = tokio::task::spawn_blocking(move || handle(&shared, &device, &body, &mine)).await;
    match outcome {
        Ok(Ok((status, response))) => {
            (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), Json(response)).into_response()
        }
        Ok(Err(e)) => e.into_response(),
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
            err.into_response()
        }
    }
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

/// Queues the session's shared heads for the batch when they changed since
/// they were last persisted.
fn persist_session(
    batch: &mut WriteBatch,
    persisted: &mut BTreeMap<DocumentId, Vec<u8>>,
    device: &PeerId,
    id: &DocumentId,
    session: &DocSession,
) {
    let state = session.persisted();
    if persisted.get(id) != Some(&state) {
        batch.sync_states.push((device.clone(), id.clone(), state.clone()));
        persisted.insert(id.clone(), state);
    }
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
    if let Some((status, response)) = &ex.last_response {
        if response.round == request.round {
            tracing::debug!(%device, exchange = %request.exchange, round = request.round, "duplicate round answered again");
            return Ok((*status, response.clone()));
        }
    }
    if request.round != ex.round + 1 {
        return Err(ApiError::new(
            ErrorCode::ExchangeOutOfStep,
            format!(
                "round {} of exchange {} was not expected (last answered: {}); start a new exchange",
                request.round, request.exchange, ex.round
            ),
        ));
    }
    if request.round > shared.limits.max_rounds {
        return Err(ApiError::new(
            ErrorCode::TooManyRounds,
            format!(
                "an exchange may take at most {} rounds; start a new exchange to continue",
                shared.limits.max_rounds
            ),
        ));
    }

    let now = now_ms();
    let mut batch = WriteBatch::default();
    let mut replies: BTreeMap<DocumentId, DocumentReply> = BTreeMap::new();
    let mut incoming: BTreeMap<DocumentId, Vec<u8>> = BTreeMap::new();
    // (document, position in batch.refused) for refused ids after the commit.
    let mut refused_at: Vec<(DocumentId, usize)> = Vec::new();
    let mut messages = 0usize;
    let mut refusals = 0usize;
    let mut first_refusal: Option<DocumentId> = None;

    let mut refuse = |batch: &mut WriteBatch,
                      replies: &mut BTreeMap<DocumentId, DocumentReply>,
                      doc: &DocumentId,
                      code: RefusalCode,
                      body: ErrorBody,
                      bytes: Vec<u8>| {
        refused_at.push((doc.clone(), batch.refused.len()));
        batch.refused.push(NewRefusedUpload {
            source: Some(device.to_string()),
            document: Some(doc.to_string()),
            code,
            reason: body.message.clone(),
            bytes,
            received_at: now,
        });
        replies.insert(
            doc.clone(),
            DocumentReply { document: doc.to_string(), message: None, stored: 0, error: Some(body) },
        );
        first_refusal.get_or_insert(doc.clone());
    };

    for (entry, id) in request.documents.iter().zip(named) {
        let Some(text) = &entry.message else {
            ex.sessions.entry(id.clone()).or_default();
            continue;
        };
        messages += 1;
        let bytes = match B64.decode(text) {
            Ok(b) => b,
            Err(e) => {
                refusals += 1;
                let body =
                    ErrorBody::new(RefusalCode::Undecodable, format!("the message is not base64: {e}"))
                        .with_document(&id);
                refuse(
                    &mut batch,
                    &mut replies,
                    &id,
                    RefusalCode::Undecodable,
                    body,
                    text.as_bytes().to_vec(),
                );
                continue;
            }
        };
        let known = ex.sessions.contains_key(&id)
            || shared.in_registry(&id)
            || shared.docs.peek(&id).is_some()
            || shared
                .readers
                .with(|s| s.has_change(&id, &sync_core::survey::genesis_change(&id).hash().to_string()))?;
        if !known {
            refusals += 1;
            let body = ErrorBody::new(
                RefusalCode::UnknownDocument,
                if shared.rounds.read().unwrap_or_else(|p| p.into_inner()).contains(&id.round) {
                    format!("{id} is not in this server's registry; ask GET /v1/registry/communes/<commune> for the documents to sync")
                } else {
                    format!(
                        "survey round {} is not open on this server, so {id} cannot be created; an administrator opens it with `thonsync rounds open {}`",
                        id.round, id.round
                    )
                },
            )
            .with_document(&id);
            refuse(&mut batch, &mut replies, &id, RefusalCode::UnknownDocument, body, bytes);
            continue;
        }
        ex.sessions.entry(id.clone()).or_default();
        incoming.insert(id, bytes);
    }
    if ex.sessions.len() > shared.limits.max_documents {
        return Err(ApiError::new(
            ErrorCode::TooManyDocuments,
            format!(
                "an exchange may hold at most {} documents; split them across exchanges",
                shared.limits.max_documents
            ),
        ));
    }

    // Lock every document of the exchange in id order (no deadlock between exchanges).
    let ids: Vec<DocumentId> = ex.sessions.keys().cloned().collect();
    touched.lock().unwrap_or_else(|p| p.into_inner()).documents = ids.clone();
    let slots: Vec<_> = ids.iter().map(|id| shared.docs.slot(id)).collect();
    let mut guards: Vec<_> = slots.iter().map(|s| s.lock()).collect();
    let evict_all = |guards: &mut Vec<std::sync::MutexGuard<'_, Option<_>>>| {
        for g in guards.iter_mut() {
            **g = None;
        }
    };
    let mut fresh_sessions = Vec::new();
    for (id, guard) in ids.iter().zip(guards.iter_mut()) {
        match shared.ensure_loaded(id, guard) {
            Ok(Some(true)) => {
                let doc = guard.as_ref().expect("loaded");
                for change in doc.automerge().get_changes(&[]) {
                    batch.changes.push(ChangeRecord::new(id, change));
                }
            }
            Ok(Some(false)) => {}
            Ok(None) => {
                // Known when the exchange started, gone now (registry replaced): drop it.
                ex.sessions.remove(id);
                continue;
            }
            Err(e) => {
                evict_all(&mut guards);
                return Err(ApiError::store(e).with_document(id));
            }
        }
        if !ex.persisted.contains_key(id) {
            fresh_sessions.push(id.clone());
        }
    }
    for id in fresh_sessions {
        let saved = shared.readers.with(|s| s.sync_state(&device, &id))?;
        ex.sessions.insert(id.clone(), DocSession::resume(saved.as_deref()));
        ex.persisted.insert(id, saved.unwrap_or_default());
    }

    let ex = &mut *ex;
    let mut audits: Vec<AuditEvent> = Vec::new();
    for (id, guard) in ids.iter().zip(guards.iter_mut()) {
        let Some(session) = ex.sessions.get_mut(id) else { continue };
        let doc = guard.as_mut().expect("loaded");
        let mut reply = DocumentReply { document: id.to_string(), message: None, stored: 0, error: None };
        if let Some(bytes) = incoming.remove(id) {
            if shared.fault_document.as_deref() == Some(id.to_string().as_str()) {
                panic!("fault injected while handling {id}");
            }
            let before = session.waiting();
            let mut limits = shared.limits.input.clone();
            let elsewhere = shared.waiting_of(&device).saturating_sub(before);
            limits.max_waiting_per_document =
                limits.max_waiting_per_document.min(limits.max_waiting_per_device.saturating_sub(elsewhere));
            let legacy_owner = |actor: &str| shared.actor_owner(actor).map_err(|e| e.to_string());
            let uploader = Uploader { device: &record.id, limits: &limits, legacy_owner: &legacy_owner };
            match session.receive_from(doc, &bytes, &uploader) {
                Ok(received) => {
                    shared.note_waiting(&device, before, received.pending);
                    reply.stored = received.new_changes.len();
                    reply.message = received.reply.map(|m| B64.encode(m));
                    batch.changes.extend(received.new_changes);
                    batch.actor_bindings.extend(received.actors.into_iter().map(|a| (a, record.id.clone())));
                    persist_session(&mut batch, &mut ex.persisted, &device, id, session);
                    replies.insert(id.clone(), reply);
                    continue;
                }
                Err(refusal) => {
                    refusals += 1;
                    tracing::info!(%device, document = %id, code = ?refusal.code, "message refused");
                    ex.refused.insert(id.clone());
                    if refusal.code == RefusalCode::ActorConflict {
                        audits.push(audit_event(
                            &who,
                            "actor.conflict",
                            &id.to_string(),
                            refusal.message.clone(),
                        ));
                    }
                    let body = ErrorBody::from_refusal(&refusal);
                    refuse(&mut batch, &mut replies, id, refusal.code, body, bytes);
                    continue;
                }
            }
        }
        if ex.refused.contains(id) {
            continue;
        }
        match session.try_generate(doc) {
            Ok(message) => reply.message = message.map(|m| B64.encode(m)),
            Err(refusal) => {
                refusals += 1;
                ex.refused.insert(id.clone());
                let body = ErrorBody::from_refusal(&refusal);
                refuse(&mut batch, &mut replies, id, refusal.code, body, Vec::new());
                continue;
            }
        }
        persist_session(&mut batch, &mut ex.persisted, &device, id, session);
        replies.insert(id.clone(), reply);
    }

    if !batch.is_empty() {
        let committed_bindings = batch.actor_bindings.clone();
        match shared.writer.commit(std::mem::take(&mut batch), now) {
            Ok(summary) => {
                shared.note_bindings(&committed_bindings);
                if let Some(first) = summary.first_refused_id {
                    for (doc, pos) in &refused_at {
                        if let Some(r) = replies.get_mut(doc).and_then(|r| r.error.as_mut()) {
                            r.refused_upload = Some(first + *pos as i64);
                        }
                    }
                }
            }
            Err(e) => {
                evict_all(&mut guards);
                drop(guards);
                let ended = std::mem::take(&mut *ex);
                shared.exchanges.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
                shared.end_exchanges(vec![(key, ended)]);
                return Err(ApiError::store(e));
            }
        }
    }
    drop(guards);
    for reply in replies.values() {
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

    let error = if messages > 0 && refusals == messages {
        first_refusal.and_then(|d| replies.get(&d)).and_then(|r| r.error.clone())
    } else {
        None
    };
    let status = if error.is_some() { 422 } else { 200 };
    let response = SyncResponse {
        exchange: request.exchange.clone(),
        round: request.round,
        documents: replies.into_values().collect(),
        error,
    };
    ex.round = request.round;
    ex.last_response = Some((status, response.clone()));
    Ok((status, response))
}
