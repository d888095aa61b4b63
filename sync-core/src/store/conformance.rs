//! The conformance suite every [`Store`] backend must pass.
//!
//! Each check takes a fresh, empty store from the caller's factory and
//! panics with a message naming the promise that was broken. A backend's
//! test calls [`run_all`] with its own factory, and
//! [`units_of_work_on_one_database_do_not_interleave`] with two handles on
//! one database (two connections, as two processes would have).

use super::{NewRefusedUpload, Store, StoreError, WriteBatch};
use crate::access::{AuditEvent, CredentialKind, DeviceRecord};
use crate::ids::{DocumentId, PeerId};
use crate::registry::Registry;
use crate::survey::{Edit, FieldValue, SurveyDocument, Target};
use crate::sync::{ChangeRecord, RefusalCode};
use automerge::ActorId;

fn doc_id() -> DocumentId {
    "village:nhu-co-01:2024-1".parse().expect("valid id")
}

fn sample_changes() -> (SurveyDocument, Vec<ChangeRecord>) {
    let mut doc = SurveyDocument::create(doc_id(), ActorId::from([7u8; 16]));
    let hh = Target::Household("hh-001".parse().expect("valid id"));
    doc.apply(&[Edit::set(hh.clone(), "members", FieldValue::Int(5))], 1_000).expect("edit");
    doc.apply(&[Edit::set(hh, "adults", FieldValue::Int(3))], 2_000).expect("edit");
    let changes =
        doc.automerge().get_changes(&[]).into_iter().map(|c| ChangeRecord::new(&doc_id(), c)).collect();
    (doc, changes)
}

/// Runs every check.
pub fn run_all<S: Store>(mut make: impl FnMut() -> S) {
    changes_are_stored_once(make());
    batches_committed_together_report_their_own_summaries(make());
    documents_load_back_identical(make());
    compaction_keeps_history_and_identity(make());
    sync_states_are_per_peer_and_document(make());
    refused_uploads_keep_every_byte(make());
    places_and_settings_round_trip(make());
    devices_credentials_and_actors(make());
    audit_log_and_admin_tokens(make());
    export_then_import_keeps_every_row(make(), make());
    a_unit_of_work_is_all_or_nothing(make());
    changes_since_follows_insertion_order(make());
}

/// A unit of work that fails half-way (an error or a panic) leaves nothing
/// of what it wrote, and the store is usable after it; one that succeeds
/// keeps everything and reads its own writes; a failed unit inside another
/// undoes only its own writes.
pub fn a_unit_of_work_is_all_or_nothing<S: Store>(mut store: S) {
    let (_, changes) = sample_changes();
    let event = |action: &str| AuditEvent {
        at: 1,
        who: "admin:hoa".into(),
        action: action.into(),
        subject: "phone-a".into(),
        detail: String::new(),
    };
    let write_everything = |s: &mut dyn Store| -> Result<(), StoreError> {
        s.put_device(&phone("phone-a", &["nhu-co"]))?;
        s.set_credential("phone-a", CredentialKind::Enrollment, "code-hash", None)?;
        s.commit(&WriteBatch { changes: changes.clone(), ..Default::default() }, 10)?;
        s.append_audit(&event("device.add"))?;
        assert!(s.device("phone-a")?.is_some(), "a unit of work reads its own writes");
        Ok(())
    };
    let failed = store.unit_of_work(&mut |s| {
        write_everything(s)?;
        Err(StoreError::NotFound("half-way".into()))
    });
    assert!(matches!(failed, Err(StoreError::NotFound(ref what)) if what == "half-way"), "{failed:?}");
    let nothing = |store: &S, when: &str| {
        assert_eq!(store.devices().expect("devices"), vec![], "{when}: no device");
        assert!(store.document_ids().expect("documents").is_empty(), "{when}: no change");
        assert!(store.audit(10).expect("audit").is_empty(), "{when}: no audit line");
        assert!(
            store.device_for_credential(CredentialKind::Enrollment, "code-hash", 0).expect("find").is_none(),
            "{when}: no credential"
        );
    };
    nothing(&store, "after an error");

    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        store.unit_of_work(&mut |s| {
            write_everything(s)?;
            panic!("a unit of work panics half-way");
        })
    }));
    assert!(panicked.is_err(), "the panic goes on");
    nothing(&store, "after a panic");

    store
        .unit_of_work(&mut |s| {
            write_everything(s)?;
            let inner = s.unit_of_work(&mut |s| {
                s.append_audit(&event("device.revoke"))?;
                Err(StoreError::NotFound("inner".into()))
            });
            assert!(inner.is_err(), "the inner unit fails");
            Ok(())
        })
        .expect("a unit of work that succeeds");
    assert_eq!(store.device("phone-a").expect("get"), Some(phone("phone-a", &["nhu-co"])));
    assert_eq!(store.document_ids().expect("documents"), vec![doc_id()]);
    let actions: Vec<String> = store.audit(10).expect("audit").into_iter().map(|e| e.action).collect();
    assert_eq!(actions, ["device.add"], "the failed inner unit left nothing, the outer kept its writes");
}

