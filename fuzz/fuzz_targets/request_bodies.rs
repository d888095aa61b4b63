//! Fuzz target: arbitrary bytes as the JSON bodies devices send, `POST
//! /v1/sync` and `POST /v1/enroll`, decoded the way the server decodes them,
//! with every sync message handed to the hub's session and its reply.
#![no_main]

#[path = "../../sync-core/tests/support/hub_round.rs"]
mod support;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use server::auth::EnrollRequest;
use server::wire::SyncRequest;
use sync_core::access::parse_enrollment_code;
use sync_core::automerge::ActorId;
use sync_core::ids::DocumentId;
use sync_core::survey::SurveyDocument;

fuzz_target!(
    init: {
        // Panics inside automerge are contained by the code under test;
        // panics that escape still abort the run.
        std::panic::set_hook(Box::new(|_| {}));
    },
    |data: &[u8]| {
        if let Ok(enroll) = serde_json::from_slice::<EnrollRequest>(data) {
            let _ = parse_enrollment_code(&enroll.code);
        }
        let Ok(request) = serde_json::from_slice::<SyncRequest>(data) else { return };
        for part in request.documents.iter().take(8) {
            let Ok(id) = part.document.parse::<DocumentId>() else { continue };
            let Some(Ok(bytes)) = part.message.as_deref().map(|m| B64.decode(m)) else { continue };
            let mut doc = SurveyDocument::create(id, ActorId::from([9u8; 16]));
            support::hub_round(&mut doc, &bytes);
        }
    }
);
