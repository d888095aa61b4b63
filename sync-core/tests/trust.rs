//! The hub's trust boundary, sans IO: what one device's bytes can and cannot
//! cause. Each attack is a hand-made message; each refusal leaves the
//! document and the session as they were.

use sync_core::actors::device_actor;
use sync_core::automerge::sync::{Message, MessageVersion};
use sync_core::automerge::transaction::Transactable;
use sync_core::automerge::{ActorId, Change, ChangeHash, ReadDoc, ScalarValue};
use sync_core::ids::DocumentId;
use sync_core::survey::{
    household_actor, household_genesis_change, Edit, FieldValue, SurveyDocument, Target,
};
use sync_core::sync::{DocSession, InputLimits, Received, Refusal, RefusalCode, Uploader};

fn village() -> DocumentId {
    "village:song-cau-04:2024-1".parse().unwrap()
}

fn hh(id: &str) -> Target {
    Target::Household(id.parse().unwrap())
}

fn actor(device: &str, n: u8) -> ActorId {
    device_actor(device, [n; 8])
}

/// A message carrying exactly `chunks`, advertising the last change as head.
fn carrying(chunks: Vec<Vec<u8>>, heads: Vec<ChangeHash>) -> Vec<u8> {
    Message {
        heads,
        need: vec![],
        have: vec![],
        changes: chunks.into(),
        flags: None,
        version: MessageVersion::V1,
    }
    .encode()
}

fn message_of(changes: &[Change]) -> Vec<u8> {
    carrying(
        changes.iter().map(|c| c.raw_bytes().to_vec()).collect(),
        changes.last().map(Change::hash).into_iter().collect(),
    )
}

/// The changes `doc` has beyond the bare document genesis.
fn edits_of(doc: &SurveyDocument) -> Vec<Change> {
    let genesis = SurveyDocument::create(doc.id().clone(), ActorId::random());
    doc.automerge().get_changes(&genesis.heads())
}

/// Receives `bytes` from `device` with `limits`; no legacy bindings exist.
fn from(
    device: &str,
    limits: &InputLimits,
    session: &mut DocSession,
    hub: &mut SurveyDocument,
    bytes: &[u8],
) -> Result<Received, Refusal> {
    let no_bindings = |_: &str| Ok(None);
    session.receive_from(hub, bytes, &Uploader { device, limits, legacy_owner: &no_bindings })
}

/// Asserts a refusal with `code` that left `hub` and `session` untouched.
fn refused(code: RefusalCode, device: &str, limits: &InputLimits, bytes: &[u8]) -> Refusal {
    let mut hub = SurveyDocument::create(village(), ActorId::random());
    let mut session = DocSession::resume(None);
    let before = hub.heads();
    let r = from(device, limits, &mut session, &mut hub, bytes).expect_err("refused");
    assert_eq!(r.code, code, "{}", r.message);
    assert_eq!(r.document, village());
    assert_eq!(hub.heads(), before, "the document is unchanged");
    assert_eq!(session.waiting(), 0, "nothing waits");
    r
}

use sync_core::inbound::write_uleb as uleb;

/// A message with one `have` whose filter claims the given parameters.
fn with_filter(entries: u64, bits_per_entry: u64, probes: u64) -> Vec<u8> {
    let mut bloom = Vec::new();
    uleb(&mut bloom, entries);
    uleb(&mut bloom, bits_per_entry);
    uleb(&mut bloom, probes);
    bloom.resize(bloom.len() + (entries * bits_per_entry).div_ceil(8) as usize, 0xff);
    let mut m = vec![0x42, 0, 0, 1, 0];
    uleb(&mut m, bloom.len() as u64);
    m.extend(bloom);
    m.push(0);
    m
}