/// Two handles on one database (`a` and `b`, as two processes would have)
/// run device steps at the same moment (a barrier releases both threads):
/// one one-time code enrolls exactly one device and the other enrollment is
/// refused; a revoke racing an enrollment is never undone by it. Each race
/// is run several times (a bounded number), each round asserted.
pub fn units_of_work_on_one_database_do_not_interleave<S: Store>(mut a: S, mut b: S) {
    use crate::devices::{add_device, enroll, revoke_device, AccessError};
    const ROUNDS: u8 = 8;
    let registry = Registry::sample_bac_kan();
    let communes = ["nhu-co".to_owned()];
    let random =
        |round: u8, who: u8| -> [u8; 32] { std::array::from_fn(|i| round ^ who.wrapping_mul(97) ^ i as u8) };
    for round in 0..ROUNDS {
        let now = 1_000 + i64::from(round) * 10;
        let (device, code) =
            add_device(&mut a, &registry, "Chị Lan", &communes, "admin:hoa", now, random(round, 0))
                .expect("add");
        let barrier = std::sync::Barrier::new(2);
        let (first, second) = std::thread::scope(|scope| {
            let (barrier, code) = (&barrier, &code);
            let (a, b) = (&mut a, &mut b);
            let first = scope.spawn(move || {
                barrier.wait();
                enroll(a, code, None, now + 1, random(round, 1))
            });
            let second = scope.spawn(move || {
                barrier.wait();
                enroll(b, code, None, now + 1, random(round, 2))
            });
            (first.join().expect("first enrollment"), second.join().expect("second enrollment"))
        });
        let (token, refused) = match (first, second) {
            (Ok((_, token)), Err(refused)) | (Err(refused), Ok((_, token))) => (token, refused),
            other => panic!("round {round}: one code must enroll exactly once, got {other:?}"),
        };
        assert!(matches!(refused, AccessError::InvalidCode), "round {round}: {refused:?}");
        let holder = a
            .device_for_credential(CredentialKind::DeviceToken, &crate::access::hash_secret(&token), now + 2)
            .expect("find");
        assert_eq!(holder.map(|d| d.id), Some(device.id.clone()), "round {round}: the winner's token works");
        let enrollments = b
            .audit(1_000)
            .expect("audit")
            .into_iter()
            .filter(|e| e.action == "device.enroll" && e.subject == device.id)
            .count();
        assert_eq!(enrollments, 1, "round {round}: one enrollment in the audit log");
    }
    for round in 0..ROUNDS {
        let now = 5_000 + i64::from(round) * 10;
        let (device, code) =
            add_device(&mut a, &registry, "Anh Tuấn", &communes, "admin:hoa", now, random(round, 3))
                .expect("add");
        let barrier = std::sync::Barrier::new(2);
        let (enrolled, revoked) = std::thread::scope(|scope| {
            let (barrier, code, id) = (&barrier, &code, &device.id);
            let (a, b) = (&mut a, &mut b);
            let enrolling = scope.spawn(move || {
                barrier.wait();
                enroll(a, code, Some("1.4.0".into()), now + 1, random(round, 4))
            });
            let revoking = scope.spawn(move || {
                barrier.wait();
                revoke_device(b, id, "admin:hoa", now + 1)
            });
            (enrolling.join().expect("enrollment"), revoking.join().expect("revoke"))
        });
        revoked.expect("the revoke succeeds");
        assert!(
            matches!(enrolled, Ok(_) | Err(AccessError::InvalidCode)),
            "round {round}: the enrollment succeeds before the revoke or is refused after it: {enrolled:?}"
        );
        let stored = a.device(&device.id).expect("get").expect("present");
        assert_eq!(stored.revoked_at, Some(now + 1), "round {round}: the revoke stands");
        assert!(
            a.device_for_credential(CredentialKind::Enrollment, &crate::access::hash_secret(&code), now + 2)
                .expect("find")
                .is_none(),
            "round {round}: no code is left"
        );
    }
}

