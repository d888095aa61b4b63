//! Fuzz target: arbitrary bytes as a stored snapshot or change row, as read
//! back from a damaged database. Loading may fail; it must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sync_core::automerge::ActorId;
use sync_core::survey::SurveyDocument;

fuzz_target!(
    init: {
        // Panics inside automerge on damaged bytes are contained by the code
        // under test (catch_unwind); libFuzzer's abort-on-panic hook would
        // report them anyway. Panics that escape still abort the run.
        std::panic::set_hook(Box::new(|_| {}));
    },
    |data: &[u8]| {
    let id: sync_core::ids::DocumentId = "commune:song-cau:2024-1".parse().unwrap();
    let split = data.first().map(|b| *b as usize % (data.len().max(1))).unwrap_or(0);
    let (snapshot, change) = data.split_at(split);
    if let Ok(doc) = SurveyDocument::load(id.clone(), ActorId::from([1u8; 16]), Some(snapshot), [change]) {
        let _ = doc.snapshot(None);
    }
    let _ = SurveyDocument::load(id, ActorId::from([1u8; 16]), None, [data]);
    }
);
