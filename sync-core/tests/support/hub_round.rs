//! One round of the hub on bytes a device sent, as the `sync_message` and
//! `request_bodies` fuzz targets and their regression tests play it: the
//! input checks, admission, type rules and the reply on a fork, then the
//! next reply. A refusal is fine; a panic that escapes, a refused message
//! that changed the document, or an accepted one that does not read back
//! is a bug. Shared by `#[path]` so that the fuzz crate and the tests play
//! exactly the same round.

use sync_core::survey::SurveyDocument;
use sync_core::sync::{DocSession, InputLimits, Uploader};

/// Plays `data` as one device message into `hub`.
pub fn hub_round(hub: &mut SurveyDocument, data: &[u8]) {
    let before = hub.heads();
    let mut session = DocSession::resume(None);
    // Every actor passes the actor rule here, so that fuzzing reaches what
    // lies behind it (the rule itself is tested in sync-core/tests/trust.rs).
    let anyone = |_: &str| Ok(Some("fuzz".to_owned()));
    let limits = InputLimits::default();
    let uploader = Uploader { device: "fuzz", limits: &limits, legacy_owner: &anyone };
    if session.receive_from(hub, data, &uploader).is_err() {
        assert_eq!(hub.heads(), before, "a refused message changed the document");
    } else {
        let _ = session.try_generate(hub);
        hub.snapshot(None).expect("an accepted document reads back");
        let _ = sync_core::validate::conflicts(hub);
    }
}
