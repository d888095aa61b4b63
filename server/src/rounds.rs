//! The survey rounds this server knows, and `GET/POST /v1/admin/rounds`.
//!
//! A document (`village:<place>:<round>`) may be created only for a place of
//! the registry and a round the administrator opened, so a device naming
//! made-up rounds cannot make the server create documents. The rounds are
//! stored as setting [`ROUNDS_SETTING`] (a sorted JSON list) and held in
//! [`crate::state::Shared`] next to the registry. Rounds are only ever
//! opened, never closed: documents already stored stay syncable regardless.

use std::collections::BTreeSet;

use axum::body::Bytes;
use axum::extract::State;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use sync_core::access::AuditEvent;
use sync_core::ids::{Round, DEFAULT_ROUND};
use sync_core::store::{Store, StoreError};

use crate::auth::AdminName;
use crate::error::{ApiError, ErrorCode};
use crate::state::now_ms;
use crate::AppState;

/// The store setting that lists the known rounds.
pub const ROUNDS_SETTING: &str = "rounds";

/// The rounds a store knows. Without the setting (a database from before
/// rounds were kept): the default round and the rounds of stored documents.
pub fn known_rounds<S: Store + ?Sized>(store: &S) -> Result<BTreeSet<Round>, StoreError> {
    match store.setting(ROUNDS_SETTING)? {
        Some(text) => {
            let names: Vec<String> = serde_json::from_str(&text)
                .map_err(|e| StoreError::Corrupt(format!("setting {ROUNDS_SETTING} {text:?}: {e}")))?;
            names
                .into_iter()
                .map(|n| {
                    Round::new(n).map_err(|e| StoreError::Corrupt(format!("setting {ROUNDS_SETTING}: {e}")))
                })
                .collect()
        }
        None => {
            let mut rounds: BTreeSet<Round> = store.document_ids()?.into_iter().map(|id| id.round).collect();
            rounds.insert(Round::new(DEFAULT_ROUND).expect("the default round is a valid id"));
            Ok(rounds)
        }
    }
}

/// What opening a round did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundOpened {
    /// The round.
    pub round: String,
    /// Whether it was new (`false`: it was already open, nothing changed).
    pub opened: bool,
    /// Every known round afterwards, sorted.
    pub rounds: Vec<String>,
}

/// Opens a round: devices may then create its documents. Writes the setting
/// and, when the round is new, an audit event `round.open` by `who`.
pub fn open_round<S: Store + ?Sized>(
    store: &mut S,
    round: &Round,
    who: &str,
    now: i64,
) -> Result<RoundOpened, StoreError> {
    let mut rounds = known_rounds(store)?;
    let opened = rounds.insert(round.clone());
    let names: Vec<String> = rounds.iter().map(ToString::to_string).collect();
    if opened {
        let text = serde_json::to_string(&names).map_err(|e| StoreError::Backend(e.to_string()))?;
        store.put_setting(ROUNDS_SETTING, &text)?;
        store.append_audit(&AuditEvent {
            at: now,
            who: who.to_owned(),
            action: "round.open".into(),
            subject: round.to_string(),
            detail: format!(
                "survey round {round} opened: devices may now create its documents; known rounds: {}",
                names.join(", ")
            ),
        })?;
    }
    Ok(RoundOpened { round: round.to_string(), opened, rounds: names })
}

/// The body of `POST /v1/admin/rounds`.
#[derive(Debug, Serialize, Deserialize)]
pub struct OpenRound {
    /// The round to open, e.g. `2025-1`.
    pub round: String,
}

/// `GET /v1/admin/rounds`: the rounds this server accepts documents for, sorted.
pub async fn list(State(state): State<AppState>) -> Json<Vec<String>> {
    let rounds = state.shared.rounds.read().unwrap_or_else(|p| p.into_inner());
    Json(rounds.iter().map(ToString::to_string).collect())
}

/// `POST /v1/admin/rounds` `{"round": "2025-1"}`.
pub async fn open(
    State(state): State<AppState>,
    Extension(admin): Extension<AdminName>,
    body: Bytes,
) -> Result<Json<RoundOpened>, ApiError> {
    let req: OpenRound = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(ErrorCode::BadRequest, format!("the body is not {{\"round\": \"2025-1\"}}: {e}"))
    })?;
    let round = Round::new(req.round).map_err(|e| {
        let mut err = ApiError::new(ErrorCode::BadRequest, e.to_string());
        err.body.field = Some("round".into());
        err
    })?;
    let who = admin.who();
    let shared = state.shared.clone();
    let opened = tokio::task::spawn_blocking(move || {
        let written = shared.writer.run(move |s| open_round(s, &round, &who, now_ms()))?;
        // Rounds only grow, so adding what the store holds is right in any order.
        let mut known = shared.rounds.write().unwrap_or_else(|p| p.into_inner());
        known.extend(written.rounds.iter().filter_map(|r| Round::new(r.as_str()).ok()));
        Ok::<_, StoreError>(written)
    })
    .await
    .map_err(|e| ApiError::internal(format!("worker failed: {e}")))?
    .map_err(ApiError::store)?;
    if opened.opened {
        tracing::info!(round = %opened.round, "survey round opened");
    }
    Ok(Json(opened))
}
