//! The seed's figures as a test: the report of a generated database, in which
//! simulated devices surveyed Như Cố and Sông Cầu offline and synced in
//! shuffled order, reads exactly what the source article reports; and the
//! report agrees with the export of the same data.

mod admin_fixture;

use std::collections::BTreeMap;

use admin_fixture::{json, ok, shared_db};
use serde_json::Value;

fn commune<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["communes"].as_array().unwrap().iter().find(|c| c["place"] == id).unwrap_or_else(|| panic!("{id}"))
}

fn ratio(area: &Value, indicator: &str) -> (i64, i64, f64) {
    let r = &area["indicators"][indicator];
    (r["numerator"].as_i64().unwrap(), r["denominator"].as_i64().unwrap(), r["percent"].as_f64().unwrap())
}

#[test]
fn the_report_reads_the_seed_figures_exactly() {
    let db = shared_db().to_str().unwrap();
    let report = json(&["report", "--format", "json", "--db", db]);
    assert_eq!(report["round"], "2024-1");
    assert_eq!(report["total"]["place"], "bac-kan");
    assert_eq!(report["total"]["name"], "Tỉnh Bắc Kạn");

    let nhu_co = commune(&report, "nhu-co");
    assert_eq!(nhu_co["name"], "Xã Như Cố");
    assert_eq!(ratio(nhu_co, "villages_with_digital_team"), (11, 11, 100.0));
    assert_eq!(ratio(nhu_co, "households_with_fibre_broadband"), (77, 110, 70.0));
    assert_eq!(ratio(nhu_co, "people_15_plus_with_account").2, 70.0);
    assert_eq!(ratio(nhu_co, "adults_with_smartphone").2, 90.0);
    assert_eq!(ratio(nhu_co, "people_with_e_health_record").2, 40.0);
    assert_eq!(ratio(nhu_co, "people_shopping_online").2, 70.0);
    assert_eq!(nhu_co["indicators"]["cooperatives_production_diary"], 2);
    let c = &nhu_co["completeness"];
    assert_eq!((c["villages_surveyed"].as_i64(), c["villages_expected"].as_i64()), (Some(11), Some(11)));
    assert_eq!(
        (c["households_surveyed"].as_i64(), c["households_expected"].as_i64()),
        (Some(110), Some(110))
    );
    assert_eq!(c["conflicts_open"], 0);
    assert_eq!(c["data_quality_issues"], 0);

    let song_cau = commune(&report, "song-cau");
    assert_eq!(song_cau["name"], "Phường Sông Cầu");
    assert_eq!(ratio(song_cau, "cultural_houses_with_internet"), (20, 20, 100.0));
    assert_eq!(song_cau["indicators"]["security_cameras"], 10);
    assert_eq!(song_cau["indicators"]["ocop_products_online"], 4);
    assert_eq!(song_cau["completeness"]["households_surveyed"], 200);
    assert_eq!(song_cau["completeness"]["conflicts_open"], 0);

    // The clashes of Quang Thuận are counted where they are.
    let quang_thuan = commune(&report, "quang-thuan");
    assert_eq!(quang_thuan["completeness"]["conflicts_open"], 1);
    assert_eq!(quang_thuan["completeness"]["data_quality_issues"], 1);

    // A commune report is the same commune row.
    let alone = json(&["report", "--commune", "nhu-co", "--format", "json", "--db", db]);
    assert_eq!(alone["total"]["indicators"], nhu_co["indicators"]);
    assert_eq!(alone["communes"].as_array().unwrap().len(), 1);
    // A district report of one commune's district adds up to it.
    let district = json(&["report", "--district", "cho-moi", "--format", "json", "--db", db]);
    assert_eq!(district["total"]["indicators"], nhu_co["indicators"]);
    assert_eq!(district["total"]["name"], "Huyện Chợ Mới");
}

#[test]
fn the_report_table_and_csv_show_the_same_figures() {
    let db = shared_db().to_str().unwrap();
    let table = ok(&["report", "--commune", "nhu-co", "--db", db]);
    assert!(table.contains("Xã Như Cố"), "{table}");
    assert!(table.contains("Households with fibre broadband"), "{table}");
    assert!(table.contains("70.0%"), "{table}");
    assert!(table.contains("90.0%"), "{table}");
    let vi = ok(&["report", "--commune", "nhu-co", "--db", db, "--lang", "vi"]);
    assert!(vi.contains("Hộ gia đình có cáp quang"), "{vi}");
    let csv = ok(&["report", "--commune", "song-cau", "--format", "csv", "--db", db]);
    let mut rdr = csv::Reader::from_reader(csv.as_bytes());
    let rows: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
    let find = |place: &str, indicator: &str| {
        rows.iter()
            .find(|r| &r[1] == place && &r[4] == indicator)
            .unwrap_or_else(|| panic!("{indicator}"))
            .clone()
    };
    let cultural = find("song-cau", "cultural_houses_with_internet");
    assert_eq!((&cultural[5], &cultural[6], &cultural[7]), ("20", "20", "100.0"));
    assert_eq!(&find("song-cau", "security_cameras")[8], "10");
    assert_eq!(&find("song-cau", "completeness.households_surveyed")[8], "200");
}

/// Sums one column of the export over rows of a record type, where `keep` holds.
fn sum(rows: &[BTreeMap<String, Value>], record: &str, f: impl Fn(&BTreeMap<String, Value>) -> i64) -> i64 {
    rows.iter().filter(|r| r["record"] == record).map(f).sum()
}