#[test]
fn filters_and_lists_automerge_never_writes_are_refused() {
    let limits = InputLimits::default();
    let r = refused(RefusalCode::BadFilter, "tablet-a", &limits, &with_filter(1, 10, 1 << 27));
    assert!(r.message.contains("134217728 probes"), "{}", r.message);
    refused(RefusalCode::BadFilter, "tablet-a", &limits, &with_filter(1, 0, 7));
    let mut two = with_filter(1, 10, 7);
    two[3] = 2;
    let second = two[4..two.len() - 1].to_vec();
    two.splice(two.len() - 1..two.len() - 1, second);
    refused(RefusalCode::BadFilter, "tablet-a", &limits, &two);
    let hash = ChangeHash([7; 32]);
    let twice = Message {
        heads: vec![],
        need: vec![hash, hash],
        have: vec![],
        changes: Vec::<Vec<u8>>::new().into(),
        flags: None,
        version: MessageVersion::V1,
    };
    refused(RefusalCode::BadFilter, "tablet-a", &limits, &twice.encode());
    // Automerge's own filter passes.
    let mut hub = SurveyDocument::create(village(), ActorId::random());
    from("tablet-a", &limits, &mut DocSession::resume(None), &mut hub, &with_filter(1, 10, 7))
        .expect("accepted");
}

#[test]
fn compressed_change_data_inflates_only_within_the_limit() {
    let zeros = vec![0u8; 1 << 20];
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut enc, &zeros).unwrap();
    let deflated = enc.finish().unwrap();
    let mut chunk = vec![0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, 2];
    uleb(&mut chunk, deflated.len() as u64);
    chunk.extend(&deflated);
    assert!(chunk.len() < 2048, "a small request");
    let limits = InputLimits { max_inflated_bytes: 64 * 1024, ..InputLimits::default() };
    let r = refused(RefusalCode::TooLarge, "tablet-a", &limits, &carrying(vec![chunk], vec![]));
    assert!(r.message.contains("inflates past the limit"), "{}", r.message);
}

#[test]
fn a_damaged_checksum_is_refused_even_for_a_change_that_would_wait() {
    let mut device = SurveyDocument::create(village(), actor("tablet-a", 1));
    device.apply(&[Edit::set(hh("hh-001"), "members", FieldValue::Int(4))], 1).unwrap();
    let last = edits_of(&device).pop().unwrap();
    let mut bytes = last.raw_bytes().to_vec();
    bytes[4] ^= 0xff;
    let r = refused(
        RefusalCode::BadChange,
        "tablet-a",
        &InputLimits::default(),
        &carrying(vec![bytes], vec![last.hash()]),
    );
    assert!(r.message.contains("checksum"), "{}", r.message);
}

#[test]
fn derived_actors_write_only_their_genesis() {
    let limits = InputLimits::default();
    // A harmless change under the actor of a household that does not exist yet.
    let mut squat = SurveyDocument::create(village(), household_actor(&village(), "hh-099"));
    squat.apply(&[Edit::set(hh("hh-001"), "members", FieldValue::Int(1))], 1).unwrap();
    let r = refused(RefusalCode::ActorConflict, "tablet-a", &limits, &message_of(&edits_of(&squat)));
    assert!(r.message.contains("no device's"), "{}", r.message);
    // A second change under the document's genesis actor.
    let mut genesis = SurveyDocument::create(village(), sync_core::survey::genesis_actor(&village()));
    genesis.apply(&[Edit::set(hh("hh-001"), "members", FieldValue::Int(1))], 1).unwrap();
    refused(RefusalCode::ActorConflict, "tablet-a", &limits, &message_of(&edits_of(&genesis)));
    // The real household genesis, from any device, is fine.
    let mut hub = SurveyDocument::create(village(), ActorId::random());
    let got = from(
        "tablet-b",
        &limits,
        &mut DocSession::resume(None),
        &mut hub,
        &message_of(&[household_genesis_change(&village(), "hh-099")]),
    )
    .expect("a genesis is nobody's");
    assert_eq!(got.new_changes.len(), 1);
    assert!(got.new_changes[0].structural && got.actors.is_empty());
}

