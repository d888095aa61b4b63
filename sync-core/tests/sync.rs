//! The sync engine between a device and a hub: validation, refusals that
//! change nothing, every byte accounted for, and small re-syncs.

use sync_core::automerge::transaction::Transactable;
use sync_core::automerge::{ActorId, ReadDoc, ScalarValue, ROOT};
use sync_core::ids::DocumentId;
use sync_core::survey::{Edit, FieldValue, SurveyDocument, Target};
use sync_core::sync::{DocSession, RefusalCode, Trust, MAX_ROUNDS};

fn village() -> DocumentId {
    "village:song-cau-04:2024-1".parse().unwrap()
}

fn hh(id: &str) -> Target {
    Target::Household(id.parse().unwrap())
}

/// Runs rounds until both sides are quiet; returns bytes device→hub and hub→device.
fn sync(
    device: &mut SurveyDocument,
    dev: &mut DocSession,
    hub: &mut SurveyDocument,
    hs: &mut DocSession,
) -> (usize, usize) {
    let (mut up, mut down) = (0, 0);
    for _ in 0..MAX_ROUNDS {
        let to_hub = dev.generate(device);
        if let Some(m) = &to_hub {
            up += m.len();
            hs.receive(hub, m, Trust::Validate).expect("hub accepts");
        }
        let to_dev = hs.generate(hub);
        if let Some(m) = &to_dev {
            down += m.len();
            dev.receive(device, m, Trust::Peer).expect("device accepts");
        }
        if to_hub.is_none() && to_dev.is_none() {
            return (up, down);
        }
    }
    panic!("did not go quiet in {MAX_ROUNDS} rounds");
}

#[test]
fn a_device_and_a_hub_converge_and_resync_moves_only_the_edit() {
    let mut device = SurveyDocument::create(village(), ActorId::from([1; 16]));
    let mut hub = SurveyDocument::empty(village(), ActorId::from([9; 16]));
    // A long history: 60 households, each recorded over three visits.
    for visit in 0..3 {
        for n in 0..60 {
            let t = hh(&format!("hh-{n:03}"));
            let edit = match visit {
                0 => Edit::set(t, "members", FieldValue::Int(5)),
                1 => Edit::set(t, "adults", FieldValue::Int(3)),
                _ => Edit::set(t, "fibre_broadband", FieldValue::Bool(n % 2 == 0)),
            };
            device.apply(&[edit], visit * 100 + n).unwrap();
        }
    }
    let (mut dev, mut hs) = (DocSession::resume(None), DocSession::resume(None));
    let (first_up, _) = sync(&mut device, &mut dev, &mut hub, &mut hs);
    assert_eq!(hub.heads(), device.heads());
    assert_eq!(hub.snapshot(None).unwrap(), device.snapshot(None).unwrap());

    // Both sides persist their sessions; a later exchange resumes from them.
    let (dev_saved, hub_saved) = (dev.persisted(), hs.persisted());
    let before = device.heads();
    device.apply(&[Edit::set(hh("hh-010"), "members", FieldValue::Int(6))], 99).unwrap();
    let edit_bytes: usize = device.automerge().get_changes(&before).iter().map(|c| c.raw_bytes().len()).sum();
    // Without persisted sessions the peers must describe their whole history.
    let (mut dev_fresh, mut hub_fresh) = (device.clone(), hub.clone());
    let (fresh_up, fresh_down) =
        sync(&mut dev_fresh, &mut DocSession::resume(None), &mut hub_fresh, &mut DocSession::resume(None));
    let (mut dev, mut hs) = (DocSession::resume(Some(&dev_saved)), DocSession::resume(Some(&hub_saved)));
    let (up, down) = sync(&mut device, &mut dev, &mut hub, &mut hs);
    assert_eq!(hub.heads(), device.heads());
    assert!(
        (up + down) * 2 < fresh_up + fresh_down,
        "re-sync moved {up}+{down} bytes; without persisted sessions {fresh_up}+{fresh_down}; first sync {first_up}"
    );
    assert!(up < edit_bytes + 400, "re-sync sent {up} bytes for a {edit_bytes}-byte edit");
}

/// A side counts the genesis as shared with its peer only when both hold
/// it: a device whose copy is still empty does not, so what it later asks
/// for includes the genesis.
#[test]
fn the_genesis_counts_as_shared_only_when_both_sides_hold_it() {
    let hub = SurveyDocument::create(village(), ActorId::from([9; 16]));
    let hello = DocSession::resume(None).generate(&hub).expect("the hub speaks first");
    let mut empty = SurveyDocument::empty(village(), ActorId::from([1; 16]));
    let mut session = DocSession::resume(None);
    session.receive(&mut empty, &hello, Trust::Peer).expect("device accepts");
    assert!(session.shared_heads().is_empty(), "an empty copy shares nothing");
    let mut holding = SurveyDocument::create(village(), ActorId::from([1; 16]));
    let mut session = DocSession::resume(None);
    session.receive(&mut holding, &hello, Trust::Peer).expect("device accepts");
    assert_eq!(session.shared_heads(), holding.heads(), "both hold the genesis");
}

