//! The genesis test vectors of `docs/vectors/genesis.json`: for some
//! documents, the automerge-repo URL and the byte-exact genesis changes
//! (document and households: actor, hash, bytes) every replica must make.
//! This test holds the file equal to what `sync-core` makes; the JS helper's
//! tests (`clients/js/test/`) check themselves against the same file, and
//! any other platform can. `THONSYNC_WRITE_VECTORS=1` rewrites the file.

use std::path::PathBuf;

use serde_json::{json, Value};
use sync_core::ids::DocumentId;
use sync_core::survey::{genesis_actor, household_actor, Genesis};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn vectors() -> Value {
    let cases: [(&str, &[&str]); 4] = [
        ("village:nhu-co-01:2024-1", &["hh-001", "hh-010", "a_very-long_household-id-0123456789"]),
        ("village:nhu-co-02:2024-1", &["hh-001"]),
        ("village:nhu-co-01:2025-2", &["hh-001"]),
        ("commune:nhu-co:2024-1", &[]),
    ];
    let documents: Vec<Value> = cases
        .iter()
        .map(|(id, households)| {
            let id: DocumentId = id.parse().expect("a document id");
            let genesis = Genesis::new(&id);
            let households: Vec<Value> = households
                .iter()
                .map(|h| {
                    let change = genesis.household(h).expect("a village");
                    json!({
                        "household": h,
                        "actor": household_actor(&id, h).to_hex_string(),
                        "hash": change.hash().to_string(),
                        "bytes": hex(change.raw_bytes()),
                    })
                })
                .collect();
            json!({
                "document": id.to_string(),
                "repo_uuid": hex(&sync_core::repo_url::repo_id_bytes(&id)),
                "url": sync_core::repo_url::repo_url(&id),
                "genesis": {
                    "actor": genesis_actor(&id).to_hex_string(),
                    "hash": genesis.hash().to_string(),
                    "bytes": hex(genesis.change().raw_bytes()),
                },
                "households": households,
            })
        })
        .collect();
    json!({
        "about": "Thôn Sync genesis test vectors: for each document, its automerge-repo URL (UUID v5 of the id in namespace d746dba2-404f-4af5-b894-7a4dd4e196aa, base58check) and the byte-exact genesis changes (hex) of the document and of some households. See docs/protocol.md, 'automerge-repo clients'.",
        "uuid_namespace": "d746dba2-404f-4af5-b894-7a4dd4e196aa",
        "documents": documents,
    })
}

#[test]
fn the_published_vectors_are_what_sync_core_makes() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/vectors/genesis.json");
    let made = serde_json::to_string_pretty(&vectors()).unwrap() + "\n";
    if std::env::var_os("THONSYNC_WRITE_VECTORS").is_some() {
        std::fs::write(&path, &made).unwrap();
    }
    let published = std::fs::read_to_string(&path).expect("docs/vectors/genesis.json");
    assert_eq!(published, made, "the published vectors drifted; THONSYNC_WRITE_VECTORS=1 rewrites them");
}

#[test]
fn the_urls_are_rfc_4122_version_5_uuids() {
    // Computed independently (Python's uuid.uuid5) for the first document.
    let id: DocumentId = "village:nhu-co-01:2024-1".parse().unwrap();
    assert_eq!(hex(&sync_core::repo_url::repo_id_bytes(&id)), "2ca5e9fc55c95b55949e100993874c66");
}
