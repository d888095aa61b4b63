//! `thonsync villages` and `thonsync show`: the villages and how far their
//! survey is, and the merged survey of one village, now or as it was.

use std::collections::BTreeMap;

use clap::Args;
use serde::Serialize;
use sync_core::automerge::ChangeHash;
use sync_core::history::{effective_time, heads_at, resolve_heads, HistoryError, Receipts};
use sync_core::ids::{DocumentId, PlaceId, DEFAULT_ROUND};
use sync_core::registry::PlaceKind;
use sync_core::survey::{Survey, SurveyDocument};
use sync_core::validate::{conflicts, data_quality};

use super::out::{self, num, print_json, print_table, table};
use super::source::{Access, Source};
use super::text::{say, Lang};
use super::time;
use super::{not_found, usage, Common, ListFormat};

/// `thonsync villages`.
#[derive(Debug, Args)]
pub struct VillagesArgs {
    #[command(flatten)]
    pub common: Common,
    /// Only the villages of this commune (e.g. nhu-co).
    #[arg(long)]
    pub commune: Option<String>,
    /// Survey round.
    #[arg(long, default_value = DEFAULT_ROUND)]
    pub round: String,
    /// Table for people, JSON for scripts.
    #[arg(long, value_enum, default_value_t)]
    pub format: ListFormat,
}

/// One village and how far its survey is.
#[derive(Debug, Serialize)]
struct VillageRow {
    village: String,
    name: String,
    commune: String,
    commune_name: String,
    document: String,
    surveyed: bool,
    households: usize,
    expected_households: Option<u32>,
    digital_team: Option<bool>,
    cultural_house_internet: Option<bool>,
    security_cameras: i64,
    conflicts: usize,
    issues: usize,
    last_change: Option<i64>,
}

pub fn villages(args: VillagesArgs, lang: Lang) -> anyhow::Result<()> {
    let source = Source::open(&args.common, Access::Read)?;
    let registry = source.registry()?;
    let round = out::round(&args.round)?;
    let docs: BTreeMap<DocumentId, SurveyDocument> =
        out::documents(&source, &registry, args.commune.as_deref(), &round)?
            .into_iter()
            .map(|d| (d.id().clone(), d))
            .collect();
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    for c in source.changes(None)? {
        // Genesis changes are stamped 0; a device clock in 2100 counts from its receipt.
        if c.time != 0 {
            let at = effective_time(c.time, Some(c.stored_at));
            let e = last.entry(c.document).or_insert(at);
            *e = (*e).max(at);
        }
    }
    let communes: Vec<_> = match &args.commune {
        Some(c) => registry.get(c).into_iter().collect(),
        None => registry.of_kind(PlaceKind::Commune).collect(),
    };
    let mut rows = Vec::new();
    for commune in communes {
        for village in registry.children(&commune.id).filter(|p| p.kind == PlaceKind::Village) {
            let Ok(place) = PlaceId::new(village.id.as_str()) else { continue };
            let id = DocumentId::village(place, round.clone());
            let mut row = VillageRow {
                village: village.id.clone(),
                name: village.name.clone(),
                commune: commune.id.clone(),
                commune_name: commune.name.clone(),
                document: id.to_string(),
                surveyed: false,
                households: 0,
                expected_households: village.expected_households,
                digital_team: None,
                cultural_house_internet: None,
                security_cameras: 0,
                conflicts: 0,
                issues: 0,
                last_change: last.get(&id.to_string()).copied(),
            };
            if let Some(doc) = docs.get(&id) {
                row.conflicts = conflicts(doc).len();
                let survey = doc.snapshot(None)?;
                row.issues = data_quality(&survey).len();
                if let Survey::Village(v) = survey {
                    row.surveyed = !v.households.is_empty() || v.facts != Default::default();
                    row.households = v.households.len();
                    row.digital_team = v.facts.digital_team;
                    row.cultural_house_internet = v.facts.cultural_house_internet;
                    row.security_cameras = v.facts.security_cameras;
                }
            }
            rows.push(row);
        }
    }
    if args.format == ListFormat::Json {
        return print_json(&rows);
    }
    let utc = args.common.utc;
    let mut t = table([
        lang.t("Village", "Thôn").to_owned(),
        lang.t("Name", "Tên").to_owned(),
        lang.t("Commune", "Xã").to_owned(),
        lang.t("Households", "Số hộ").to_owned(),
        lang.t("Digital team", "Tổ CNS").to_owned(),
        lang.t("Cultural house internet", "NVH có internet").to_owned(),
        lang.t("Cameras", "Camera").to_owned(),
        lang.t("Conflicts", "Xung đột").to_owned(),
        lang.t("Issues", "Vấn đề").to_owned(),
        format!("{} ({})", lang.t("Last change", "Thay đổi cuối"), time::zone(utc)),
    ]);
    for r in &rows {
        t.add_row(vec![
            r.village.clone(),
            r.name.clone(),
            r.commune_name.clone(),
            match r.expected_households {
                Some(e) => format!("{}/{e}", r.households),
                None => r.households.to_string(),
            },
            lang.yes_no(r.digital_team).to_owned(),
            lang.yes_no(r.cultural_house_internet).to_owned(),
            r.security_cameras.to_string(),
            r.conflicts.to_string(),
            r.issues.to_string(),
            r.last_change.map(|t| time::format(t, utc)).unwrap_or_else(|| "—".to_owned()),
        ]);
    }
    print_table(&t)?;
    let surveyed = rows.iter().filter(|r| r.surveyed).count();
    out::line(format!("{surveyed}/{} {}", rows.len(), lang.t("villages surveyed", "thôn đã điều tra")))
}

