//! Who may call what: device tokens for the device API, administrator
//! tokens for `/v1/admin/`, one-time enrollment codes exchanged for device
//! tokens (`POST /v1/enroll`). The device-management steps themselves
//! (add, revoke, rotate, enroll, administrator tokens) are
//! `sync_core::devices`, which `thonsync` also runs directly on a database.
//!
//! **Invariant: secrets are stored only as hashes.** A token or code is
//! shown once, when it is made; the store keeps `hash_secret` of it.
//!
//! **Invariant: a device token never opens the admin API, and an
//! administrator token never opens the device API.** The prefixes differ
//! (`tsd_`, `tsa_`) and each is looked up only in its own table.
//!
//! **Invariant: revocation takes effect on the next request.** Every device
//! request reads the device record from the store; nothing about a
//! device's standing is cached in memory.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use sync_core::access::{
    check_token, hash_secret, parse_enrollment_code, CredentialKind, DeviceRecord, ADMIN_TOKEN_PREFIX,
    DEVICE_TOKEN_PREFIX,
};
use sync_core::devices::{enroll_checked, AccessError, EnrollCheck};

use crate::error::{ApiError, ErrorCode};
use crate::state::now_ms;
use crate::AppState;

/// The header a device reports its app version in.
pub const APP_VERSION_HEADER: &str = "x-thonsync-app-version";
/// Longest app version kept; longer ones are cut.
const MAX_APP_VERSION: usize = 64;
/// A device's `last_seen` is written at most this often (ms), so a sync
/// does not cost a write per request.
pub const SEEN_EVERY_MS: i64 = 60_000;

/// The device a request was authenticated as (a request extension).
#[derive(Clone, Debug)]
pub struct AuthedDevice(pub DeviceRecord);

/// The administrator a request was authenticated as (a request extension).
#[derive(Clone, Debug)]
pub struct AdminName(pub String);

impl AdminName {
    /// How the audit log names this administrator.
    pub fn who(&self) -> String {
        format!("admin:{}", self.0)
    }
}

impl From<AccessError> for ApiError {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::NoName | AccessError::NoCommunes => {
                ApiError::new(ErrorCode::BadRequest, e.to_string())
            }
            AccessError::UnknownCommune(_) => {
                ApiError::new(ErrorCode::UnknownCommune, e.to_string()).with_status(StatusCode::BAD_REQUEST)
            }
            AccessError::UnknownDevice(_) => ApiError::new(ErrorCode::UnknownDevice, e.to_string()),
            // Rotating a revoked device: 409, as the protocol gives it.
            AccessError::Revoked(_) => {
                ApiError::new(ErrorCode::Revoked, e.to_string()).with_status(StatusCode::CONFLICT)
            }
            AccessError::InvalidCode => ApiError::new(ErrorCode::InvalidEnrollmentCode, e.to_string()),
            // Checked before the code is spent: the surveyor retries with the same code.
            AccessError::CommuneNotAllowed { .. } | AccessError::OtherDevice { .. } => {
                ApiError::new(ErrorCode::Forbidden, e.to_string())
            }
            AccessError::Store(s) => ApiError::from(s),
        }
    }
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, message)
}

/// The app version a device reported, cleaned (printable ASCII, bounded).
pub fn app_version(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(APP_VERSION_HEADER)?.to_str().ok()?;
    let v: String = v.chars().filter(|c| c.is_ascii_graphic() || *c == ' ').take(MAX_APP_VERSION).collect();
    (!v.trim().is_empty()).then(|| v.trim().to_owned())
}

/// The device a device token (already checked to be one) names, if it is
/// not revoked; notes it as seen. Blocking: it reads the store. The one
/// check of a device token, for `/v1/sync`, the registry and `/v1/repo`
/// (at the upgrade and again while its socket lives).
pub fn device_for_token(
    shared: &crate::state::Shared,
    token: &str,
    version: Option<String>,
) -> Result<DeviceRecord, ApiError> {
    let now = now_ms();
    let hash = hash_secret(token);
    let device = shared
        .readers
        .with(|s| s.device_for_credential(CredentialKind::DeviceToken, &hash, now))?
        .ok_or_else(|| unauthorized("unknown device token; enroll the device again"))?;
    if device.revoked_at.is_some() {
        return Err(ApiError::new(
            ErrorCode::Revoked,
            "this device was revoked by the administrator; its uploaded data is kept",
        ));
    }
    shared.note_seen(&device, version, now);
    Ok(device)
}