fn n(row: &BTreeMap<String, Value>, col: &str) -> Option<i64> {
    match &row[col] {
        Value::Number(x) => x.as_i64(),
        Value::String(s) if !s.is_empty() => s.parse().ok(),
        _ => None,
    }
}

fn yes(row: &BTreeMap<String, Value>, col: &str) -> bool {
    row[col] == Value::Bool(true) || row[col] == "true"
}

fn both(row: &BTreeMap<String, Value>, part: &str, whole: &str) -> Option<(i64, i64)> {
    Some((n(row, part)?, n(row, whole)?))
}

/// Checks one area of the report against the export rows of its communes.
fn cross_check(area: &Value, rows: &[BTreeMap<String, Value>]) {
    let ratio_of = |ind: &str| {
        let r = &area["indicators"][ind];
        (r["numerator"].as_i64().unwrap(), r["denominator"].as_i64().unwrap())
    };
    let villages = sum(rows, "village", |_| 1);
    let part_whole = |part: &str, whole: &str| {
        let p = sum(rows, "household", |r| both(r, part, whole).map(|x| x.0).unwrap_or(0));
        let w = sum(rows, "household", |r| both(r, part, whole).map(|x| x.1).unwrap_or(0));
        (p, w)
    };
    let place = area["place"].as_str().unwrap();
    assert_eq!(
        ratio_of("villages_with_digital_team"),
        (sum(rows, "village", |r| yes(r, "digital_team") as i64), villages),
        "{place}"
    );
    assert_eq!(
        ratio_of("cultural_houses_with_internet"),
        (sum(rows, "village", |r| yes(r, "cultural_house_internet") as i64), villages),
        "{place}"
    );
    assert_eq!(
        ratio_of("households_with_fibre_broadband"),
        (
            sum(rows, "household", |r| yes(r, "fibre_broadband") as i64),
            sum(rows, "household", |r| (r["fibre_broadband"] != Value::Null && r["fibre_broadband"] != "")
                as i64)
        ),
        "{place}"
    );
    assert_eq!(
        ratio_of("people_15_plus_with_account"),
        part_whole("members_15_plus_with_account", "members_15_plus")
    );
    assert_eq!(ratio_of("adults_with_smartphone"), part_whole("adults_with_smartphone", "adults"));
    assert_eq!(
        ratio_of("people_with_e_health_record"),
        part_whole("members_with_e_health_record", "members")
    );
    assert_eq!(ratio_of("people_shopping_online"), part_whole("online_shoppers", "adults"));
    assert_eq!(
        ratio_of("business_households_cashless"),
        (
            sum(rows, "household", |r| (yes(r, "business_household") && yes(r, "cashless_payment")) as i64),
            sum(rows, "household", |r| yes(r, "business_household") as i64)
        )
    );
    let ind = &area["indicators"];
    for (indicator, record, col) in [
        ("security_cameras", "village", "security_cameras"),
        ("qr_codes_issued", "household", "qr_codes_issued"),
        ("public_service_accounts", "household", "public_service_accounts"),
        ("public_service_users", "household", "public_service_users"),
        ("ocop_products_online", "commune", "ocop_products_online"),
        ("cooperatives_production_diary", "commune", "cooperatives_production_diary"),
    ] {
        assert_eq!(
            ind[indicator].as_i64().unwrap(),
            sum(rows, record, |r| n(r, col).unwrap_or(0)),
            "{place} {indicator}"
        );
    }
    let c = &area["completeness"];
    assert_eq!(c["villages_expected"].as_i64().unwrap(), villages);
    assert_eq!(c["households_surveyed"].as_i64().unwrap(), sum(rows, "household", |_| 1));
    assert_eq!(
        c["households_expected"].as_i64().unwrap(),
        sum(rows, "village", |r| n(r, "expected_households").unwrap_or(0))
    );
}

#[test]
fn report_and_export_agree_on_the_same_data() {
    let db = shared_db().to_str().unwrap();
    let report = json(&["report", "--format", "json", "--db", db]);
    let csv_text = ok(&["export", "--format", "csv", "--db", db]);
    let mut rdr = csv::Reader::from_reader(csv_text.as_bytes());
    let headers = rdr.headers().unwrap().clone();
    assert!(!headers.iter().any(|h| h == "head_name"), "personal data exported without --include-personal");
    let csv_rows: Vec<BTreeMap<String, Value>> = rdr
        .records()
        .map(|r| {
            headers
                .iter()
                .zip(r.unwrap().iter())
                .map(|(h, v)| (h.to_owned(), Value::String(v.to_owned())))
                .collect()
        })
        .collect();
    let json_rows: Vec<BTreeMap<String, Value>> =
        serde_json::from_str(&ok(&["export", "--format", "json", "--db", db])).unwrap();
    assert_eq!(csv_rows.len(), json_rows.len());
    for rows in [&csv_rows, &json_rows] {
        cross_check(&report["total"], rows);
        for area in report["communes"].as_array().unwrap() {
            let of: Vec<_> = rows.iter().filter(|r| r["commune"] == area["place"]).cloned().collect();
            cross_check(area, &of);
        }
    }
    // One commune's export is that commune's rows.
    let song_cau: Vec<BTreeMap<String, Value>> =
        serde_json::from_str(&ok(&["export", "--format", "json", "--commune", "song-cau", "--db", db]))
            .unwrap();
    assert_eq!(song_cau.len(), 1 + 20 + 200);
    assert!(song_cau.iter().all(|r| r["commune_name"] == "Phường Sông Cầu"));
}
