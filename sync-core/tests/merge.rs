//! Concurrency stories: what two replicas editing offline see after merging.

use sync_core::automerge::ActorId;
use sync_core::ids::DocumentId;
use sync_core::survey::{genesis_change, Edit, FieldValue, Survey, SurveyDocument, Target, VillageSurvey};
use sync_core::validate::{conflicts, data_quality};

fn village() -> DocumentId {
    "village:nhu-co-03:2024-1".parse().unwrap()
}

fn hh(id: &str) -> Target {
    Target::Household(id.parse().unwrap())
}

fn replica(n: u8) -> SurveyDocument {
    SurveyDocument::create(village(), ActorId::from([n; 16]))
}

fn merge(a: &mut SurveyDocument, b: &mut SurveyDocument) {
    a.automerge_mut().merge(&mut b.automerge().clone()).unwrap();
    b.automerge_mut().merge(&mut a.automerge().clone()).unwrap();
}

fn village_of(doc: &SurveyDocument) -> VillageSurvey {
    match doc.snapshot(None).unwrap() {
        Survey::Village(v) => v,
        other => panic!("expected a village, got {other:?}"),
    }
}

#[test]
fn genesis_is_byte_identical_on_every_replica() {
    let a = replica(1);
    let b = replica(2);
    assert_eq!(a.heads(), b.heads(), "two replicas starting a village agree on its first change");
    assert_eq!(a.heads(), vec![genesis_change(&village()).hash()]);
}

#[test]
fn different_households_both_survive() {
    let mut a = replica(1);
    let mut b = replica(2);
    a.apply(&[Edit::set(hh("hh-001"), "members", FieldValue::Int(4))], 10).unwrap();
    b.apply(&[Edit::set(hh("hh-002"), "members", FieldValue::Int(6))], 11).unwrap();
    merge(&mut a, &mut b);
    let v = village_of(&a);
    assert_eq!(v.households["hh-001"].members, Some(4));
    assert_eq!(v.households["hh-002"].members, Some(6));
    assert_eq!(village_of(&b), v);
    assert!(conflicts(&a).is_empty());
}

#[test]
fn same_field_clash_is_shown_identically_and_listed_with_both_writers() {
    let mut a = replica(1);
    let mut b = replica(2);
    a.apply(&[Edit::set(hh("hh-001"), "members", FieldValue::Int(4))], 10).unwrap();
    b.apply(&[Edit::set(hh("hh-001"), "members", FieldValue::Int(5))], 11).unwrap();
    merge(&mut a, &mut b);
    assert_eq!(village_of(&a), village_of(&b), "every replica shows the same value");
    let shown = village_of(&a).households["hh-001"].members;
    let list = conflicts(&a);
    assert_eq!(list.len(), 1, "{list:?}");
    let c = &list[0];
    assert_eq!((c.household.as_deref(), c.field.as_str()), (Some("hh-001"), "members"));
    assert_eq!(c.shown.clone().map(|v| v.to_json()), shown.map(Into::into));
    let mut writers: Vec<(String, String)> =
        c.candidates.iter().map(|k| (k.actor.clone(), k.value.clone().unwrap().to_string())).collect();
    writers.sort();
    assert_eq!(
        writers,
        vec![(hex(1), "4".to_string()), (hex(2), "5".to_string())],
        "both candidates with the actor that wrote each"
    );
    assert_eq!(conflicts(&b), list, "the conflict reads the same on both replicas");
}

#[test]
fn both_starting_the_same_household_hides_nothing() {
    let mut a = replica(1);
    let mut b = replica(2);
    a.apply(
        &[
            Edit::set(hh("hh-007"), "members", FieldValue::Int(5)),
            Edit::set(hh("hh-007"), "fibre_broadband", FieldValue::Bool(true)),
        ],
        10,
    )
    .unwrap();
    b.apply(
        &[
            Edit::set(hh("hh-007"), "adults", FieldValue::Int(3)),
            Edit::set(hh("hh-007"), "head_name", FieldValue::Text("Hoàng Văn Thụ".into())),
        ],
        11,
    )
    .unwrap();
    a.apply(&[Edit::set(Target::Facts, "digital_team", FieldValue::Bool(true))], 12).unwrap();
    b.apply(&[Edit::set(Target::Facts, "cultural_house_internet", FieldValue::Bool(true))], 13).unwrap();
    merge(&mut a, &mut b);
    let v = village_of(&a);
    let h = &v.households["hh-007"];
    assert_eq!(h.members, Some(5));
    assert_eq!(h.fibre_broadband, Some(true));
    assert_eq!(h.adults, Some(3));
    assert_eq!(h.head_name.as_deref(), Some("Hoàng Văn Thụ"));
    assert_eq!(v.facts.digital_team, Some(true));
    assert_eq!(v.facts.cultural_house_internet, Some(true));
    assert!(conflicts(&a).is_empty(), "creating the same household is not a conflict");
}