#[test]
fn a_change_that_breaks_a_type_rule_is_refused_and_changes_nothing() {
    let mut device = SurveyDocument::create(village(), ActorId::from([1; 16]));
    let mut hub = SurveyDocument::create(village(), ActorId::from([9; 16]));
    device.apply(&[Edit::set(hh("hh-001"), "members", FieldValue::Int(4))], 1).unwrap();
    // A hostile or buggy client bypasses the typed API and writes -3.
    let obj = device.household_obj("hh-001").unwrap();
    let mut tx = device.automerge_mut().transaction();
    tx.put(&obj, "adults", ScalarValue::Int(-3)).unwrap();
    tx.commit();
    let hub_before = hub.heads();
    let mut hs = DocSession::resume(None);
    let mut dev = DocSession::resume(None);
    let mut refusal = None;
    for _ in 0..MAX_ROUNDS {
        let Some(m) = dev.generate(&device) else { break };
        match hs.receive(&mut hub, &m, Trust::Validate) {
            Ok(_) => {}
            Err(r) => {
                refusal = Some(r);
                break;
            }
        }
        if let Some(reply) = hs.generate(&hub) {
            dev.receive(&mut device, &reply, Trust::Peer).unwrap();
        }
    }
    let r = refusal.expect("the bad change is refused");
    assert_eq!(r.code, RefusalCode::RuleBroken);
    let breach = r.breach.unwrap();
    assert_eq!(breach.document, village());
    assert_eq!(breach.household.as_deref(), Some("hh-001"));
    assert_eq!(breach.field.as_deref(), Some("adults"));
    assert_eq!(breach.rule, "type");
    assert_eq!(hub.heads(), hub_before, "nothing of the refused message was applied");
}

#[test]
fn unknown_fields_nested_objects_and_identity_rewrites_are_refused() {
    type Attack = fn(&mut SurveyDocument);
    let cases: [(&str, Attack); 4] = [
        ("unknown_field", |d| {
            let obj = d.household_obj("hh-001").unwrap();
            let mut tx = d.automerge_mut().transaction();
            tx.put(&obj, "pets", 2).unwrap();
            tx.commit();
        }),
        ("no_nested_objects", |d| {
            let obj = d.household_obj("hh-001").unwrap();
            let mut tx = d.automerge_mut().transaction();
            tx.put_object(&obj, "members", sync_core::automerge::ObjType::Map).unwrap();
            tx.commit();
        }),
        ("identity_fixed", |d| {
            let mut tx = d.automerge_mut().transaction();
            tx.put(ROOT, "place", "elsewhere").unwrap();
            tx.commit();
        }),
        ("household_genesis", |d| {
            let hobj = match d.automerge().get(ROOT, "households").unwrap() {
                Some((_, id)) => id,
                None => unreachable!(),
            };
            let mut tx = d.automerge_mut().transaction();
            tx.put_object(&hobj, "hh-999", sync_core::automerge::ObjType::Map).unwrap();
            tx.commit();
        }),
    ];
    for (rule, attack) in cases {
        let mut device = SurveyDocument::create(village(), ActorId::from([1; 16]));
        device.apply(&[Edit::set(hh("hh-001"), "members", FieldValue::Int(4))], 1).unwrap();
        let mut hub = device.clone();
        hub.automerge_mut().set_actor(ActorId::from([9; 16]));
        attack(&mut device);
        let mut dev = DocSession::resume(None);
        let mut hs = DocSession::resume(None);
        let mut got = None;
        for _ in 0..MAX_ROUNDS {
            let Some(m) = dev.generate(&device) else { break };
            if let Err(r) = hs.receive(&mut hub, &m, Trust::Validate) {
                got = Some(r);
                break;
            }
            if let Some(reply) = hs.generate(&hub) {
                dev.receive(&mut device, &reply, Trust::Peer).unwrap();
            }
        }
        let r = got.unwrap_or_else(|| panic!("{rule}: not refused"));
        assert_eq!(r.breach.as_ref().map(|b| b.rule.as_str()), Some(rule), "{r:?}");
    }
}

