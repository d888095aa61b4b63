//! `thonsync status`: an overview of the merged state in one screen.

use std::collections::BTreeMap;

use clap::Args;
use serde::Serialize;
use sync_core::ids::DocumentKind;
use sync_core::store::PeerSummary;
use sync_core::survey::Survey;
use sync_core::validate::{conflicts, data_quality};

use super::out::{self, print_json, print_table, table};
use super::source::{Access, Source};
use super::text::Lang;
use super::time;
use super::{Common, ListFormat};

/// `thonsync status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub common: Common,
    /// Table for people, JSON for scripts.
    #[arg(long, value_enum, default_value_t)]
    pub format: ListFormat,
}

#[derive(Serialize)]
struct Status {
    source: String,
    documents: usize,
    village_documents: usize,
    commune_documents: usize,
    villages_surveyed: usize,
    households: usize,
    /// Households by survey round: what `report --round R` counts for R.
    households_by_round: BTreeMap<String, usize>,
    devices: usize,
    refused_uploads: usize,
    conflicts_open: usize,
    data_quality_issues: usize,
    store_size_bytes: Option<u64>,
    peers: Vec<PeerSummary>,
    /// Stored documents of places the registry no longer holds: kept, but
    /// counted nowhere else here nor in `report`.
    outside_registry: Outside,
}

#[derive(Default, Serialize)]
struct Outside {
    documents: usize,
    households: usize,
}

/// The household total, and per round when there are several (each is what
/// `report --round` counts for that round).
fn households_text(s: &Status, lang: Lang) -> String {
    if s.households_by_round.len() < 2 {
        return s.households.to_string();
    }
    let rounds: Vec<String> = s
        .households_by_round
        .iter()
        .map(|(round, n)| format!("{} {round}: {n}", lang.t("round", "đợt")))
        .collect();
    format!("{} ({})", s.households, rounds.join("; "))
}

pub fn run(args: StatusArgs, lang: Lang) -> anyhow::Result<()> {
    let source = Source::open(&args.common, Access::Read)?;
    let ids = source.document_ids()?;
    let mut s = Status {
        source: source.describe(),
        documents: 0,
        village_documents: 0,
        commune_documents: 0,
        villages_surveyed: 0,
        households: 0,
        households_by_round: BTreeMap::new(),
        devices: 0,
        refused_uploads: source.refused()?.len(),
        conflicts_open: 0,
        data_quality_issues: 0,
        store_size_bytes: source.store_info()?.size_bytes,
        peers: source.peers()?,
        outside_registry: Outside::default(),
    };
    s.devices = s.peers.len();
    // What the report reads: documents of places the registry holds.
    let registry = source.registry()?;
    for id in &ids {
        let Some(doc) = source.document(id)? else { continue };
        if !registry.holds(id) {
            s.outside_registry.documents += 1;
            if let Survey::Village(v) = doc.snapshot(None)? {
                s.outside_registry.households += v.households.len();
            }
            continue;
        }
        s.documents += 1;
        match id.kind {
            DocumentKind::Village => s.village_documents += 1,
            DocumentKind::Commune => s.commune_documents += 1,
        }
        s.conflicts_open += conflicts(&doc).len();
        let survey = doc.snapshot(None)?;
        s.data_quality_issues += data_quality(&survey).len();
        if let Survey::Village(v) = survey {
            if !v.households.is_empty() || v.facts != Default::default() {
                s.villages_surveyed += 1;
            }
            s.households += v.households.len();
            *s.households_by_round.entry(id.round.to_string()).or_default() += v.households.len();
        }
    }
    let utc = args.common.utc;
    if args.format == ListFormat::Json {
        // Each device's last sync as ISO-8601, not milliseconds.
        let mut json = serde_json::to_value(&s)?;
        if let Some(peers) = json.get_mut("peers").and_then(serde_json::Value::as_array_mut) {
            for peer in peers {
                if let Some(ms) = peer.get("last_sync").and_then(serde_json::Value::as_i64) {
                    peer["last_sync"] = time::format_iso(ms, utc).into();
                }
            }
        }
        return print_json(&json);
    }
    let mut t = out::plain();
    let size = s
        .store_size_bytes
        .map(|b| format!("{} MB ({b} {})", out::decimal(b as f64 / 1_048_576.0, 1), lang.t("bytes", "byte")))
        .unwrap_or_else(|| "—".to_owned());
    let rows: Vec<(&str, String)> = vec![
        (lang.t("Source", "Nguồn dữ liệu"), s.source.clone()),
        (
            lang.t("Documents", "Tài liệu"),
            format!(
                "{} ({} {}, {} {})",
                s.documents,
                s.village_documents,
                lang.t("village", "thôn"),
                s.commune_documents,
                lang.t("commune", "xã")
            ),
        ),
        (lang.t("Villages surveyed", "Thôn đã điều tra"), s.villages_surveyed.to_string()),
        (lang.t("Households", "Hộ gia đình"), households_text(&s, lang)),
        (lang.t("Devices seen", "Thiết bị đã đồng bộ"), s.devices.to_string()),
        (lang.t("Refused uploads kept", "Dữ liệu bị từ chối đang lưu"), s.refused_uploads.to_string()),
        (lang.t("Open conflicts", "Xung đột chưa giải quyết"), s.conflicts_open.to_string()),
        (lang.t("Data-quality issues", "Vấn đề chất lượng dữ liệu"), s.data_quality_issues.to_string()),
        (lang.t("Store size", "Dung lượng kho"), size),
    ];
    for (k, v) in rows {
        t.add_row(vec![k.to_owned(), v]);
    }
    print_table(&t)?;
    if !s.peers.is_empty() {
        let mut p = table([
            lang.t("Device", "Thiết bị").to_owned(),
            lang.t("Documents", "Tài liệu").to_owned(),
            format!("{} ({})", lang.t("Last sync", "Đồng bộ lần cuối"), time::zone(utc)),
        ]);
        for peer in &s.peers {
            p.add_row(vec![peer.peer.clone(), peer.documents.to_string(), time::format(peer.last_sync, utc)]);
        }
        print_table(&p)?;
    }
    if s.outside_registry.documents > 0 {
        out::line(format!(
            "{} {} ({} {}) {}",
            s.outside_registry.documents,
            lang.t("stored document(s)", "tài liệu đã lưu"),
            s.outside_registry.households,
            lang.t("households", "hộ"),
            lang.t(
                "belong to places no longer in the registry: kept, but counted neither above nor in \
                 `thonsync report`; `thonsync registry show` lists the places",
                "thuộc địa bàn không còn trong danh mục: vẫn lưu, nhưng không được tính ở trên và trong \
                 `thonsync report`; `thonsync registry show` liệt kê các địa bàn"
            )
        ))?;
    }
    if s.refused_uploads > 0 {
        out::line(lang.t(
            "Refused uploads are kept aside: see `thonsync refused`.",
            "Dữ liệu bị từ chối được giữ lại: xem `thonsync refused`.",
        ))?;
    }
    if s.conflicts_open > 0 {
        out::line(lang.t(
            "Fields with concurrent values: see `thonsync conflicts`.",
            "Trường có giá trị xung đột: xem `thonsync conflicts`.",
        ))?;
    }
    Ok(())
}
