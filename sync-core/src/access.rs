//! Devices, credentials and scopes: who may sync which documents.
//!
//! Secrets (enrollment codes, device and administrator tokens) are made
//! from random bytes the caller hands in (this crate reads no randomness),
//! shown once, and stored only as SHA-256 hashes.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ids::DocumentId;
use crate::registry::Registry;

/// Prefix of device tokens, so a leaked token is recognisable.
pub const DEVICE_TOKEN_PREFIX: &str = "tsd_";
/// Prefix of administrator tokens.
pub const ADMIN_TOKEN_PREFIX: &str = "tsa_";
/// Alphabet of enrollment codes: no 0/O, 1/I/L or U, so codes read out over
/// a phone survive.
const CODE_ALPHABET: &[u8; 30] = b"ABCDEFGHJKMNPQRSTVWXYZ23456789";
/// Characters in an enrollment code, without separators.
pub const CODE_LEN: usize = 12;
/// How long an enrollment code can be exchanged, in milliseconds (7 days).
pub const CODE_LIFETIME_MS: i64 = 7 * 24 * 3600 * 1000;

/// A malformed credential.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CredentialError {
    /// The code has the wrong length or characters.
    #[error("an enrollment code has 12 letters and digits (dashes and spaces are ignored); got {0} usable characters")]
    CodeLength(usize),
    /// A character outside the code alphabet.
    #[error("an enrollment code has no {0:?}; check for O/0 or I/1 mix-ups")]
    CodeCharacter(char),
    /// Not a token of the expected kind.
    #[error("not a Thôn Sync {0} token")]
    Token(&'static str),
}

/// SHA-256 of a secret, hex: what the store keeps instead of the secret.
pub fn hash_secret(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Lowercase hex of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new device token from 32 random bytes.
pub fn new_device_token(random: [u8; 32]) -> String {
    format!("{DEVICE_TOKEN_PREFIX}{}", hex(&random))
}

/// A new administrator token from 32 random bytes.
pub fn new_admin_token(random: [u8; 32]) -> String {
    format!("{ADMIN_TOKEN_PREFIX}{}", hex(&random))
}

/// Checks the shape of a bearer token: prefix then 64 hex digits.
pub fn check_token(token: &str, prefix: &str, kind: &'static str) -> Result<(), CredentialError> {
    let Some(rest) = token.strip_prefix(prefix) else { return Err(CredentialError::Token(kind)) };
    if rest.len() == 64 && rest.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(CredentialError::Token(kind))
    }
}

/// A new enrollment code from random bytes, shown as `XXXX-XXXX-XXXX`.
pub fn new_enrollment_code(random: [u8; CODE_LEN]) -> String {
    let chars: Vec<char> =
        random.iter().map(|b| CODE_ALPHABET[(*b as usize) % CODE_ALPHABET.len()] as char).collect();
    chars.chunks(4).map(|c| c.iter().collect::<String>()).collect::<Vec<_>>().join("-")
}

/// Normalises a typed enrollment code (case, dashes, spaces) or says what is wrong.
pub fn parse_enrollment_code(typed: &str) -> Result<String, CredentialError> {
    let mut out = String::with_capacity(CODE_LEN);
    for c in typed.chars() {
        if c == '-' || c.is_whitespace() {
            continue;
        }
        let up = c.to_ascii_uppercase();
        if !up.is_ascii() || !CODE_ALPHABET.contains(&(up as u8)) {
            return Err(CredentialError::CodeCharacter(c));
        }
        out.push(up);
        if out.len() > CODE_LEN {
            return Err(CredentialError::CodeLength(
                typed.chars().filter(|c| c.is_ascii_alphanumeric()).count(),
            ));
        }
    }
    if out.len() != CODE_LEN {
        return Err(CredentialError::CodeLength(out.len()));
    }
    Ok(out
        .chars()
        .collect::<Vec<_>>()
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-"))
}

/// An enrolled (or enrolling) field device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// Device id, also its peer id in sync sessions.
    pub id: String,
    /// A name a person recognises (surveyor and phone).
    pub name: String,
    /// Communes it may read and write.
    pub communes: Vec<String>,
    /// When the administrator added it, ms since 1970.
    pub created_at: i64,
    /// When it exchanged its code for a token.
    pub enrolled_at: Option<i64>,
    /// When it was revoked; a revoked device is refused.
    pub revoked_at: Option<i64>,
    /// Last request seen.
    pub last_seen: Option<i64>,
    /// App version it last reported.
    pub app_version: Option<String>,
}

impl DeviceRecord {
    /// Whether the device may read and write `doc`.
    pub fn may_access(&self, doc: &DocumentId, registry: &Registry) -> bool {
        registry.commune_of(doc).is_some_and(|c| self.communes.iter().any(|mine| mine == &c.id))
    }
}

/// What a credential row is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// A one-time enrollment code.
    Enrollment,
    /// A device's long-lived token.
    DeviceToken,
}