#[test]
fn junk_truncated_and_trailing_bytes_are_refused_never_dropped() {
    let mut device = SurveyDocument::create(village(), ActorId::from([1; 16]));
    device.apply(&[Edit::set(hh("hh-001"), "members", FieldValue::Int(4))], 1).unwrap();
    let mut hub = SurveyDocument::create(village(), ActorId::from([9; 16]));
    let mut probe = DocSession::resume(None);
    let hello = probe.generate(&device).unwrap();
    // First round so the device has something to send with changes.
    let mut hs = DocSession::resume(None);
    hs.receive(&mut hub, &hello, Trust::Validate).unwrap();
    let reply = hs.generate(&hub).unwrap();
    probe.receive(&mut device, &reply, Trust::Peer).unwrap();
    let with_changes = probe.generate(&device).unwrap();

    let mut trailing = with_changes.clone();
    trailing.extend_from_slice(b"JUNKJUNK");
    let truncated = &with_changes[..with_changes.len() - 5];
    // The trap from the notes: a valid change followed by junk inside the
    // change data, which load_incremental would accept and silently drop.
    let mut smuggled = sync_core::automerge::sync::Message::decode(&with_changes).unwrap();
    let mut chunk: Vec<u8> = smuggled.changes.iter().next().expect("has changes").to_vec();
    chunk.extend_from_slice(&[0u8; 16]);
    smuggled.changes = vec![chunk].into();
    let smuggled = smuggled.encode();
    let random: Vec<u8> = (0..200u32).map(|i| (i * 7919 % 251) as u8).collect();
    for (name, bytes, codes) in [
        ("trailing", &trailing[..], &[RefusalCode::TrailingBytes][..]),
        ("truncated", truncated, &[RefusalCode::Undecodable, RefusalCode::BadChange][..]),
        ("random", &random[..], &[RefusalCode::Undecodable, RefusalCode::TrailingBytes][..]),
        ("empty", &[][..], &[RefusalCode::Undecodable][..]),
        ("junk after a valid change", &smuggled[..], &[RefusalCode::BadChange][..]),
    ] {
        let before = hub.heads();
        let mut s = hs.clone();
        let r = s.receive(&mut hub, bytes, Trust::Validate).expect_err(name);
        assert!(codes.contains(&r.code), "{name}: {r:?}");
        assert_eq!(hub.heads(), before, "{name}: nothing applied");
    }
    // The genuine message is still accepted afterwards.
    let got = hs.receive(&mut hub, &with_changes, Trust::Validate).unwrap();
    assert!(!got.new_changes.is_empty());
}

#[test]
fn an_admission_check_can_turn_a_message_away_before_anything_applies() {
    let mut device = SurveyDocument::create(village(), ActorId::from([1; 16]));
    device.apply(&[Edit::set(hh("hh-001"), "members", FieldValue::Int(4))], 1).unwrap();
    let mut hub = SurveyDocument::create(village(), ActorId::from([9; 16]));
    let (mut dev, mut hs) = (DocSession::resume(None), DocSession::resume(None));
    let banned = ActorId::from([1; 16]).to_hex_string();
    let before = hub.heads();
    let mut refused = None;
    for _ in 0..MAX_ROUNDS {
        let Some(m) = dev.generate(&device) else { break };
        match hs.receive_admitting(&mut hub, &m, Trust::Validate, |c| {
            if !c.structural && c.actor == banned {
                Err(format!("actor {} belongs to another device", c.actor))
            } else {
                Ok(())
            }
        }) {
            Ok(_) => {}
            Err(r) => {
                refused = Some(r);
                break;
            }
        }
        if let Some(reply) = hs.generate(&hub) {
            dev.receive(&mut device, &reply, Trust::Peer).unwrap();
        }
    }
    let r = refused.expect("turned away");
    assert_eq!(r.code, RefusalCode::NotAdmitted);
    assert!(r.message.contains("another device"), "{}", r.message);
    assert_eq!(hub.heads(), before);
}

/// A Bloom-filter false positive makes a peer hold back a change the other
/// side lacks while sending one that depends on it. The receiver must keep
/// the early change waiting and ask for the missing dependency; asking for
/// the change it already got would make the sender loop on it.
#[test]
fn a_change_sent_without_its_dependency_waits_and_the_dependency_is_asked_for() {
    use sync_core::automerge::sync::Message;
    let mut device = SurveyDocument::create(village(), ActorId::from([1; 16]));
    let mut hub = SurveyDocument::create(village(), ActorId::from([9; 16]));
    device.apply(&[Edit::set(hh("hh-001"), "members", FieldValue::Int(4))], 1).unwrap();
    let before_last = device.heads();
    device.apply(&[Edit::set(hh("hh-001"), "adults", FieldValue::Int(2))], 2).unwrap();
    let last = device.automerge().get_changes(&before_last).pop().unwrap();

    // The hub gets only the last change: its dependencies were held back.
    let (mut dev, mut hs) = (DocSession::resume(None), DocSession::resume(None));
    let hello = dev.generate(&device).unwrap();
    hs.receive(&mut hub, &hello, Trust::Validate).unwrap();
    let mut early = Message::decode(&hello).unwrap();
    early.changes = vec![last.raw_bytes().to_vec()].into();
    let got = hs.receive(&mut hub, &early.encode(), Trust::Validate).unwrap();
    assert!(got.new_changes.is_empty() && got.pending > 0, "{got:?}");
    let reply = Message::decode(&hs.generate(&hub).unwrap()).unwrap();
    assert!(!reply.need.is_empty(), "the hub asks for what it lacks");
    assert!(!reply.need.contains(&last.hash()), "it does not ask again for the change it holds");
    assert!(reply.need.iter().all(|h| device.automerge().get_change_by_hash(h).is_some()));

    // A sync that delivers the rest completes the document.
    let mut dev = DocSession::resume(None);
    sync(&mut device, &mut dev, &mut hub, &mut hs);
    assert_eq!(hub.heads(), device.heads());
    assert_eq!(hub.snapshot(None).unwrap(), device.snapshot(None).unwrap());
}
