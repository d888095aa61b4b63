//! The administrator's HTTP API under `/v1/admin/` (the `thonsync` admin
//! commands call it): registry, documents, changes, peers, refused uploads,
//! administrator edits and store figures.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sync_core::error::EditError;
use sync_core::ids::DocumentId;
use sync_core::registry::{check_load, load_detail, Place, Registry, AUDIT_LOAD, AUDIT_LOAD_REFUSED};
use sync_core::store::{ChangeMeta, PeerSummary, RefusedUpload, WriteBatch};
use sync_core::survey::Edit;
use sync_core::sync::ChangeRecord;

use sync_core::access::{edits_detail, AuditEvent, AUDIT_EDIT};

use crate::auth::AdminName;
use crate::error::{ApiError, ErrorCode};
use crate::state::now_ms;
use crate::sync_api::body_error;
use crate::AppState;
use sync_core::wire::RefusedSummary;

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::internal(format!("worker failed: {e}")))?
}

fn document_id(raw: &str) -> Result<DocumentId, ApiError> {
    raw.parse().map_err(|e: sync_core::error::IdError| {
        let mut err = ApiError::new(ErrorCode::BadRequest, e.to_string());
        err.body.field = Some("document".into());
        err
    })
}

/// `GET /v1/admin/registry`.
pub async fn get_registry(State(state): State<AppState>) -> Json<Vec<Place>> {
    Json(state.shared.registry.read().expect("registry").places().cloned().collect())
}

/// `?force=` on the registry load.
#[derive(Debug, Default, Deserialize)]
pub struct ForceQuery {
    /// Load even a registry that drops places holding survey data.
    #[serde(default)]
    pub force: bool,
}

/// `PUT /v1/admin/registry[?force=true]` with a CSV body. A registry that
/// drops places holding survey data is refused (`bad_registry`, naming them)
/// unless forced; every load and refusal (a malformed file too) is written to
/// the audit log.
pub async fn put_registry(
    State(state): State<AppState>,
    Extension(admin): Extension<AdminName>,
    Query(q): Query<ForceQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let body = body.map_err(|e| body_error(e, state.shared.limits.max_body_bytes))?;
    let audit = |action: &str, detail: String| AuditEvent {
        at: now_ms(),
        who: admin.who(),
        action: action.into(),
        subject: "registry".into(),
        detail,
    };
    let registry = match Registry::from_csv(&body[..]) {
        Ok(r) => r,
        Err(e) => {
            state.shared.audit_async(audit(AUDIT_LOAD_REFUSED, e.to_string())).await;
            return Err(ApiError::new(ErrorCode::BadRegistry, e.to_string()));
        }
    };
    let places: Vec<Place> = registry.places().cloned().collect();
    let n = places.len();
    let shared = state.shared.clone();
    let outcome = blocking(move || {
        let stored = shared.readers.with(|s| s.document_ids())?;
        let checked = {
            let current = shared.registry.read().expect("registry");
            check_load(&current, &registry, &stored, q.force)
        };
        let dropped = match checked {
            Ok(dropped) => dropped,
            Err(refused) => return Ok(Err(refused)),
        };
        shared.writer.run(move |s| s.put_places(&places))?;
        *shared.registry.write().expect("registry") = registry;
        Ok(Ok(dropped))
    })
    .await?;
    let (action, detail) = match &outcome {
        Ok(dropped) => (AUDIT_LOAD, load_detail(n, dropped)),
        Err(refused) => (AUDIT_LOAD_REFUSED, refused.to_string()),
    };
    state.shared.audit_async(audit(action, detail)).await;
    let dropped = outcome.map_err(|e| ApiError::new(ErrorCode::BadRegistry, e.to_string()))?;
    tracing::info!(places = n, dropped = dropped.len(), "registry replaced");
    Ok(Json(json!({ "places": n, "dropped": dropped })))
}

/// `GET /v1/admin/documents`: every stored document id.
pub async fn list_documents(State(state): State<AppState>) -> Result<Json<Vec<String>>, ApiError> {
    let shared = state.shared.clone();
    blocking(move || {
        let ids = shared.readers.with(|s| s.document_ids())?;
        Ok(Json(ids.iter().map(ToString::to_string).collect()))
    })
    .await
}