/// `thonsync show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub common: Common,
    /// A village id (nhu-co-03), a commune id (its commune-level facts) or a document id.
    pub village: String,
    /// Survey round.
    #[arg(long, default_value = DEFAULT_ROUND)]
    pub round: String,
    /// Show it as it was: a time (2024-03-05, '2024-03-05 14:30', Vietnam time unless --utc; a date
    /// alone means the end of that day) or change hashes from `thonsync history`, comma separated.
    #[arg(long, value_name = "TIME|HEADS")]
    pub at: Option<String>,
    /// Table for people, JSON for scripts.
    #[arg(long, value_enum, default_value_t)]
    pub format: ListFormat,
}

#[derive(Serialize)]
struct Shown {
    document: String,
    /// The document's automerge-repo URL (`GET /v1/repo`).
    url: String,
    name: String,
    round: String,
    heads: Vec<String>,
    at: Option<String>,
    survey: Survey,
}

/// Loads the document an argument names, or says how to find one.
pub(crate) fn load(
    source: &Source,
    registry: &sync_core::registry::Registry,
    raw: &str,
    round: &sync_core::ids::Round,
) -> anyhow::Result<SurveyDocument> {
    let id = out::document_arg(registry, raw, round)?;
    source.document(&id)?.ok_or_else(|| {
        let name = out::place_name(registry, id.place.as_str());
        not_found(say(
            format!("nothing is stored for {id} ({name}); `thonsync villages` shows what is surveyed"),
            format!("chưa có dữ liệu nào cho {id} ({name}); `thonsync villages` cho biết nơi đã điều tra"),
        ))
    })
}

/// Reads `--at`: a time (each change counted from its effective time, so a
/// device clock in 2100 or 1960 counts from when the server received the
/// change), or change hashes.
pub(crate) fn heads_for(
    source: &Source,
    doc: &SurveyDocument,
    at: &str,
    utc: bool,
) -> anyhow::Result<Vec<ChangeHash>> {
    if let Some(ms) = time::parse(at, utc) {
        let received = Receipts::from_meta(&source.changes(Some(doc.id()))?);
        return Ok(heads_at(doc, ms, &received));
    }
    if at.contains(['-', ':', ' ']) {
        return Err(usage(say(
            format!("--at {at:?} is neither a time (2024-03-05, '2024-03-05 14:30') nor change hashes"),
            format!(
                "--at {at:?} không phải thời điểm (05/03/2024, '05/03/2024 14:30') cũng không phải mã thay đổi"
            ),
        )));
    }
    let hashes: Vec<&str> = at.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    resolve_heads(doc, &hashes).map_err(|e| {
        let vi = match &e {
            HistoryError::NotAHash(h) => format!(
                "{h:?} không phải mã thay đổi; hãy cho các mã thập lục phân mà `thonsync history` hiển thị \
                 (ít nhất 4 chữ số)"
            ),
            HistoryError::Unknown { document, hash } => {
                format!(
                    "{document} không có thay đổi {hash:?}; `thonsync history` liệt kê các thay đổi của nó"
                )
            }
            HistoryError::Ambiguous { document, hash, count } => {
                format!("{hash:?} khớp với {count} thay đổi của {document}; hãy cho thêm chữ số")
            }
        };
        let message = say(e.to_string(), vi);
        match e {
            HistoryError::Unknown { .. } => not_found(message),
            _ => usage(message),
        }
    })
}