fn phone(id: &str, communes: &[&str]) -> DeviceRecord {
    DeviceRecord {
        id: id.into(),
        name: format!("Surveyor {id}"),
        communes: communes.iter().map(|c| c.to_string()).collect(),
        created_at: 1,
        enrolled_at: None,
        revoked_at: None,
        last_seen: None,
        app_version: None,
    }
}

/// Devices read back as written; credentials find their device until they
/// expire or are replaced; an actor stays bound to the first device.
pub fn devices_credentials_and_actors<S: Store>(mut store: S) {
    let mut a = phone("phone-a", &["nhu-co"]);
    store.put_device(&a).expect("put");
    store.put_device(&phone("phone-b", &["song-cau", "nhu-co"])).expect("put");
    a.enrolled_at = Some(5);
    a.app_version = Some("1.2.0".into());
    store.put_device(&a).expect("update");
    assert_eq!(store.device("phone-a").expect("get"), Some(a.clone()));
    assert_eq!(store.devices().expect("list").len(), 2);
    assert_eq!(store.device("nobody").expect("get"), None);

    store.set_credential("phone-a", CredentialKind::Enrollment, "code-hash", Some(100)).expect("set");
    let found = store.device_for_credential(CredentialKind::Enrollment, "code-hash", 50).expect("find");
    assert_eq!(found.map(|d| d.id), Some("phone-a".into()));
    assert!(
        store.device_for_credential(CredentialKind::Enrollment, "code-hash", 100).expect("find").is_none(),
        "expired"
    );
    assert!(
        store.device_for_credential(CredentialKind::DeviceToken, "code-hash", 50).expect("find").is_none(),
        "kind matters"
    );
    store.set_credential("phone-a", CredentialKind::DeviceToken, "token-1", None).expect("set");
    store.set_credential("phone-a", CredentialKind::DeviceToken, "token-2", None).expect("rotate");
    assert!(
        store.device_for_credential(CredentialKind::DeviceToken, "token-1", 50).expect("find").is_none(),
        "rotated away"
    );
    assert!(store.device_for_credential(CredentialKind::DeviceToken, "token-2", 50).expect("find").is_some());
    store.remove_credential("phone-a", CredentialKind::DeviceToken).expect("remove");
    assert!(store.device_for_credential(CredentialKind::DeviceToken, "token-2", 50).expect("find").is_none());

    assert_eq!(store.bind_actor("aa11", "phone-a", 1).expect("bind"), None);
    assert_eq!(store.bind_actor("aa11", "phone-a", 2).expect("bind"), None, "same device again is fine");
    assert_eq!(store.bind_actor("aa11", "phone-b", 3).expect("bind"), Some("phone-a".into()));
    assert_eq!(store.actor_devices().expect("list"), vec![("aa11".into(), "phone-a".into())]);

    // Bindings committed with a batch: all or nothing, the first device kept.
    let batch = WriteBatch {
        actor_bindings: vec![("bb22".into(), "phone-b".into()), ("aa11".into(), "phone-b".into())],
        ..WriteBatch::default()
    };
    store.commit(&batch, 4).expect("commit bindings");
    assert_eq!(
        store.actor_devices().expect("list"),
        vec![("aa11".into(), "phone-a".into()), ("bb22".into(), "phone-b".into())]
    );
    assert_eq!(store.actor_owner("bb22").expect("owner"), Some("phone-b".into()));
    assert_eq!(store.actor_owner("cc33").expect("owner"), None);
}