/// One entry of the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// When, ms since 1970.
    pub at: i64,
    /// Who did it: `admin:<name>`, `device:<id>`, or `server`.
    pub who: String,
    /// What: `device.add`, `device.enroll`, `device.revoke`, `device.rotate`,
    /// `upload.refused`, `access.denied`, `conflict.resolve`, ...
    pub action: String,
    /// What it was done to (device id, document id, ...).
    pub subject: String,
    /// Details for a person.
    pub detail: String,
}

/// The audit action of an administrator's change to survey data (a
/// resolution or a correction).
pub const AUDIT_EDIT: &str = "conflict.resolve";

/// The audit detail of an administrator's change, in words:
/// `change 3f2a…: household hh-04 members = 5; facts security_cameras -47`.
/// [`edited_change`] reads the hash back.
pub fn edits_detail(change: &str, edits: &[crate::survey::Edit]) -> String {
    use crate::survey::{EditOp, Target};
    let text: Vec<String> = edits
        .iter()
        .map(|e| {
            let record = match &e.target {
                Target::Facts => "facts".to_owned(),
                Target::Household(h) => format!("household {h}"),
            };
            let what = match &e.op {
                EditOp::Set(crate::survey::FieldValue::Text(t)) => format!("= \"{t}\""),
                EditOp::Set(v) => format!("= {v}"),
                EditOp::Increment(d) => format!("{d:+}"),
                EditOp::Unset => "unset".to_owned(),
            };
            format!("{record} {} {what}", e.field)
        })
        .collect();
    format!("change {change}: {}", text.join("; "))
}

/// The change an administrator's audit event ([`AUDIT_EDIT`]) names, if any.
pub fn edited_change(event: &AuditEvent) -> Option<&str> {
    if event.action != AUDIT_EDIT {
        return None;
    }
    let rest = event.detail.strip_prefix("change ")?;
    Some(rest.split(':').next().unwrap_or(rest).trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edits_audit_detail_reads_as_words_and_names_its_change() {
        use crate::survey::{Edit, FieldValue, Target};
        let hh = Target::Household("hh-04".parse().unwrap());
        let detail = edits_detail(
            "3f2a",
            &[
                Edit::set(hh.clone(), "members", FieldValue::Int(5)),
                Edit::set(hh, "head_name", FieldValue::Text("Hoàng Văn A".into())),
                Edit::increment(Target::Facts, "security_cameras", -47),
            ],
        );
        assert_eq!(
            detail,
            "change 3f2a: household hh-04 members = 5; household hh-04 head_name = \"Hoàng Văn A\"; \
             facts security_cameras -47"
        );
        let event = AuditEvent {
            at: 0,
            who: "admin:hoa".into(),
            action: AUDIT_EDIT.into(),
            subject: String::new(),
            detail,
        };
        assert_eq!(edited_change(&event), Some("3f2a"));
    }

    #[test]
    fn codes_survive_being_typed_back() {
        let code = new_enrollment_code([7, 200, 31, 0, 99, 1, 2, 3, 4, 5, 6, 250]);
        assert_eq!(code.len(), 14);
        assert_eq!(parse_enrollment_code(&code.to_lowercase().replace('-', " ")).unwrap(), code);
        assert!(matches!(parse_enrollment_code("ABCD-EFGH"), Err(CredentialError::CodeLength(8))));
        assert!(matches!(parse_enrollment_code("ABCD-EFGH-JK0M"), Err(CredentialError::CodeCharacter('0'))));
        assert!(parse_enrollment_code(&"A".repeat(5000)).is_err());
    }

    #[test]
    fn tokens_have_a_recognisable_shape_and_are_stored_hashed() {
        let t = new_device_token([1; 32]);
        assert!(check_token(&t, DEVICE_TOKEN_PREFIX, "device").is_ok());
        assert!(check_token(&t, ADMIN_TOKEN_PREFIX, "admin").is_err());
        assert!(check_token("tsd_xyz", DEVICE_TOKEN_PREFIX, "device").is_err());
        assert_eq!(hash_secret(&t).len(), 64);
        assert_ne!(hash_secret(&t), hash_secret(&new_device_token([2; 32])));
    }

    #[test]
    fn a_device_reaches_only_its_communes() {
        let registry = Registry::sample_bac_kan();
        let d = DeviceRecord {
            id: "phone-1".into(),
            name: "Chị Lan".into(),
            communes: vec!["nhu-co".into()],
            created_at: 0,
            enrolled_at: None,
            revoked_at: None,
            last_seen: None,
            app_version: None,
        };
        assert!(d.may_access(&"village:nhu-co-03:2024-1".parse().unwrap(), &registry));
        assert!(d.may_access(&"commune:nhu-co:2024-1".parse().unwrap(), &registry));
        assert!(!d.may_access(&"village:song-cau-01:2024-1".parse().unwrap(), &registry));
        assert!(!d.may_access(&"village:nowhere:2024-1".parse().unwrap(), &registry));
    }
}
