//! Three surveyors pull one commune, go offline, record overlapping work,
//! and sync in several orders: every replica ends identical, the clash is a
//! listed conflict, counters add up, and nothing anyone wrote is missing.

use cli::device::Device;
use sync_core::ids::DocumentId;
use sync_core::survey::{Edit, FieldValue, Survey, Target};
use sync_core::validate::conflicts;
use tests::{device, hh, quick, village, TestServer};

fn set(target: Target, field: &str, value: FieldValue) -> Edit {
    Edit::set(target, field, value)
}

/// The offline work of the three surveyors in village nhu-co-01.
fn record_offline(devices: &mut [Device], doc: &DocumentId) {
    let [a, b, c] = devices else { panic!("three devices") };
    // Different households of one village.
    a.record(
        doc,
        &[set(hh("hh-001"), "members", FieldValue::Int(5)), set(hh("hh-001"), "adults", FieldValue::Int(3))],
    )
    .unwrap();
    b.record(doc, &[set(hh("hh-002"), "members", FieldValue::Int(4))]).unwrap();
    // The same field with different values.
    a.record(doc, &[set(Target::Facts, "digital_team_members", FieldValue::Int(4))]).unwrap();
    b.record(doc, &[set(Target::Facts, "digital_team_members", FieldValue::Int(6))]).unwrap();
    // Counter increments from all three.
    a.record(doc, &[Edit::increment(Target::Facts, "security_cameras", 2)]).unwrap();
    b.record(doc, &[Edit::increment(Target::Facts, "security_cameras", 3)]).unwrap();
    c.record(doc, &[Edit::increment(Target::Facts, "security_cameras", 1)]).unwrap();
    // Two devices start the same household.
    a.record(doc, &[set(hh("hh-010"), "members", FieldValue::Int(7))]).unwrap();
    c.record(doc, &[set(hh("hh-010"), "fibre_broadband", FieldValue::Bool(true))]).unwrap();
    c.record(doc, &[Edit::increment(hh("hh-010"), "qr_codes_issued", 1)]).unwrap();
    a.record(doc, &[Edit::increment(hh("hh-010"), "qr_codes_issued", 2)]).unwrap();
}

fn scenario(order: [usize; 3]) {
    let server = TestServer::start();
    let root = tempfile::tempdir().unwrap();
    let mut devices: Vec<Device> = ["tablet-a", "tablet-b", "tablet-c"]
        .iter()
        .map(|n| device(root.path(), n, &server, "nhu-co"))
        .collect();
    let doc = village("nhu-co-01");
    record_offline(&mut devices, &doc);
    for d in devices.iter_mut() {
        assert!(d.status().unwrap().pending() > 0, "offline work is pending before the sync");
    }
    // Two passes in the given order: the first gathers everything on the server,
    // the second hands it to the devices that synced early.
    for _pass in 0..2 {
        for &i in &order {
            let report = devices[i].sync(&quick()).unwrap();
            assert!(report.refused.is_empty(), "{order:?}: nothing is refused: {report:?}");
        }
    }

    let on_server = server.document(&doc);
    let mut expected_heads = on_server.heads();
    expected_heads.sort();
    for d in devices.iter_mut() {
        assert_eq!(d.status().unwrap().pending(), 0, "{order:?}: everything uploaded");
        let mine = d.document(&doc).unwrap();
        let mut heads = mine.heads();
        heads.sort();
        assert_eq!(heads, expected_heads, "{order:?}: device and server hold the same history");
        assert_eq!(
            mine.snapshot(None).unwrap(),
            on_server.snapshot(None).unwrap(),
            "{order:?}: same merged survey"
        );
    }
    let Survey::Village(v) = on_server.snapshot(None).unwrap() else { panic!("village") };
    assert_eq!(v.households["hh-001"].members, Some(5), "{order:?}");
    assert_eq!(v.households["hh-001"].adults, Some(3), "{order:?}");
    assert_eq!(v.households["hh-002"].members, Some(4), "{order:?}");
    assert_eq!(v.households["hh-010"].members, Some(7), "{order:?}: both starters' fields are kept");
    assert_eq!(v.households["hh-010"].fibre_broadband, Some(true), "{order:?}");
    assert_eq!(v.households["hh-010"].qr_codes_issued, 3, "{order:?}: household counter adds up");
    assert_eq!(v.facts.security_cameras, 6, "{order:?}: 2 + 3 + 1");
    assert!(matches!(v.facts.digital_team_members, Some(4) | Some(6)));
    let clashes = conflicts(&on_server);
    assert_eq!(clashes.len(), 1, "{order:?}: exactly the one clash: {clashes:?}");
    assert_eq!(clashes[0].field, "digital_team_members");
    let mut values: Vec<_> = clashes[0].candidates.iter().map(|c| c.value.clone()).collect();
    values.sort_by_key(|v| format!("{v:?}"));
    assert_eq!(values, vec![Some(FieldValue::Int(4)), Some(FieldValue::Int(6))]);

    // Every other document of the commune is on every device, untouched but present.
    let ids = devices[0].document_ids().unwrap();
    assert_eq!(ids.len(), 12, "Như Cố: the commune document and 11 villages");
    let stored: Vec<String> = serde_json::from_value(server.get_json("/v1/admin/documents")).unwrap();
    assert!(stored.contains(&doc.to_string()));
}

#[test]
fn three_devices_converge_when_syncing_a_then_b_then_c() {
    scenario([0, 1, 2]);
}

#[test]
fn three_devices_converge_when_syncing_c_then_b_then_a() {
    scenario([2, 1, 0]);
}

#[test]
fn three_devices_converge_when_syncing_b_then_c_then_a() {
    scenario([1, 2, 0]);
}
