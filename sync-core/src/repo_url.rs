//! The automerge-repo address of a Thôn Sync document.
//!
//! automerge-repo names a document by 16 bytes that must read as a UUID
//! (its clients check the version and variant bits), written base58check;
//! its URL is `automerge:<that>`. A Thôn Sync document's 16 bytes are the
//! RFC 4122 name-based UUID (version 5, SHA-1) of its id string
//! (`village:nhu-co-01:2024-1`) in the namespace [`NAMESPACE`], so any
//! platform with a UUID library derives the same address
//! (`uuidv5(id, NAMESPACE)`, then base58check), and an address never
//! changes while the document id does not.

use sha1::{Digest, Sha1};

use crate::ids::DocumentId;

/// The UUID namespace of Thôn Sync document ids:
/// `d746dba2-404f-4af5-b894-7a4dd4e196aa`.
pub const NAMESPACE: [u8; 16] = [215, 70, 219, 162, 64, 79, 74, 245, 184, 148, 122, 77, 212, 225, 150, 170];

/// The URL scheme automerge-repo uses.
pub const URL_PREFIX: &str = "automerge:";

/// The 16 bytes (a version 5 UUID) automerge-repo names the document by.
pub fn repo_id_bytes(id: &DocumentId) -> [u8; 16] {
    let mut hasher = Sha1::new();
    hasher.update(NAMESPACE);
    hasher.update(id.to_string().as_bytes());
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x50; // version 5
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
    bytes
}

/// The automerge-repo document id: [`repo_id_bytes`] in base58check.
pub fn repo_id(id: &DocumentId) -> String {
    bs58::encode(repo_id_bytes(id)).with_check().into_string()
}

/// The automerge-repo URL, `automerge:` + [`repo_id`].
pub fn repo_url(id: &DocumentId) -> String {
    format!("{URL_PREFIX}{}", repo_id(id))
}

/// The 16 bytes an automerge-repo document id (with or without the
/// `automerge:` prefix) names, if it is one.
pub fn parse_repo_id(text: &str) -> Option<[u8; 16]> {
    let text = text.strip_prefix(URL_PREFIX).unwrap_or(text);
    let bytes = bs58::decode(text).with_check(None).into_vec().ok()?;
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_is_a_version_5_uuid_of_the_id_in_base58check() {
        let id: DocumentId = "village:nhu-co-01:2024-1".parse().unwrap();
        let bytes = repo_id_bytes(&id);
        assert_eq!(bytes[6] >> 4, 5);
        assert_eq!(bytes[8] >> 6, 0b10);
        let url = repo_url(&id);
        assert!(url.starts_with("automerge:"));
        assert_eq!(parse_repo_id(&url), Some(bytes));
        assert_eq!(parse_repo_id(&repo_id(&id)), Some(bytes));
        let other: DocumentId = "village:nhu-co-02:2024-1".parse().unwrap();
        assert_ne!(repo_id(&other), repo_id(&id));
        assert_eq!(parse_repo_id("automerge:not-base58-0OIl"), None);
    }

    #[test]
    fn the_namespace_is_the_documented_uuid() {
        let hex: String = NAMESPACE.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "d746dba2404f4af5b8947a4dd4e196aa");
    }
}
