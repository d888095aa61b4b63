//! An enrolled but hostile device against a real server on 127.0.0.1: each
//! attack of `tests::attacks`, made of hand-made automerge bytes, sent
//! through `POST /v1/sync` with the device's own valid token.
//!
//! Each test checks what the server must do: refuse that document's message
//! with the named code (kept as a refused upload with the exact bytes), store
//! nothing of it, let waiting changes wait without ever applying them in
//! another device's round, keep honest data whatever its timestamps, and let
//! an honest device sync the same village right after.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use cli::device::Device;
use serde_json::Value;
use sync_core::actors::hex_actor_device;
use sync_core::ids::DocumentId;
use sync_core::survey::{Edit, FieldValue, Survey};
use tests::attacks::{self, Attack};
use tests::{device, hh, quick, village, TestServer};

/// Small limits, so the waiting limit is quick to reach.
fn limits() -> server::state::Limits {
    server::state::Limits {
        input: sync_core::sync::InputLimits {
            max_waiting_per_document: 16,
            max_waiting_per_device: 32,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A server, an honest device of commune `nhu-co` that has synced a real
/// edit of the village the attacks aim at, and that village.
struct Scene {
    server: TestServer,
    _root: tempfile::TempDir,
    honest: Device,
    doc: DocumentId,
}

fn scene() -> Scene {
    let server = TestServer::start_with(limits());
    let root = tempfile::tempdir().unwrap();
    let doc = village("nhu-co-01");
    let mut honest = device(root.path(), "honest", &server, "nhu-co");
    honest.record(&doc, &[Edit::set(hh("hh-001"), "members", FieldValue::Int(5))]).unwrap();
    honest.sync(&quick()).unwrap();
    Scene { server, _root: root, honest, doc }
}

impl Scene {
    /// The hostile device (the server's raw device) and its token.
    fn hostile(&self) -> (&str, &str) {
        (&self.server.raw_device, &self.server.raw_token)
    }

    /// One round of a new exchange carrying `message` for `doc`, with `token`.
    fn send_as(&self, token: &str, doc: &DocumentId, message: &[u8]) -> (u16, Value) {
        let body = attacks::request_body(&attacks::exchange_id("t"), 1, &[(doc, Some(message))]);
        self.server.post_sync_as(Some(token), &body)
    }

    /// [`Scene::send_as`] with the hostile device's token, to the scene's village.
    fn send(&self, attack: &Attack) -> (u16, Value) {
        self.send_as(self.hostile().1, &self.doc, &attack.message)
    }

    /// Sends `attack` alone and checks the refusal: 422 with `code` naming
    /// the document, the exact bytes kept, and nothing stored.
    fn refused(&self, attack: &Attack, code: &str) {
        let before = self.server.all_heads();
        let answer = self.send(attack);
        self.assert_refused(answer, &self.doc, code, &attack.message);
        assert_eq!(self.server.all_heads(), before, "{code}: nothing stored");
        self.assert_absent(attack);
    }

    fn assert_refused(&self, (status, answer): (u16, Value), doc: &DocumentId, code: &str, bytes: &[u8]) {
        assert_eq!(status, 422, "{code}: {answer}");
        let error = &answer["error"];
        assert_eq!(error["code"], code, "{answer}");
        assert_eq!(error["document"], doc.to_string(), "{answer}");
        let id = error["refused_upload"].as_i64().unwrap_or_else(|| panic!("the bytes are kept: {answer}"));
        let kept = self.server.get_json(&format!("/v1/admin/refused/{id}"));
        assert_eq!(kept["document"], doc.to_string(), "{kept}");
        assert!(
            kept["bytes_base64"] == B64.encode(bytes),
            "refused upload {id} holds exactly the bytes sent"
        );
    }

    /// Hashes (hex) of every change the server stored for the scene's village.
    fn stored_hashes(&self) -> Vec<String> {
        let rows = self.server.get_json(&format!("/v1/admin/changes?document={}", self.doc));
        rows.as_array().unwrap().iter().map(|r| r["hash"].as_str().unwrap().to_owned()).collect()
    }

    /// None of the attack's changes are stored, and none of its actors is bound to anyone.
    fn assert_absent(&self, attack: &Attack) {
        let stored = self.stored_hashes();
        for h in &attack.hashes {
            assert!(!stored.contains(h), "change {h} is not stored");
        }
        let owners = self.server.actor_owners();
        for a in &attack.actors {
            assert!(!owners.iter().any(|(actor, _)| actor == a), "actor {a} is bound to nobody: {owners:?}");
        }
    }

    /// Every change of `attack` is stored, and its actors belong to `device`
    /// (by their device-actor shape, and by no binding to anyone else).
    fn assert_stored_as(&self, attack: &Attack, device: &str) {
        let stored = self.stored_hashes();
        for h in &attack.hashes {
            assert!(stored.contains(h), "change {h} is stored");
        }
        let owners = self.server.actor_owners();
        for a in &attack.actors {
            assert_eq!(hex_actor_device(a).as_deref(), Some(device), "actor {a} names {device}");
            for (actor, owner) in &owners {
                assert!(actor != a || owner == device, "actor {a} is attributed to {owner}, not {device}");
            }
        }
    }

    /// The honest device records `members` for `household` in the village,
    /// syncs without any refusal, and the server has it.
    fn honest_syncs(&mut self, household: &str, members: i64) {
        self.honest
            .record(&self.doc, &[Edit::set(hh(household), "members", FieldValue::Int(members))])
            .unwrap();
        let report = self.honest.sync(&quick()).expect("the honest device syncs");
        assert!(report.refused.is_empty(), "the honest upload is not refused: {:?}", report.refused);
        let Survey::Village(v) = self.server.document(&self.doc).snapshot(None).unwrap() else {
            panic!("a village")
        };
        let got = v.households.get(household).and_then(|h| h.members);
        assert_eq!(got, Some(members), "the honest edit of {household} is on the server");
    }
}

#[test]
fn bloom_filters_automerge_never_writes_are_refused() {
    let mut s = scene();
    // 2^27 probes, 0 bits per entry, 5000 `have` entries.
    for attack in [attacks::bloom_probes(1 << 27), attacks::bloom_zero_bits(), attacks::too_many_haves(5000)]
    {
        s.refused(&attack, "bad_filter");
    }
    s.honest_syncs("hh-002", 3);
}

#[test]
fn change_data_inflating_to_256_mib_is_too_large() {
    let mut s = scene();
    let bomb = attacks::inflation_bomb(&s.doc, s.hostile().0, 256 << 20);
    assert!(bomb.message.len() < 1 << 20, "a small upload: {} bytes", bomb.message.len());
    s.refused(&bomb, "too_large");
    s.honest_syncs("hh-002", 3);
}

#[test]
fn squatting_a_derived_actor_is_an_actor_conflict_and_the_household_can_still_be_created() {
    let mut s = scene();
    s.refused(&attacks::squat_household(&s.doc, "hh-not-yet"), "actor_conflict");
    s.refused(&attacks::squat_genesis(&s.doc), "actor_conflict");
    // The household the squatter aimed at is created offline by an honest device.
    s.honest_syncs("hh-not-yet", 4);
}

#[test]
fn a_waiting_change_is_applied_only_in_its_author_s_own_rounds() {
    let mut s = scene();
    let device = s.hostile().0.to_owned();
    let before = s.server.all_heads();
    let waiting = attacks::edit_depending_on(&s.doc, &device, "hh-x");
    let (status, answer) = s.send(&waiting);
    assert_eq!(status, 200, "it waits: {answer}");
    assert_eq!(answer["documents"][0]["stored"], 0, "{answer}");
    assert!(answer["documents"][0]["error"].is_null(), "{answer}");
    let breaking = attacks::rule_break_depending_on(&s.doc, &device, "hh-y");
    let (status, answer) = s.send(&breaking);
    assert_eq!(status, 200, "it cannot be judged before hh-y exists, so it waits: {answer}");
    assert_eq!(answer["documents"][0]["stored"], 0, "{answer}");
    assert_eq!(s.server.all_heads(), before, "nothing applied");

    // An honest device creates both households: its rounds succeed, and
    // apply neither waiting change (nor refuse its own upload for one).
    s.honest_syncs("hh-x", 3);
    s.honest_syncs("hh-y", 2);
    s.assert_absent(&waiting);
    s.assert_absent(&breaking);

    // In the hostile device's own later round the edit applies, as its own.
    let (status, answer) = s.send(&waiting);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["documents"][0]["stored"], 1, "{answer}");
    s.assert_stored_as(&waiting, &device);
    // The rule break is refused once it can be judged.
    let before = s.server.all_heads();
    s.assert_refused(s.send(&breaking), &s.doc, "rule_broken", &breaking.message);
    assert_eq!(s.server.all_heads(), before);
    s.assert_absent(&breaking);
    s.honest_syncs("hh-z", 1);
}

#[test]
fn changes_that_can_never_apply_are_refused_over_the_waiting_limit() {
    let mut s = scene();
    let device = s.hostile().0.to_owned();
    let before = s.server.all_heads();
    let few = attacks::dependency_less(&s.doc, &device, 4);
    let (status, answer) = s.send(&few);
    assert_eq!(status, 200, "within the limit they wait: {answer}");
    assert_eq!(answer["documents"][0]["stored"], 0, "{answer}");
    assert_eq!(s.server.all_heads(), before);
    s.refused(&attacks::dependency_less(&s.doc, &device, 17), "waiting_limit");
    s.honest_syncs("hh-002", 3);
}

#[test]
fn a_fresh_actor_in_a_refused_message_is_bound_to_nobody() {
    let mut s = scene();
    let attack = attacks::fresh_actor_then_rule_break(&s.doc, s.hostile().0);
    assert_eq!(attack.actors.len(), 2);
    s.refused(&attack, "rule_broken");
    s.honest_syncs("hh-002", 3);
}

#[test]
fn many_fresh_actors_in_one_message_are_refused() {
    let mut s = scene();
    let device = s.hostile().0.to_owned();
    s.refused(&attacks::many_actors(&s.doc, Some(&device), 6), "too_many_actors");
    s.refused(&attacks::many_actors(&s.doc, None, 3), "actor_conflict");
    // A device needs a fresh actor now and then: two in one message are fine.
    let two = attacks::many_actors(&s.doc, Some(&device), 2);
    let (status, answer) = s.send(&two);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["documents"][0]["stored"], 2, "{answer}");
    s.assert_stored_as(&two, &device);
    s.honest_syncs("hh-002", 3);
}

#[test]
fn a_counter_increment_patched_onto_a_count_is_refused_by_the_type_rules_not_a_crash() {
    // The patched change parses and is an increment of a plain count: the
    // type rule `not_a_counter` refuses it before automerge ever reads it back.
    let mut s = scene();
    s.refused(&attacks::counter_key_patched(&s.doc, s.hostile().0), "rule_broken");
    s.honest_syncs("hh-002", 3);
}

#[test]
fn a_wrong_checksum_is_a_bad_change_even_while_its_dependency_is_missing() {
    let mut s = scene();
    s.refused(&attacks::bad_checksum_missing_dep(&s.doc, s.hostile().0), "bad_change");
    s.honest_syncs("hh-002", 3);
}

#[test]
fn a_two_mebibyte_commit_message_is_too_large() {
    let mut s = scene();
    s.refused(&attacks::huge_commit_message(&s.doc, s.hostile().0, 2 << 20), "too_large");
    s.honest_syncs("hh-002", 3);
}

#[test]
fn changes_stamped_in_2100_or_before_1970_are_kept() {
    let mut s = scene();
    let device = s.hostile().0.to_owned();
    for ms in [attacks::YEAR_2100_MS, -86_400_000] {
        let attack = attacks::timestamp(&s.doc, &device, ms);
        let (status, answer) = s.send(&attack);
        assert_eq!(status, 200, "a device clock is no reason to lose data: {answer}");
        assert_eq!(answer["documents"][0]["stored"], 1, "{answer}");
        s.assert_stored_as(&attack, &device);
        let rows = s.server.get_json(&format!("/v1/admin/changes?document={}", s.doc));
        let row = rows.as_array().unwrap().iter().find(|r| r["hash"] == attack.hashes[0].as_str()).unwrap();
        assert_eq!(row["time"], ms, "{row}");
    }
    s.honest_syncs("hh-002", 3);
}

#[test]
fn a_round_the_registry_does_not_know_creates_nothing() {
    let mut s = scene();
    let before = s.server.all_heads();
    let (doc, attack) = attacks::in_unknown_round("nhu-co-03", s.hostile().0);
    let answer = s.send_as(s.hostile().1, &doc, &attack.message);
    s.assert_refused(answer, &doc, "unknown_document", &attack.message);
    assert_eq!(s.server.all_heads(), before, "no document created");
    let ids = s.server.get_json("/v1/admin/documents");
    assert!(!ids.as_array().unwrap().iter().any(|d| *d == doc.to_string()), "{ids}");
    s.honest_syncs("hh-002", 3);
}

#[test]
fn another_device_s_change_uploaded_with_a_thief_s_token_is_an_actor_conflict() {
    let mut s = scene();
    let victim = s.hostile().0.to_owned();
    let (thief, thief_token) = s.server.enrolled("thief", &["nhu-co"]);
    let captured = attacks::replay(&s.doc, &victim);
    let before = s.server.all_heads();
    let answer = s.send_as(&thief_token, &s.doc, &captured.message);
    s.assert_refused(answer, &s.doc, "actor_conflict", &captured.message);
    assert_eq!(s.server.all_heads(), before);
    s.assert_absent(&captured);
    // The device whose change it is uploads it itself: stored, and its own.
    let (status, answer) = s.send(&captured);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["documents"][0]["stored"], 1, "{answer}");
    s.assert_stored_as(&captured, &victim);
    assert!(!s.server.actor_owners().iter().any(|(_, owner)| *owner == thief));
    s.honest_syncs("hh-002", 3);
}
