//! Fuzz target: arbitrary bytes as a device's sync message to the server's
//! validating session. A refusal is fine; a panic, or a refused message that
//! changed the document, is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sync_core::automerge::ActorId;
use sync_core::survey::{Edit, FieldValue, SurveyDocument, Target};
use sync_core::sync::{DocSession, Trust};

fuzz_target!(
    init: {
        // Panics inside automerge on damaged bytes are contained by the code
        // under test (catch_unwind); libFuzzer's abort-on-panic hook would
        // report them anyway. Panics that escape still abort the run.
        std::panic::set_hook(Box::new(|_| {}));
    },
    |data: &[u8]| {
    let id = "village:nhu-co-01:2024-1".parse().unwrap();
    let mut hub = SurveyDocument::create(id, ActorId::from([9u8; 16]));
    hub.apply(&[Edit::set(Target::Household("hh-1".parse().unwrap()), "members", FieldValue::Int(3))], 1).unwrap();
    let before = hub.heads();
    let mut session = DocSession::resume(None);
    if session.receive(&mut hub, data, Trust::Validate).is_err() {
        assert_eq!(hub.heads(), before, "a refused message changed the document");
    } else {
        let _ = hub.snapshot(None);
        let _ = sync_core::validate::conflicts(&hub);
    }
    }
);