/// `GET /v1/admin/documents/{id}`: the document's `save()` bytes.
pub async fn get_document(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = document_id(&raw)?;
    let shared = state.shared.clone();
    let bytes = blocking(move || {
        if let Some(slot) = shared.docs.peek(&id) {
            if let Some(doc) = slot.lock().as_ref() {
                return Ok(doc.automerge().save());
            }
        }
        let doc =
            shared.readers.with(|s| sync_core::store::load_survey(s, &id, shared.admin_actor.clone()))?;
        doc.map(|d| d.automerge().save()).ok_or_else(|| {
            ApiError::new(ErrorCode::UnknownDocument, format!("{id} is not stored on this server"))
                .with_document(&id)
        })
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

/// `?document=` on the changes listing.
#[derive(Debug, Deserialize)]
pub struct DocumentQuery {
    /// Only this document's changes.
    pub document: Option<String>,
}

/// `GET /v1/admin/changes[?document=ID]`.
pub async fn list_changes(
    State(state): State<AppState>,
    Query(q): Query<DocumentQuery>,
) -> Result<Json<Vec<ChangeMeta>>, ApiError> {
    let id = q.document.as_deref().map(document_id).transpose()?;
    let shared = state.shared.clone();
    blocking(move || Ok(Json(shared.readers.with(|s| s.change_meta(id.as_ref()))?))).await
}

/// `GET /v1/admin/peers`.
pub async fn list_peers(State(state): State<AppState>) -> Result<Json<Vec<PeerSummary>>, ApiError> {
    let shared = state.shared.clone();
    blocking(move || Ok(Json(shared.readers.with(|s| s.peers())?))).await
}

/// A refused upload as the admin API shows it: the summary, plus the bytes
/// on the single-upload endpoint.
#[derive(Debug, Serialize, Deserialize)]
pub struct RefusedView {
    /// Everything but the bytes.
    #[serde(flatten)]
    pub summary: RefusedSummary,
    /// The bytes, only on the single-upload endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_base64: Option<String>,
}

fn refused_view(r: RefusedUpload, with_bytes: bool) -> RefusedView {
    RefusedView {
        summary: RefusedSummary::from(&r),
        bytes_base64: with_bytes.then(|| B64.encode(&r.upload.bytes)),
    }
}

/// `GET /v1/admin/refused`.
pub async fn list_refused(State(state): State<AppState>) -> Result<Json<Vec<RefusedView>>, ApiError> {
    let shared = state.shared.clone();
    blocking(move || {
        let all = shared.readers.with(|s| s.refused())?;
        Ok(Json(all.into_iter().map(|r| refused_view(r, false)).collect()))
    })
    .await
}

/// `GET /v1/admin/refused/{id}`.
pub async fn get_refused(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<RefusedView>, ApiError> {
    let shared = state.shared.clone();
    blocking(move || {
        let r = shared.readers.with(|s| s.refused_by_id(id))?;
        r.map(|r| Json(refused_view(r, true)))
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("refused upload {id} not found")))
    })
    .await
}

/// The body of `POST /v1/admin/documents/{id}/edits`.
#[derive(Debug, Deserialize)]
pub struct EditsBody {
    /// Applied together as one change.
    pub edits: Vec<Edit>,
}

fn edit_error(id: &DocumentId, e: EditError) -> ApiError {
    let (rule, field, household) = match &e {
        EditError::UnknownField { field, .. } => ("unknown_field", Some(field.clone()), None),
        EditError::WrongType { field, .. } => ("type", Some(field.clone()), None),
        EditError::WrongOperation { field, kind, .. } => (
            if *kind == "a counter" { "counter_only_increments" } else { "not_a_counter" },
            Some(field.clone()),
            None,
        ),
        EditError::NoHouseholds(_) => ("no_households", None, None),
        EditError::NoSuchHousehold { household, .. } => ("no_such_household", None, Some(household.clone())),
        EditError::Automerge(_) => ("automerge", None, None),
    };
    let mut err = ApiError::new(ErrorCode::EditRefused, e.to_string()).with_document(id);
    err.body.rule = Some(rule.into());
    err.body.field = field;
    err.body.household = household;
    err
}

/// `POST /v1/admin/documents/{id}/edits`: one change by the server's administrator actor.
pub async fn post_edits(
    State(state): State<AppState>,
    Extension(admin): Extension<AdminName>,
    Path(raw): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let body = body.map_err(|e| body_error(e, state.shared.limits.max_body_bytes))?;
    let id = document_id(&raw)?;
    let edits: EditsBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(ErrorCode::BadRequest, format!("the body is not {{\"edits\": [...]}}: {e}"))
    })?;
    let shared = state.shared.clone();
    let listed: Vec<Edit> = edits.edits.iter().take(20).cloned().collect();
    let hash = blocking(move || {
        let slot = shared.docs.slot(&id);
        let mut guard = slot.lock();
        let created = match shared.ensure_loaded(&id, &mut guard) {
            Ok(Some(c)) => c,
            Ok(None) => {
                return Err(ApiError::new(ErrorCode::UnknownDocument, format!("{id} is not in the registry"))
                    .with_document(&id))
            }
            Err(e) => return Err(ApiError::store(e)),
        };
        let doc = guard.as_mut().expect("loaded");
        let before = if created { Vec::new() } else { doc.heads() };
        let now = now_ms();
        let hash = match doc.apply(&edits.edits, now) {
            Ok(Some(h)) => h,
            Ok(None) => {
                if created {
                    *guard = None;
                }
                return Err(ApiError::new(ErrorCode::BadRequest, "no edits given"));
            }
            Err(e) => {
                // `apply` checks first and writes nothing on a refused edit, but it
                // may have added a genesis: reload from the store to be exact.
                *guard = None;
                return Err(edit_error(&id, e));
            }
        };
        let batch = WriteBatch {
            changes: doc
                .automerge()
                .get_changes(&before)
                .into_iter()
                .map(|c| ChangeRecord::new(&id, c))
                .collect(),
            ..Default::default()
        };
        if let Err(e) = shared.writer.commit(batch, now) {
            *guard = None;
            return Err(ApiError::store(e));
        }
        Ok(hash)
    })
    .await?;
    state
        .shared
        .audit_async(AuditEvent {
            at: now_ms(),
            who: admin.who(),
            action: AUDIT_EDIT.into(),
            subject: raw,
            detail: edits_detail(&hash.to_string(), &listed),
        })
        .await;
    Ok((StatusCode::OK, Json(json!({ "change": hash.to_string() }))))
}

/// `GET /v1/admin/store`.
pub async fn store_figures(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let shared = state.shared.clone();
    blocking(move || {
        let (size, docs) = shared.readers.with(|s| Ok((s.size_bytes()?, s.document_ids()?.len())))?;
        Ok(Json(json!({ "size_bytes": size.unwrap_or(0), "documents": docs })))
    })
    .await
}