/// The audit log keeps events newest first; admin tokens find their name.
pub fn audit_log_and_admin_tokens<S: Store>(mut store: S) {
    for (at, action) in [(1, "device.add"), (2, "device.enroll"), (3, "device.revoke")] {
        let e = AuditEvent {
            at,
            who: "admin:lan".into(),
            action: action.into(),
            subject: "phone-a".into(),
            detail: String::new(),
        };
        store.append_audit(&e).expect("append");
    }
    let log = store.audit(2).expect("read");
    assert_eq!(
        log.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        vec!["device.revoke", "device.enroll"]
    );
    store.put_admin_token("lan", "hash-1", 1).expect("put");
    assert_eq!(store.admin_for_token("hash-1").expect("get").as_deref(), Some("lan"));
    assert_eq!(store.admin_for_token("hash-2").expect("get"), None);
}

/// A repeated upload is a no-op: the second commit stores nothing new.
pub fn changes_are_stored_once<S: Store>(mut store: S) {
    let (_, changes) = sample_changes();
    let batch = WriteBatch { changes: changes.clone(), ..Default::default() };
    let first = store.commit(&batch, 10).expect("commit");
    assert_eq!(first.new_changes, changes.len(), "first commit stores every change");
    let again = store.commit(&batch, 11).expect("commit");
    assert_eq!(again.new_changes, 0, "a repeated upload must store nothing");
    let meta = store.change_meta(Some(&doc_id())).expect("meta");
    assert_eq!(meta.len(), changes.len());
    // The receipt time is the commit's `now`, kept from the first commit; the
    // author's stamp is kept as it came.
    for (m, c) in meta.iter().zip(&changes) {
        assert_eq!((m.stored_at, m.time), (10, c.time), "stored_at is the first commit's time");
    }
    assert!(store.has_change(&doc_id(), &changes[0].hash).expect("has"));
    assert!(!store.has_change(&doc_id(), &"00".repeat(32)).expect("has"));
    assert_eq!(store.document_ids().expect("ids"), vec![doc_id()]);
}

/// Several batches committed in one call are each reported on their own:
/// a change counts for the first batch that stores it, refused uploads get
/// each batch's own ids, and a batch with nothing new reports nothing.
pub fn batches_committed_together_report_their_own_summaries<S: Store>(mut store: S) {
    let (_, changes) = sample_changes();
    assert!(changes.len() >= 3, "the sample has at least three changes");
    let refusal = |reason: &str| NewRefusedUpload {
        source: Some("device-a".into()),
        document: Some(doc_id().to_string()),
        code: RefusalCode::Undecodable,
        reason: reason.into(),
        bytes: reason.as_bytes().to_vec(),
        received_at: 7,
    };
    assert!(store.commit_all(&[], 5).expect("commit nothing").is_empty(), "no batch, no summary");
    // Already stored before the group: counted by nobody in it.
    store.commit(&WriteBatch { changes: vec![changes[0].clone()], ..Default::default() }, 5).expect("commit");
    let first = WriteBatch {
        changes: changes[..2].to_vec(),
        refused: vec![refusal("first-a")],
        ..Default::default()
    };
    let second = WriteBatch {
        // changes[1] overlaps with the first batch, changes[2] is new, and
        // a change repeated within one batch counts once.
        changes: vec![changes[1].clone(), changes[2].clone(), changes[2].clone()],
        refused: vec![refusal("second-a"), refusal("second-b")],
        ..Default::default()
    };
    let nothing_new = WriteBatch { changes: changes[..3].to_vec(), ..Default::default() };
    let summaries = store.commit_all(&[&first, &second, &nothing_new], 10).expect("commit together");
    assert_eq!(summaries.len(), 3, "one summary per batch");
    assert_eq!(
        summaries.iter().map(|s| s.new_changes).collect::<Vec<_>>(),
        vec![1, 1, 0],
        "each batch counts only the changes it stored first"
    );
    assert_eq!(summaries[2].first_refused_id, None, "a batch without refusals gets no id");
    let id_of = |i: usize| summaries[i].first_refused_id.expect("refusals get ids");
    let reason = |id: i64| store.refused_by_id(id).expect("get").expect("present").upload.reason;
    assert_eq!(reason(id_of(0)), "first-a");
    assert_eq!(reason(id_of(1)), "second-a");
    assert_eq!(reason(id_of(1) + 1), "second-b", "a batch's refusals have consecutive ids");
    assert_eq!(store.change_meta(Some(&doc_id())).expect("meta").len(), 3, "each change stored once");
    assert!(store.has_change(&doc_id(), &changes[2].hash).expect("has"));
}

