//! Snapshots of the wire bodies as the server and the device write them:
//! a change of field name, order, optionality or error code shows here as
//! a diff (`UPDATE_EXPECT=1 cargo test -p sync-core --test wire_snapshots`
//! rewrites them after a deliberate change, which docs/protocol.md must
//! follow).

use expect_test::expect;
use sync_core::sync::RefusalCode;
use sync_core::wire::{
    DocumentMessage, DocumentReply, ErrorBody, ErrorCode, ErrorEnvelope, SyncRequest, SyncResponse,
};

fn json<T: serde::Serialize>(body: &T) -> String {
    serde_json::to_string_pretty(body).unwrap()
}

#[test]
fn a_sync_request() {
    let request = SyncRequest {
        device: Some("dev-3f9a0c11d2e4b5a6".into()),
        exchange: "x-8c1d2e3f4a5b6c7d".into(),
        round: 1,
        documents: vec![
            DocumentMessage {
                document: "village:nhu-co-01:2024-1".into(),
                message: Some("QgAAAQ==".into()),
                heads: None,
            },
            DocumentMessage {
                document: "village:nhu-co-02:2024-1".into(),
                message: None,
                heads: Some("3f9a0c11d2e4b5a6".into()),
            },
        ],
    };
    expect![[r#"
        {
          "device": "dev-3f9a0c11d2e4b5a6",
          "exchange": "x-8c1d2e3f4a5b6c7d",
          "round": 1,
          "documents": [
            {
              "document": "village:nhu-co-01:2024-1",
              "message": "QgAAAQ=="
            },
            {
              "document": "village:nhu-co-02:2024-1",
              "message": null,
              "heads": "3f9a0c11d2e4b5a6"
            }
          ]
        }"#]]
    .assert_eq(&json(&request));
}

#[test]
fn a_sync_response_with_a_refusal() {
    let mut error = ErrorBody::new(
        RefusalCode::ActorConflict,
        "change … is written under actor …, which is device tablet-b's",
    )
    .with_document("village:nhu-co-01:2024-1");
    error.refused_upload = Some(17);
    let response = SyncResponse {
        exchange: "x-8c1d2e3f4a5b6c7d".into(),
        round: 1,
        documents: vec![
            DocumentReply {
                document: "commune:nhu-co:2024-1".into(),
                message: Some("QgAB".into()),
                stored: 0,
                error: None,
            },
            DocumentReply {
                document: "village:nhu-co-01:2024-1".into(),
                message: None,
                stored: 0,
                error: Some(error.clone()),
            },
        ],
        error: Some(error),
    };
    expect![[r#"
        {
          "exchange": "x-8c1d2e3f4a5b6c7d",
          "round": 1,
          "documents": [
            {
              "document": "commune:nhu-co:2024-1",
              "message": "QgAB",
              "stored": 0,
              "error": null
            },
            {
              "document": "village:nhu-co-01:2024-1",
              "message": null,
              "stored": 0,
              "error": {
                "code": "actor_conflict",
                "message": "change … is written under actor …, which is device tablet-b's",
                "document": "village:nhu-co-01:2024-1",
                "field": null,
                "rule": null,
                "refused_upload": 17
              }
            }
          ],
          "error": {
            "code": "actor_conflict",
            "message": "change … is written under actor …, which is device tablet-b's",
            "document": "village:nhu-co-01:2024-1",
            "field": null,
            "rule": null,
            "refused_upload": 17
          }
        }"#]]
    .assert_eq(&json(&response));
}

#[test]
fn the_one_error_shape() {
    let body = ErrorBody::new(
        ErrorCode::TooManyRequests,
        "too many enrollment attempts from this address; retry in 42 s",
    );
    expect![[r#"
        {
          "error": {
            "code": "too_many_requests",
            "message": "too many enrollment attempts from this address; retry in 42 s",
            "document": null,
            "field": null,
            "rule": null
          }
        }"#]]
    .assert_eq(&json(&ErrorEnvelope { error: body }));
}