#[test]
fn a_device_writes_only_under_its_own_actors() {
    let limits = InputLimits::default();
    let mut a = SurveyDocument::create(village(), actor("tablet-a", 1));
    a.apply(&[Edit::set(hh("hh-001"), "members", FieldValue::Int(4))], 1).unwrap();
    let captured = message_of(&edits_of(&a));
    let r = refused(RefusalCode::ActorConflict, "tablet-b", &limits, &captured);
    assert!(r.message.contains("device tablet-a's"), "{}", r.message);
    // Its author uploads it: admitted, bound to it.
    let mut hub = SurveyDocument::create(village(), ActorId::random());
    let got = from("tablet-a", &limits, &mut DocSession::resume(None), &mut hub, &captured).expect("its own");
    assert_eq!(got.actors, vec![actor("tablet-a", 1).to_hex_string()]);
    // A legacy actor is admitted only from the device it is bound to.
    let legacy = ActorId::from([9u8; 16]);
    let mut old = SurveyDocument::create(village(), legacy.clone());
    old.apply(&[Edit::set(hh("hh-002"), "members", FieldValue::Int(2))], 1).unwrap();
    let bytes = message_of(&edits_of(&old));
    let bound = |a: &str| Ok((a == legacy.to_hex_string()).then(|| "tablet-b".to_owned()));
    for (device, ok) in [("tablet-b", true), ("tablet-a", false)] {
        let mut hub = SurveyDocument::create(village(), ActorId::random());
        let got = DocSession::resume(None).receive_from(
            &mut hub,
            &bytes,
            &Uploader { device, limits: &limits, legacy_owner: &bound },
        );
        assert_eq!(got.is_ok(), ok, "{device}: {got:?}");
        if let Ok(got) = got {
            assert!(got.actors.is_empty(), "legacy actors are never bound anew");
        }
    }
    // Fresh actors per message are bounded.
    let mut many = Vec::new();
    for n in 0..5 {
        let mut d = SurveyDocument::create(village(), actor("tablet-a", n));
        d.apply(&[Edit::set(hh(&format!("hh-00{n}")), "members", FieldValue::Int(1))], 1).unwrap();
        many.extend(edits_of(&d));
    }
    refused(RefusalCode::TooManyActors, "tablet-a", &limits, &message_of(&many));
}

#[test]
fn a_waiting_change_is_judged_and_applied_as_its_senders_only() {
    let limits = InputLimits::default();
    let mut hub = SurveyDocument::create(village(), ActorId::random());
    let (mut sa, mut sb) = (DocSession::resume(None), DocSession::resume(None));
    // A edits hh-050 before the hub has the household: the edit waits in A's session.
    let mut a = SurveyDocument::create(village(), actor("tablet-a", 1));
    a.apply(&[Edit::set(hh("hh-050"), "members", FieldValue::Int(3))], 1).unwrap();
    let a_edit = edits_of(&a).pop().unwrap();
    let bad = {
        let mut d = a.clone();
        let obj = d.household_obj("hh-050").unwrap();
        let mut tx = d.automerge_mut().transaction();
        tx.put(&obj, "adults", ScalarValue::Str("many".into())).unwrap();
        tx.commit();
        d.automerge().get_last_local_change().unwrap().clone()
    };
    let got =
        from("tablet-a", &limits, &mut sa, &mut hub, &message_of(&[a_edit.clone(), bad])).expect("waits");
    assert_eq!((got.new_changes.len(), got.pending, sa.waiting()), (0, 2, 2));
    // B creates hh-050: its upload stores exactly its own change.
    let before = hub.heads();
    let genesis = household_genesis_change(&village(), "hh-050");
    let got = from("tablet-b", &limits, &mut sb, &mut hub, &message_of(std::slice::from_ref(&genesis)))
        .expect("B is not judged for A");
    assert_eq!(
        got.new_changes.iter().map(|c| c.hash.clone()).collect::<Vec<_>>(),
        vec![genesis.hash().to_string()]
    );
    assert!(
        hub.automerge().get_change_by_hash(&a_edit.hash()).is_none(),
        "A's edit does not ride on B's round"
    );
    assert_ne!(hub.heads(), before);
    // A's next round: its rule-breaking change is refused as A's, nothing of it applies.
    let before = hub.heads();
    let r = from("tablet-a", &limits, &mut sa, &mut hub, &message_of(&[])).expect_err("A's own breach");
    assert_eq!(r.code, RefusalCode::RuleBroken);
    assert_eq!(hub.heads(), before);
    // Without it, A's edit applies in A's round, attributed to A.
    let mut sa = DocSession::resume(None);
    let got = from("tablet-a", &limits, &mut sa, &mut hub, &message_of(std::slice::from_ref(&a_edit)))
        .expect("applies");
    assert_eq!(got.new_changes.len(), 1);
    assert_eq!(got.new_changes[0].actor, actor("tablet-a", 1).to_hex_string());
}