/// What is committed loads back as the same document.
pub fn documents_load_back_identical<S: Store>(mut store: S) {
    let (doc, changes) = sample_changes();
    assert!(store.load_document(&doc_id()).expect("load").is_none(), "empty store has no document");
    store.commit(&WriteBatch { changes, ..Default::default() }, 10).expect("commit");
    let stored = store.load_document(&doc_id()).expect("load").expect("present");
    let loaded = SurveyDocument::load(
        doc_id(),
        ActorId::random(),
        stored.snapshot.as_deref(),
        stored.changes.iter().map(Vec::as_slice),
    )
    .expect("loads");
    assert_eq!(loaded.heads(), doc.heads());
    assert_eq!(loaded.snapshot(None).unwrap(), doc.snapshot(None).unwrap());
}

/// Compaction folds change rows into a snapshot without losing history,
/// and a compacted change is still known, so its re-upload stores nothing.
pub fn compaction_keeps_history_and_identity<S: Store>(mut store: S) {
    let (doc, changes) = sample_changes();
    store.commit(&WriteBatch { changes: changes.clone(), ..Default::default() }, 10).expect("commit");
    let hashes: Vec<String> = changes.iter().map(|c| c.hash.clone()).collect();
    store.compact(&doc_id(), &doc.automerge().save(), &hashes).expect("compact");
    let stored = store.load_document(&doc_id()).expect("load").expect("present");
    assert!(stored.snapshot.is_some(), "snapshot kept");
    assert!(stored.changes.is_empty(), "compacted rows no longer carry bytes");
    let loaded =
        SurveyDocument::load(doc_id(), ActorId::random(), stored.snapshot.as_deref(), []).expect("loads");
    assert_eq!(loaded.automerge().get_changes(&[]).len(), changes.len(), "history survives compaction");
    let again = store.commit(&WriteBatch { changes, ..Default::default() }, 11).expect("commit");
    assert_eq!(again.new_changes, 0, "a compacted change is still stored once");
}

/// Sync states are kept per (peer, document) and replaced on update.
pub fn sync_states_are_per_peer_and_document<S: Store>(mut store: S) {
    let a: PeerId = "device-a".parse().expect("id");
    let b: PeerId = "device-b".parse().expect("id");
    let batch = WriteBatch {
        sync_states: vec![(a.clone(), doc_id(), vec![1]), (b.clone(), doc_id(), vec![2])],
        ..Default::default()
    };
    store.commit(&batch, 5).expect("commit");
    store
        .commit(&WriteBatch { sync_states: vec![(a.clone(), doc_id(), vec![3])], ..Default::default() }, 6)
        .expect("commit");
    assert_eq!(store.sync_state(&a, &doc_id()).expect("get"), Some(vec![3]));
    assert_eq!(store.sync_state(&b, &doc_id()).expect("get"), Some(vec![2]));
    let other: DocumentId = "commune:nhu-co:2024-1".parse().expect("id");
    assert_eq!(store.sync_state(&a, &other).expect("get"), None);
    let peers = store.peers().expect("peers");
    assert_eq!(peers.len(), 2);
    assert_eq!(peers[0].peer, "device-a");
    assert_eq!(peers[0].last_sync, 6);
}

