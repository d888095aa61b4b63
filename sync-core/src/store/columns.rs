//! How values without a column type of their own are written as text, the
//! same in every backend, so that a database moved from one backend to the
//! other reads back identically.

use super::StoreError;
use crate::access::{CredentialKind, DeviceRecord};
use crate::registry::PlaceKind;
use crate::sync::RefusalCode;

/// A refusal code as stored.
pub fn code_name(code: RefusalCode) -> String {
    serde_json::to_value(code).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// A stored refusal code read back.
pub fn code_from(name: &str) -> Result<RefusalCode, StoreError> {
    serde_json::from_value(serde_json::Value::String(name.to_owned()))
        .map_err(|_| StoreError::Corrupt(format!("unknown refusal code {name:?}")))
}

/// A place kind as stored.
pub fn kind_name(kind: PlaceKind) -> &'static str {
    match kind {
        PlaceKind::Province => "province",
        PlaceKind::District => "district",
        PlaceKind::Commune => "commune",
        PlaceKind::Village => "village",
    }
}

/// A stored place kind read back (`id` names the place in the error).
pub fn kind_from(id: &str, kind: &str) -> Result<PlaceKind, StoreError> {
    serde_json::from_value(serde_json::Value::String(kind.to_owned()))
        .map_err(|_| StoreError::Corrupt(format!("place {id}: unknown kind {kind:?}")))
}

/// A credential kind as stored.
pub fn credential_kind(kind: CredentialKind) -> &'static str {
    match kind {
        CredentialKind::Enrollment => "enrollment",
        CredentialKind::DeviceToken => "device_token",
    }
}

/// A device's communes as stored (a JSON array).
pub fn communes_text(device: &DeviceRecord) -> Result<String, StoreError> {
    serde_json::to_string(&device.communes).map_err(|e| StoreError::Backend(e.to_string()))
}

/// A device's stored communes read back (`id` names the device in the error).
pub fn communes_from(id: &str, communes: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(communes)
        .map_err(|e| StoreError::Corrupt(format!("device {id}: communes {communes:?}: {e}")))
}
