//! `docs/protocol.md` and the wire bodies cannot drift apart: every JSON
//! example in the document parses as the body it shows, and names no field
//! the body does not have (a renamed or misspelt field fails here).

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use sync_core::wire::{
    CommuneDocuments, EnrollRequest, EnrollResponse, ErrorEnvelope, SyncRequest, SyncResponse,
};

fn protocol() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/protocol.md");
    std::fs::read_to_string(path).expect("docs/protocol.md")
}

/// The ```json blocks of the document, in order.
fn json_blocks(text: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("```json\n") {
        let body = &rest[start + 8..];
        let end = body.find("```").expect("a closed block");
        let json = body[..end].replace('…', "");
        out.push(
            serde_json::from_str(&json)
                .unwrap_or_else(|e| panic!("a JSON example does not parse: {e}\n{json}")),
        );
        rest = &body[end..];
    }
    out
}

/// The inline `{…}` bodies after `marker` (e.g. the enrollment request).
fn inline_after(text: &str, marker: &str) -> Value {
    let at = text.find(marker).unwrap_or_else(|| panic!("{marker:?} is in the document"));
    let rest = &text[at + marker.len()..];
    let start = rest.find('{').expect("a body");
    let end = rest[start..].find('}').expect("its end") + start + 1;
    let json: String = rest[start..end].lines().map(str::trim).collect::<Vec<_>>().join(" ").replace('…', "");
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("{marker}: {e}\n{json}"))
}

/// Parses `example` as `T` and checks that every field it names is one of `T`'s.
fn is_a<T: DeserializeOwned + Serialize>(example: &Value) {
    let typed: T = serde_json::from_value(example.clone())
        .unwrap_or_else(|e| panic!("the example is not a {}: {e}\n{example}", std::any::type_name::<T>()));
    let back = serde_json::to_value(&typed).unwrap();
    known_fields(example, &back, "");
}

fn known_fields(example: &Value, typed: &Value, path: &str) {
    match (example, typed) {
        (Value::Object(e), Value::Object(t)) => {
            for (k, v) in e {
                let inner = t
                    .get(k)
                    .unwrap_or_else(|| panic!("the example names {path}.{k}, which the body does not have"));
                known_fields(v, inner, &format!("{path}.{k}"));
            }
        }
        (Value::Array(e), Value::Array(t)) => {
            assert_eq!(e.len(), t.len(), "{path}");
            for (i, (a, b)) in e.iter().zip(t).enumerate() {
                known_fields(a, b, &format!("{path}[{i}]"));
            }
        }
        _ => {}
    }
}

#[test]
fn every_json_example_of_the_protocol_is_its_wire_body() {
    let text = protocol();
    let blocks = json_blocks(&text);
    assert!(blocks.len() >= 4, "the examples are there: {}", blocks.len());
    let mut seen = [0; 4];
    for block in &blocks {
        let object = block.as_object().expect("an object");
        if object.contains_key("error") && object.len() == 1 {
            is_a::<ErrorEnvelope>(block);
            seen[0] += 1;
        } else if object.contains_key("commune") {
            is_a::<CommuneDocuments>(block);
            seen[1] += 1;
        } else if object.contains_key("round") && block["documents"][0].get("stored").is_some() {
            is_a::<SyncResponse>(block);
            seen[2] += 1;
        } else if object.contains_key("exchange") {
            is_a::<SyncRequest>(block);
            seen[3] += 1;
        } else {
            panic!("an example of no known body: {block}");
        }
    }
    assert!(seen.iter().all(|&n| n >= 1), "an example of each body: {seen:?}");
    is_a::<EnrollRequest>(&inline_after(&text, "`POST /v1/enroll` `"));
    is_a::<EnrollResponse>(&inline_after(&text, "`200 "));
}

#[test]
fn a_misspelt_field_in_an_example_is_caught() {
    let misspelt = serde_json::json!({"exchange": "x-1", "round": 1, "documents": [], "devise": "dev-1"});
    let caught = std::panic::catch_unwind(|| is_a::<SyncRequest>(&misspelt));
    assert!(caught.is_err(), "`devise` is no field of a sync request");
}