/// Refused input is kept byte for byte, with its reason and source.
pub fn refused_uploads_keep_every_byte<S: Store>(mut store: S) {
    let junk: Vec<u8> = (0..=255u8).collect();
    let r = NewRefusedUpload {
        source: Some("device-a".into()),
        document: Some(doc_id().to_string()),
        code: RefusalCode::Undecodable,
        reason: "not a sync message".into(),
        bytes: junk.clone(),
        received_at: 42,
    };
    let summary =
        store.commit(&WriteBatch { refused: vec![r.clone()], ..Default::default() }, 42).expect("commit");
    let id = summary.first_refused_id.expect("an id is given");
    let kept = store.refused_by_id(id).expect("get").expect("present");
    assert_eq!(kept.upload, r);
    assert_eq!(store.refused().expect("list").len(), 1);
    assert!(store.refused_by_id(id + 1000).expect("get").is_none());
}

/// The registry and settings read back as written.
pub fn places_and_settings_round_trip<S: Store>(mut store: S) {
    let registry = Registry::sample_bac_kan();
    let places: Vec<_> = registry.places().cloned().collect();
    store.put_places(&places).expect("put");
    assert_eq!(Registry::new(store.places().expect("get")).expect("valid"), registry);
    assert_eq!(store.setting("actor").expect("get"), None);
    store.put_setting("actor", "abc").expect("put");
    store.put_setting("actor", "def").expect("put");
    assert_eq!(store.setting("actor").expect("get").as_deref(), Some("def"));
}

/// An export imported into an empty store exports back equal, row for row
/// (compacted changes, ids and receipt times included); ids given after it
/// follow the imported ones; a store holding anything refuses an import.
pub fn export_then_import_keeps_every_row<S: Store>(mut source: S, mut target: S) {
    let (doc, changes) = sample_changes();
    store_everything(&mut source, &doc, &changes);
    let rows = source.export().expect("export");
    let counts = rows.counts();
    for table in super::export::TABLES {
        assert!(counts[table] > 0, "the sample fills table {table}");
    }
    assert!(rows.changes.iter().any(|c| c.bytes.is_none()), "a compacted change is exported too");
    target.import(&rows).expect("import");
    assert_eq!(target.export().expect("export again"), rows, "every row survives the move");
    let loaded = super::load_survey(&target, &doc_id(), ActorId::random()).expect("load").expect("present");
    assert_eq!(loaded.heads(), doc.heads(), "the document's heads survive the move");

    let last_refused = rows.refused.iter().map(|r| r.id).max().expect("refusals");
    let summary = target
        .commit(&WriteBatch { refused: vec![rows.refused[0].upload.clone()], ..Default::default() }, 99)
        .expect("commit");
    assert!(summary.first_refused_id.expect("an id") > last_refused, "new ids follow the imported ones");
    let last_audit = rows.audit.iter().map(|(id, _)| *id).max().expect("audit");
    target.append_audit(&rows.audit[0].1).expect("append");
    assert_eq!(target.export().expect("export").audit.last().map(|(id, _)| *id > last_audit), Some(true));

    match target.import(&rows) {
        Err(super::StoreError::NotEmpty(_)) => {}
        other => panic!("an import into a store holding data must be refused, got {other:?}"),
    }
}

/// Puts a row into every table.
/// Fills every table of an empty store with a few rows (a document with a
/// compacted change, a sync session, refused uploads, places, a setting, a
/// device with credentials and a bound actor, an administrator token, audit
/// lines), for tests that move a whole database; returns the document's id.
pub fn fill_every_table<S: Store>(store: &mut S) -> DocumentId {
    let (doc, changes) = sample_changes();
    store_everything(store, &doc, &changes);
    doc_id()
}

