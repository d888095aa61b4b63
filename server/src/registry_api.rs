//! `GET /v1/registry/communes` and `GET /v1/registry/communes/{commune}`:
//! how a device learns which documents its commune holds (in a round the
//! server knows; another round is 404 `unknown_round`).

use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use serde::Deserialize;
use sync_core::ids::{DocumentKind, Round, DEFAULT_ROUND};
use sync_core::registry::{Place, PlaceKind};

use crate::auth::AuthedDevice;
use crate::error::{ApiError, ErrorCode};
use crate::wire::{CommuneDocuments, RegistryDocument};
use crate::AppState;

/// `?round=` on the registry endpoint.
#[derive(Debug, Deserialize)]
pub struct RoundQuery {
    /// The survey round; the default round when absent.
    pub round: Option<String>,
}

/// Every commune in the registry.
pub async fn communes(State(state): State<AppState>) -> Json<Vec<Place>> {
    let registry = state.shared.registry.read().expect("registry");
    Json(registry.of_kind(PlaceKind::Commune).cloned().collect())
}

/// The documents of one commune in one round.
pub async fn commune_documents(
    State(state): State<AppState>,
    Extension(AuthedDevice(device)): Extension<AuthedDevice>,
    Path(commune): Path<String>,
    Query(q): Query<RoundQuery>,
) -> Result<Json<CommuneDocuments>, ApiError> {
    if !device.communes.contains(&commune) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("{commune:?} is not one of this device's communes ({})", device.communes.join(", ")),
        ));
    }
    let round = Round::new(q.round.unwrap_or_else(|| DEFAULT_ROUND.to_owned())).map_err(|e| {
        let mut err = ApiError::new(ErrorCode::BadRequest, e.to_string());
        err.body.field = Some("round".into());
        err
    })?;
    let registry = state.shared.registry.read().expect("registry");
    let place = registry.get(&commune).filter(|p| p.kind == PlaceKind::Commune).ok_or_else(|| {
        ApiError::new(ErrorCode::UnknownCommune, format!("{commune:?} is not a commune in the registry"))
    })?;
    {
        let rounds = state.shared.rounds.read().unwrap_or_else(|p| p.into_inner());
        if !rounds.contains(&round) {
            let known: Vec<String> = rounds.iter().map(ToString::to_string).collect();
            let mut err = ApiError::new(
                ErrorCode::UnknownRound,
                format!(
                    "survey round {round:?} is not open on this server (open: {}); ask the administrator \
                     (`thonsync rounds open {round}`)",
                    known.join(", ")
                ),
            );
            err.body.field = Some("round".into());
            return Err(err);
        }
    }
    let documents = registry
        .documents_for_commune(&commune, &round)
        .into_iter()
        .map(|id| {
            let p = registry.get(id.place.as_str());
            RegistryDocument {
                document: id.to_string(),
                kind: match id.kind {
                    DocumentKind::Village => "village".into(),
                    DocumentKind::Commune => "commune".into(),
                },
                place: id.place.to_string(),
                name: p.map(|p| p.name.clone()).unwrap_or_default(),
                expected_households: p.and_then(|p| p.expected_households),
                url: Some(sync_core::repo_url::repo_url(&id)),
            }
        })
        .collect();
    Ok(Json(CommuneDocuments {
        commune: place.id.clone(),
        name: place.name.clone(),
        round: round.to_string(),
        documents,
    }))
}