/// Middleware of the device API: a valid, unrevoked device token, or 401.
/// Puts [`AuthedDevice`] into the request.
pub async fn require_device(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(token) = bearer(req.headers()).map(str::to_owned) else {
        return unauthorized("this endpoint needs `Authorization: Bearer tsd_...`, the token the device got at enrollment (`thonsync device init --code`)").into_response();
    };
    if check_token(&token, DEVICE_TOKEN_PREFIX, "device").is_err() {
        return unauthorized("not a device token; a device token starts with tsd_").into_response();
    }
    let version = app_version(req.headers());
    let shared = state.shared.clone();
    let found = tokio::task::spawn_blocking(move || device_for_token(&shared, &token, version))
        .await
        .unwrap_or_else(|e| Err(ApiError::internal(format!("authentication failed: {e}"))));
    match found {
        Ok(device) => {
            req.extensions_mut().insert(AuthedDevice(device));
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

/// Middleware of the admin API: a valid administrator token, or 401.
/// Puts [`AdminName`] into the request.
pub async fn require_admin(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(token) = bearer(req.headers()).map(str::to_owned) else {
        return unauthorized("the admin API needs `Authorization: Bearer tsa_...`; create a token with `thonsync admin create-token --db PATH --name NAME` on the server's machine").into_response();
    };
    if check_token(&token, ADMIN_TOKEN_PREFIX, "administrator").is_err() {
        return unauthorized("not an administrator token; an administrator token starts with tsa_")
            .into_response();
    }
    let shared = state.shared.clone();
    let found = tokio::task::spawn_blocking(move || -> Result<String, ApiError> {
        shared
            .readers
            .with(|s| s.admin_for_token(&hash_secret(&token)))?
            .ok_or_else(|| unauthorized("unknown administrator token"))
    })
    .await
    .unwrap_or_else(|e| Err(ApiError::internal(format!("authentication failed: {e}"))));
    match found {
        Ok(name) => {
            req.extensions_mut().insert(AdminName(name));
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

pub use sync_core::wire::{EnrollRequest, EnrollResponse};

/// Throttles `POST /v1/enroll` per client address and in total (see
/// [`crate::throttle`]): over the limit, 429 `too_many_requests` with
/// `Retry-After`, before the body is read. A successful enrollment gives
/// its attempt back, so only failures add up. Without the peer address
/// (the router mounted on a listener that does not hand in `ConnectInfo`)
/// every client shares one address bucket.
pub async fn throttle_enroll(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let ip = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let key = crate::throttle::address_key(ip);
    let throttle = &state.shared.enroll_throttle;
    let taken = throttle.lock().expect("throttle").take(&key, std::time::Instant::now());
    if let Err(wait) = taken {
        let secs = crate::throttle::retry_after_secs(wait);
        tracing::warn!(client = %ip, retry_after = secs, "enrollment attempts throttled");
        let mut resp = ApiError::new(
            ErrorCode::TooManyRequests,
            format!("too many enrollment attempts; try again in {secs} s"),
        )
        .into_response();
        resp.headers_mut().insert(axum::http::header::RETRY_AFTER, secs.into());
        return resp;
    }
    let resp = next.run(req).await;
    if resp.status().is_success() {
        throttle.lock().expect("throttle").give_back(&key, std::time::Instant::now());
    }
    resp
}

/// `POST /v1/enroll`.
pub async fn enroll_endpoint(State(state): State<AppState>, body: axum::body::Bytes) -> Response {
    let request: EnrollRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return ApiError::new(
                ErrorCode::BadRequest,
                format!("the body is not {{\"code\": \"...\"}}: {e}"),
            )
            .into_response()
        }
    };
    let code = match parse_enrollment_code(&request.code) {
        Ok(c) => c,
        Err(e) => {
            return ApiError::new(ErrorCode::BadEnrollmentCode, e.to_string())
                .with_field("code")
                .into_response();
        }
    };
    let version = request
        .app_version
        .map(|v| v.chars().filter(|c| c.is_ascii_graphic() || *c == ' ').take(MAX_APP_VERSION).collect());
    let check = EnrollCheck { commune: request.commune, device: request.device };
    let shared = state.shared.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        shared.writer.run(move |s| Ok(enroll_checked(s, &code, &check, version, now_ms(), rand::random())))
    })
    .await;
    match outcome {
        Ok(Ok(Ok((device, token)))) => {
            tracing::info!(device = %device.id, name = %device.name, "device enrolled");
            Json(EnrollResponse { device: device.id, name: device.name, token, communes: device.communes })
                .into_response()
        }
        Ok(Ok(Err(e))) => ApiError::from(e).into_response(),
        Ok(Err(e)) => ApiError::store(e).into_response(),
        Err(e) => ApiError::internal(format!("enrollment failed: {e}")).into_response(),
    }
}