fn store_everything<S: Store>(store: &mut S, doc: &SurveyDocument, changes: &[ChangeRecord]) {
    let peer: PeerId = "device-a".parse().expect("id");
    let refusal = |reason: &str| NewRefusedUpload {
        source: Some("device-a".into()),
        document: None,
        code: RefusalCode::Undecodable,
        reason: reason.into(),
        bytes: vec![0, 1, 2, 255],
        received_at: 3,
    };
    let batch = WriteBatch {
        changes: changes.to_vec(),
        sync_states: vec![(peer, doc_id(), vec![9, 9])],
        refused: vec![refusal("one"), refusal("two")],
        actor_bindings: vec![("aa11".into(), "phone-a".into())],
    };
    store.commit(&batch, 10).expect("commit");
    store
        .compact(
            &doc_id(),
            &doc.automerge().save(),
            &changes[..1].iter().map(|c| c.hash.clone()).collect::<Vec<_>>(),
        )
        .expect("compact");
    store.put_places(&Registry::sample_bac_kan().places().cloned().collect::<Vec<_>>()).expect("places");
    store.put_setting("admin_actor", "abcd").expect("setting");
    let mut a = phone("phone-a", &["nhu-co"]);
    a.enrolled_at = Some(5);
    store.put_device(&a).expect("device");
    store.set_credential("phone-a", CredentialKind::Enrollment, "code-hash", Some(100)).expect("credential");
    store.set_credential("phone-a", CredentialKind::DeviceToken, "token-hash", None).expect("credential");
    store.put_admin_token("lan", "admin-hash", 1).expect("token");
    for action in ["device.add", "device.enroll"] {
        let e = AuditEvent {
            at: 2,
            who: "admin:lan".into(),
            action: action.into(),
            subject: "phone-a".into(),
            detail: "chi tiết".into(),
        };
        store.append_audit(&e).expect("audit");
    }
}

/// `changes_since` hands out a document's rows after a position, in
/// insertion order, each with its hash; a repeated upload adds no row, a
/// compacted row comes without bytes, and other documents' rows never show.
pub fn changes_since_follows_insertion_order<S: Store>(mut store: S) {
    let (_, changes) = sample_changes();
    assert!(store.changes_since(&doc_id(), 0).expect("read").is_empty(), "nothing stored yet");
    let first = WriteBatch { changes: changes[..1].to_vec(), ..Default::default() };
    store.commit(&first, 10).expect("commit");
    let rows = store.changes_since(&doc_id(), 0).expect("read");
    assert_eq!(rows.len(), 1);
    assert!(rows[0].position > 0, "positions start above 0");
    assert_eq!(
        (rows[0].hash.as_str(), rows[0].bytes.as_deref()),
        (changes[0].hash.as_str(), Some(&changes[0].bytes[..]))
    );
    let seen = rows[0].position;

    let other: DocumentId = "village:nhu-co-02:2024-1".parse().expect("valid id");
    let elsewhere = SurveyDocument::create(other.clone(), ActorId::from([8u8; 16]));
    let elsewhere: Vec<ChangeRecord> =
        elsewhere.automerge().get_changes(&[]).into_iter().map(|c| ChangeRecord::new(&other, c)).collect();
    store.commit(&WriteBatch { changes: elsewhere, ..Default::default() }, 11).expect("commit");
    store.commit(&WriteBatch { changes: changes.clone(), ..Default::default() }, 12).expect("commit");
    let later = store.changes_since(&doc_id(), seen).expect("read");
    let hashes: Vec<&str> = later.iter().map(|r| r.hash.as_str()).collect();
    let expected: Vec<&str> = changes[1..].iter().map(|c| c.hash.as_str()).collect();
    assert_eq!(hashes, expected, "only the rows stored after the position, in order");
    assert!(later.windows(2).all(|w| w[0].position < w[1].position), "positions grow");
    assert!(later.iter().all(|r| r.position > seen));
    let newest = later.last().expect("rows").position;
    assert!(store.changes_since(&doc_id(), newest).expect("read").is_empty(), "nothing after the newest");

    store.commit(&WriteBatch { changes: changes.clone(), ..Default::default() }, 13).expect("commit");
    assert!(
        store.changes_since(&doc_id(), newest).expect("read").is_empty(),
        "a repeated upload adds no row"
    );
    let (doc, _) = sample_changes();
    let all: Vec<String> = changes.iter().map(|c| c.hash.clone()).collect();
    store.compact(&doc_id(), &doc.automerge().save(), &all).expect("compact");
    let compacted = store.changes_since(&doc_id(), 0).expect("read");
    assert_eq!(compacted.len(), changes.len(), "compaction keeps every row");
    assert!(compacted.iter().all(|r| r.bytes.is_none()), "compacted rows come without bytes");
}