#[test]
fn waiting_changes_are_bounded_and_can_be_taken_back() {
    let limits = InputLimits { max_waiting_per_document: 2, ..InputLimits::default() };
    let mut a = SurveyDocument::create(village(), actor("tablet-a", 1));
    for n in 1..=3 {
        a.apply(&[Edit::set(hh("hh-001"), "members", FieldValue::Int(n))], n).unwrap();
    }
    let mut edits = edits_of(&a);
    edits.remove(0); // the household genesis: everything after it waits
    assert_eq!(edits.len(), 3);
    let r = refused(RefusalCode::WaitingLimit, "tablet-a", &limits, &message_of(&edits));
    assert!(r.message.contains("at most 2"), "{}", r.message);
    let mut hub = SurveyDocument::create(village(), ActorId::random());
    let mut session = DocSession::resume(None);
    from("tablet-a", &limits, &mut session, &mut hub, &message_of(&edits[..2])).expect("two may wait");
    let taken = session.take_waiting();
    assert_eq!(
        taken.iter().map(Change::hash).collect::<Vec<_>>(),
        edits[..2].iter().map(Change::hash).collect::<Vec<_>>()
    );
}

#[test]
fn a_refused_message_keeps_nothing_of_itself() {
    let limits = InputLimits::default();
    let mut hub = SurveyDocument::create(village(), ActorId::random());
    let mut session = DocSession::resume(None);
    let mut a = SurveyDocument::create(village(), actor("tablet-a", 2));
    a.apply(&[Edit::set(hh("hh-001"), "members", FieldValue::Int(4))], 1).unwrap();
    let obj = a.household_obj("hh-001").unwrap();
    let mut tx = a.automerge_mut().transaction();
    tx.put(&obj, "adults", ScalarValue::Int(-3)).unwrap();
    tx.commit();
    let before = (hub.heads(), session.persisted());
    let r = from("tablet-a", &limits, &mut session, &mut hub, &message_of(&edits_of(&a)))
        .expect_err("rule broken");
    assert_eq!(r.code, RefusalCode::RuleBroken);
    assert_eq!((hub.heads(), session.persisted()), before);
    assert_eq!(session.waiting(), 0);
}

#[test]
fn commit_messages_and_extra_bytes_are_bounded() {
    let mut a = SurveyDocument::create(village(), actor("tablet-a", 1));
    a.apply(&[Edit::set(hh("hh-001"), "members", FieldValue::Int(4))], 1).unwrap();
    let obj = a.household_obj("hh-001").unwrap();
    let mut tx = a.automerge_mut().transaction();
    tx.put(&obj, "adults", ScalarValue::Int(2)).unwrap();
    tx.commit_with(
        sync_core::automerge::transaction::CommitOptions::default().with_message("x".repeat(2048)),
    );
    let r = refused(RefusalCode::TooLarge, "tablet-a", &InputLimits::default(), &message_of(&edits_of(&a)));
    assert!(r.message.contains("commit message of 2048 bytes"), "{}", r.message);
}
