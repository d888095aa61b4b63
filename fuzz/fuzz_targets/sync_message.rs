//! Fuzz target: arbitrary bytes as a device's sync message to the hub's
//! session, through the whole round: the input checks, admission, type
//! rules, the reply made from the fork, then the next reply. A refusal is
//! fine; a panic that escapes, a refused message that changed the document,
//! or slow or memory-hungry input (run with tight `-timeout` and
//! `-rss_limit_mb`) is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sync_core::automerge::ActorId;
use sync_core::survey::{Edit, FieldValue, SurveyDocument, Target};
use sync_core::sync::{DocSession, InputLimits, Uploader};

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
    // Every actor passes the actor rule here, so that fuzzing reaches what
    // lies behind it (the rule itself is tested in sync-core/tests/trust.rs).
    let anyone = |_: &str| Ok(Some("fuzz".to_owned()));
    let limits = InputLimits::default();
    let uploader = Uploader { device: "fuzz", limits: &limits, legacy_owner: &anyone };
    if session.receive_from(&mut hub, data, &uploader).is_err() {
        assert_eq!(hub.heads(), before, "a refused message changed the document");
    } else {
        let _ = session.try_generate(&hub);
        let _ = hub.snapshot(None);
        let _ = sync_core::validate::conflicts(&hub);
    }
    }
);
