//! The administrator's device endpoints under `/v1/admin/`: add, list,
//! revoke and rotate devices, the audit log, and which device each actor
//! id belongs to (so history names surveyors).

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::Extension;
use axum::Json;
use serde::{Deserialize, Serialize};
use sync_core::access::{AuditEvent, DeviceRecord};
use sync_core::devices::{add_device, revoke_device, rotate_device, AccessError};
use sync_core::store::Store;

use crate::auth::AdminName;
use crate::error::{ApiError, ErrorCode};
use crate::state::now_ms;
use crate::AppState;

/// The body of `POST /v1/admin/devices`.
#[derive(Debug, Serialize, Deserialize)]
pub struct AddDevice {
    /// A name a person recognises: the surveyor and the phone.
    pub name: String,
    /// The communes the device may sync (commune ids of the registry).
    pub communes: Vec<String>,
}

/// A device with its one-time enrollment code.
#[derive(Debug, Serialize, Deserialize)]
pub struct DeviceWithCode {
    /// The device.
    pub device: DeviceRecord,
    /// The one-time enrollment code, shown only now.
    pub code: String,
}

async fn on_writer<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&mut dyn Store) -> Result<T, AccessError> + Send + 'static,
) -> Result<T, ApiError> {
    let shared = state.shared.clone();
    tokio::task::spawn_blocking(move || shared.writer.run(move |s| Ok(f(s))))
        .await
        .map_err(|e| ApiError::internal(format!("worker failed: {e}")))?
        .map_err(ApiError::store)?
        .map_err(ApiError::from)
}

/// `POST /v1/admin/devices`.
pub async fn add(
    State(state): State<AppState>,
    Extension(admin): Extension<AdminName>,
    body: Bytes,
) -> Result<Json<DeviceWithCode>, ApiError> {
    let req: AddDevice = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!("the body is not {{\"name\", \"communes\": [...]}}: {e}"),
        )
    })?;
    let registry = state.shared.registry.read().expect("registry").clone();
    let who = admin.who();
    let (device, code) = on_writer(&state, move |s| {
        add_device(s, &registry, &req.name, &req.communes, &who, now_ms(), rand::random())
    })
    .await?;
    tracing::info!(device = %device.id, name = %device.name, "device added");
    Ok(Json(DeviceWithCode { device, code }))
}

/// `GET /v1/admin/devices`.
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<DeviceRecord>>, ApiError> {
    let shared = state.shared.clone();
    tokio::task::spawn_blocking(move || Ok(Json(shared.readers.with(|s| s.devices())?)))
        .await
        .map_err(|e| ApiError::internal(format!("worker failed: {e}")))?
}

/// `POST /v1/admin/devices/{id}/revoke`.
pub async fn revoke(
    State(state): State<AppState>,
    Extension(admin): Extension<AdminName>,
    Path(id): Path<String>,
) -> Result<Json<DeviceRecord>, ApiError> {
    let who = admin.who();
    let device = on_writer(&state, move |s| revoke_device(s, &id, &who, now_ms())).await?;
    tracing::info!(device = %device.id, "device revoked");
    Ok(Json(device))
}

/// `POST /v1/admin/devices/{id}/rotate`.
pub async fn rotate(
    State(state): State<AppState>,
    Extension(admin): Extension<AdminName>,
    Path(id): Path<String>,
) -> Result<Json<DeviceWithCode>, ApiError> {
    let who = admin.who();
    let (device, code) =
        on_writer(&state, move |s| rotate_device(s, &id, &who, now_ms(), rand::random())).await?;
    tracing::info!(device = %device.id, "device token rotated");
    Ok(Json(DeviceWithCode { device, code }))
}

/// `?limit=` on the audit log.
#[derive(Debug, Deserialize)]
pub struct LimitQuery {
    /// Newest events shown (default 100, at most 10 000).
    pub limit: Option<usize>,
}

/// `GET /v1/admin/audit?limit=N`: newest first.
pub async fn audit(
    State(state): State<AppState>,
    Query(q): Query<LimitQuery>,
) -> Result<Json<Vec<AuditEvent>>, ApiError> {
    let limit = q.limit.unwrap_or(100).min(10_000);
    let shared = state.shared.clone();
    tokio::task::spawn_blocking(move || Ok(Json(shared.readers.with(|s| s.audit(limit))?)))
        .await
        .map_err(|e| ApiError::internal(format!("worker failed: {e}")))?
}

/// `GET /v1/admin/actors`: `[[actor, device], ...]`.
pub async fn actors(State(state): State<AppState>) -> Result<Json<Vec<(String, String)>>, ApiError> {
    let shared = state.shared.clone();
    tokio::task::spawn_blocking(move || Ok(Json(shared.readers.with(|s| s.actor_devices())?)))
        .await
        .map_err(|e| ApiError::internal(format!("worker failed: {e}")))?
}