pub fn show(args: ShowArgs, lang: Lang) -> anyhow::Result<()> {
    let source = Source::open(&args.common, Access::Read)?;
    let registry = source.registry()?;
    let round = out::round(&args.round)?;
    let doc = load(&source, &registry, &args.village, &round)?;
    let utc = args.common.utc;
    let heads = match &args.at {
        Some(at) => heads_for(&source, &doc, at, utc)?,
        None => doc.heads(),
    };
    let survey = doc.snapshot(args.at.as_ref().map(|_| heads.as_slice()))?;
    let id = doc.id().clone();
    if args.format == ListFormat::Json {
        // `--at` as the time it was read, and the survey's times, as ISO-8601.
        let at = args.at.as_deref().map(|at| match time::parse(at, utc) {
            Some(ms) => time::format_iso(ms, utc),
            None => at.to_owned(),
        });
        let mut json = serde_json::to_value(Shown {
            document: id.to_string(),
            url: sync_core::repo_url::repo_url(&id),
            name: out::place_name(&registry, id.place.as_str()),
            round: id.round.to_string(),
            heads: heads.iter().map(ToString::to_string).collect(),
            at,
            survey,
        })?;
        out::iso_field_times(&mut json, utc);
        return print_json(&json);
    }
    out::line(out::title(&registry, &id, lang))?;
    let heads_text =
        heads.iter().map(|h| out::short(&h.to_string()).to_owned()).collect::<Vec<_>>().join(",");
    let heads_label = lang.t("heads", "phiên bản");
    match args.at.as_deref().map(|at| (at, time::parse(at, utc))) {
        Some((_, Some(ms))) => out::line(format!(
            "{id} · {} {} ({}) · {heads_label} {heads_text}",
            lang.t("as it was at", "tại thời điểm"),
            time::format(ms, utc),
            time::zone(utc)
        ))?,
        Some((hashes, None)) => out::line(format!(
            "{id} · {} {hashes} · {heads_label} {heads_text}",
            lang.t("as it was at change(s)", "tại (các) thay đổi"),
        ))?,
        None => out::line(format!("{id} · {heads_label} {heads_text}"))?,
    }
    out::line(format!("automerge-repo: {}", sync_core::repo_url::repo_url(&id)))?;
    let mut facts = table([lang.t("Fact", "Chỉ tiêu"), lang.t("Value", "Giá trị")]);
    match &survey {
        Survey::Village(v) => {
            facts.add_row(vec![
                "cultural_house_internet".to_owned(),
                lang.yes_no(v.facts.cultural_house_internet).to_owned(),
            ]);
            facts.add_row(vec!["digital_team".to_owned(), lang.yes_no(v.facts.digital_team).to_owned()]);
            facts.add_row(vec!["digital_team_members".to_owned(), num(v.facts.digital_team_members)]);
            facts.add_row(vec!["security_cameras".to_owned(), v.facts.security_cameras.to_string()]);
        }
        Survey::Commune(c) => {
            facts.add_row(vec!["ocop_products_online".to_owned(), num(c.facts.ocop_products_online)]);
            facts.add_row(vec![
                "cooperatives_production_diary".to_owned(),
                num(c.facts.cooperatives_production_diary),
            ]);
        }
    }
    print_table(&facts)?;
    if let Survey::Village(v) = &survey {
        let mut t = table([
            lang.t("Household", "Hộ").to_owned(),
            lang.t("Head", "Chủ hộ").to_owned(),
            lang.t("Members", "Nhân khẩu").to_owned(),
            "15+".to_owned(),
            lang.t("Adults", "Người lớn").to_owned(),
            lang.t("Fibre", "Cáp quang").to_owned(),
            lang.t("Smartphone", "Điện thoại TM").to_owned(),
            lang.t("Account 15+", "Tài khoản 15+").to_owned(),
            lang.t("E-health", "Sổ SK điện tử").to_owned(),
            lang.t("Shop online", "Mua sắm TT").to_owned(),
            lang.t("Public service acc./users", "DVC TK/dùng").to_owned(),
            lang.t("Business", "Hộ KD").to_owned(),
            lang.t("Cashless", "Không tiền mặt").to_owned(),
            lang.t("QR codes", "Mã QR").to_owned(),
            lang.t("Surveyed by", "Người điều tra").to_owned(),
            format!("{} ({})", lang.t("Surveyed at", "Thời gian"), time::zone(utc)),
        ]);
        for h in v.households.values() {
            t.add_row(vec![
                h.id.clone(),
                h.head_name.clone().unwrap_or_else(|| "—".to_owned()),
                num(h.members),
                num(h.members_15_plus),
                num(h.adults),
                lang.yes_no(h.fibre_broadband).to_owned(),
                num(h.adults_with_smartphone),
                num(h.members_15_plus_with_account),
                num(h.members_with_e_health_record),
                num(h.online_shoppers),
                format!("{}/{}", num(h.public_service_accounts), num(h.public_service_users)),
                lang.yes_no(h.business_household).to_owned(),
                lang.yes_no(h.cashless_payment).to_owned(),
                h.qr_codes_issued.to_string(),
                h.surveyed_by.clone().unwrap_or_else(|| "—".to_owned()),
                h.surveyed_at.map(|t| time::format(t, utc)).unwrap_or_else(|| "—".to_owned()),
            ]);
        }
        print_table(&t)?;
        out::line(format!("{} {}", v.households.len(), lang.t("households", "hộ")))?;
    }
    if args.at.is_none() {
        let open = conflicts(&doc).len();
        let issues = data_quality(&survey).len();
        if open > 0 {
            out::line(format!(
                "{open} {} `thonsync conflicts --commune {}`",
                lang.t("field(s) in conflict:", "trường đang xung đột:"),
                out::commune_of(&registry, &id).0
            ))?;
        }
        if issues > 0 {
            out::line(format!(
                "{issues} {} `thonsync issues --commune {}`",
                lang.t("data-quality issue(s):", "vấn đề chất lượng dữ liệu:"),
                out::commune_of(&registry, &id).0
            ))?;
        }
    }
    Ok(())
}