#[test]
fn replicas_that_never_shared_a_genesis_still_merge_whole() {
    // Each replica starts the village on its own, fully offline.
    let mut a = SurveyDocument::empty(village(), ActorId::from([1; 16]));
    let mut b = SurveyDocument::empty(village(), ActorId::from([2; 16]));
    a.apply(&[Edit::set(hh("hh-001"), "members", FieldValue::Int(2))], 1).unwrap();
    b.apply(&[Edit::set(hh("hh-001"), "adults", FieldValue::Int(2))], 2).unwrap();
    merge(&mut a, &mut b);
    let h = &village_of(&a).households["hh-001"];
    assert_eq!((h.members, h.adults), (Some(2), Some(2)));
}

#[test]
fn counters_on_two_replicas_add_up() {
    let mut a = replica(1);
    let mut b = replica(2);
    a.apply(&[Edit::increment(Target::Facts, "security_cameras", 3)], 10).unwrap();
    b.apply(&[Edit::increment(Target::Facts, "security_cameras", 4)], 11).unwrap();
    a.apply(&[Edit::increment(hh("hh-001"), "qr_codes_issued", 2)], 12).unwrap();
    b.apply(&[Edit::increment(hh("hh-001"), "qr_codes_issued", 5)], 13).unwrap();
    merge(&mut a, &mut b);
    let v = village_of(&b);
    assert_eq!(v.facts.security_cameras, 7);
    assert_eq!(v.households["hh-001"].qr_codes_issued, 7);
}

#[test]
fn typed_api_refuses_bad_values_and_unknown_fields() {
    let mut a = replica(1);
    let e = a.apply(&[Edit::set(hh("hh-001"), "members", FieldValue::Int(-1))], 1).unwrap_err();
    assert!(e.to_string().contains("whole number"), "{e}");
    let e = a.apply(&[Edit::set(hh("hh-001"), "pets", FieldValue::Int(1))], 1).unwrap_err();
    assert!(e.to_string().contains("unknown field \"pets\""), "{e}");
    let e = a.apply(&[Edit::set(Target::Facts, "security_cameras", FieldValue::Int(1))], 1).unwrap_err();
    assert!(e.to_string().contains("counter"), "{e}");
    let e = a.apply(&[Edit::set(hh("hh-001"), "fibre_broadband", FieldValue::Int(1))], 1).unwrap_err();
    assert!(e.to_string().contains("true or false"), "{e}");
    assert!(village_of(&a).households.is_empty(), "a refused batch writes nothing");
}

#[test]
fn concurrent_valid_edits_that_break_a_consistency_rule_are_reported_not_refused() {
    let mut a = replica(1);
    a.apply(
        &[
            Edit::set(hh("hh-001"), "members", FieldValue::Int(5)),
            Edit::set(hh("hh-001"), "adults", FieldValue::Int(3)),
        ],
        1,
    )
    .unwrap();
    let mut b = a.clone();
    b.automerge_mut().set_actor(ActorId::from([2; 16]));
    a.apply(&[Edit::set(hh("hh-001"), "members", FieldValue::Int(2))], 2).unwrap();
    b.apply(&[Edit::set(hh("hh-001"), "adults", FieldValue::Int(4))], 3).unwrap();
    merge(&mut a, &mut b);
    let issues = data_quality(&a.snapshot(None).unwrap());
    let rules: Vec<_> = issues.iter().map(|i| (i.household.clone().unwrap(), i.rule.clone())).collect();
    assert!(rules.contains(&("hh-001".into(), "adults <= members".into())), "{rules:?}");
    assert_eq!(issues[0].document, village());
}

#[test]
fn time_travel_shows_the_document_as_it_was() {
    let mut a = replica(1);
    a.apply(&[Edit::set(hh("hh-001"), "members", FieldValue::Int(4))], 10).unwrap();
    let before = a.heads();
    a.apply(&[Edit::set(hh("hh-001"), "members", FieldValue::Int(9))], 20).unwrap();
    let Survey::Village(then) = a.snapshot(Some(&before)).unwrap() else { panic!() };
    assert_eq!(then.households["hh-001"].members, Some(4));
    assert_eq!(village_of(&a).households["hh-001"].members, Some(9));
}

fn hex(n: u8) -> String {
    ActorId::from([n; 16]).to_hex_string()
}

#[test]
fn genesis_changes_are_recognised_as_structural_and_surveyors_changes_are_not() {
    let mut a = replica(1);
    a.apply(&[Edit::set(hh("hh-001"), "members", FieldValue::Int(4))], 10).unwrap();
    let flags: Vec<bool> = a
        .automerge()
        .get_changes(&[])
        .into_iter()
        .map(|c| sync_core::sync::ChangeRecord::new(&village(), c).structural)
        .collect();
    assert_eq!(flags, vec![true, true, false], "document genesis, household genesis, the surveyor's edit");
}
