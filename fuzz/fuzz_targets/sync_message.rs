//! Fuzz target: arbitrary bytes as a device's sync message to the hub's
//! session, through the whole round: the input checks, admission, type
//! rules, the reply made from the fork, then the next reply. A refusal is
//! fine; a panic that escapes, a refused message that changed the document,
//! or slow or memory-hungry input (run with tight `-timeout` and
//! `-rss_limit_mb`) is a bug.
#![no_main]

#[path = "../../sync-core/tests/support/hub_round.rs"]
mod support;

use libfuzzer_sys::fuzz_target;
use sync_core::automerge::ActorId;
use sync_core::survey::{Edit, FieldValue, SurveyDocument, Target};

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
        let household = Target::Household("hh-1".parse().unwrap());
        hub.apply(&[Edit::set(household, "members", FieldValue::Int(3))], 1).unwrap();
        support::hub_round(&mut hub, data);
    }
);
