//! How long the hub takes to recognise genesis changes, as in a first sync:
//! every household is new, so nothing computed for one helps the next.
//!
//! Run with `cargo test --release -p sync-core --test genesis_speed -- --ignored --nocapture`;
//! it prints figures and asserts nothing about time.

use std::time::Instant;

use sync_core::automerge::transaction::{CommitOptions, Transactable};
use sync_core::automerge::{ActorId, Change, ObjType, ReadDoc, ScalarValue, ROOT};
use sync_core::ids::DocumentId;
use sync_core::survey::{genesis_actor, household_actor, is_structural, SurveyDocument};
use sync_core::validate::check_change;

/// A household's genesis made by hand through a transaction, the way every
/// replica makes it, without going through the library's own builders.
fn household_genesis_by_hand(id: &DocumentId, household: &str) -> Change {
    let mut d = SurveyDocument::create(id.clone(), household_actor(id, household));
    let am = d.automerge_mut();
    let households = match am.get(ROOT, "households") {
        Ok(Some((_, obj))) => obj,
        _ => panic!("a village has households"),
    };
    am.transact_with::<_, _, sync_core::automerge::AutomergeError, _>(
        |_| CommitOptions::default().with_time(0),
        |tx| {
            let hh = tx.put_object(&households, household, ObjType::Map)?;
            tx.put(&hh, "qr_codes_issued", ScalarValue::counter(0))?;
            Ok(())
        },
    )
    .unwrap();
    am.get_last_local_change().unwrap()
}

fn per_call_us(n: usize, run: impl FnMut(usize)) -> f64 {
    let mut run = run;
    let start = Instant::now();
    for i in 0..n {
        run(i);
    }
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

#[test]
#[ignore = "a measurement: run it in release with --ignored --nocapture"]
fn genesis_recognition_speed() {
    const N: usize = 2_000;
    let id: DocumentId = "village:nhu-co-03:2024-1".parse().unwrap();
    let checked: Vec<Change> = (0..N).map(|i| household_genesis_by_hand(&id, &format!("hh-c{i}"))).collect();
    let classified: Vec<Change> =
        (0..N).map(|i| household_genesis_by_hand(&id, &format!("hh-s{i}"))).collect();
    let mut doc = SurveyDocument::create(id.clone(), ActorId::from([1u8; 16]));
    doc.automerge_mut().apply_changes(checked.iter().chain(&classified).cloned()).unwrap();
    assert_eq!(doc.household_ids(None).len(), 2 * N);

    let check = per_call_us(N, |i| assert!(check_change(&doc, &checked[i]).is_ok()));
    let structural = per_call_us(N, |i| assert!(is_structural(&id, &classified[i])));
    // The document genesis, asked for again and again.
    let genesis = household_genesis_by_hand(&id, "hh-x").deps()[0];
    let _ = genesis_actor(&id);
    let documents: Vec<DocumentId> =
        (0..N).map(|i| format!("village:v-{i}:2024-1").parse().unwrap()).collect();
    let doc_genesis = per_call_us(N, |i| {
        std::hint::black_box(sync_core::survey::genesis_change(&documents[i]).hash());
    });
    // An edit that is no genesis, for scale.
    let mut edit = SurveyDocument::create(id.clone(), ActorId::from([2u8; 16]));
    edit.apply(
        &[sync_core::survey::Edit::set(
            sync_core::survey::Target::Facts,
            "digital_team_members",
            sync_core::survey::FieldValue::Int(3),
        )],
        1,
    )
    .unwrap();
    let edit = edit.automerge().get_last_local_change().unwrap();
    doc.automerge_mut().apply_changes([edit.clone()]).unwrap();
    let not_structural = per_call_us(N, |_| assert!(!is_structural(&id, &edit)));
    println!(
        "check_change(household genesis): {check:.1} µs; is_structural(household genesis): {structural:.1} µs; \
         genesis_change(new document): {doc_genesis:.1} µs; is_structural(an edit): {not_structural:.2} µs \
         (document genesis {genesis})"
    );
}
