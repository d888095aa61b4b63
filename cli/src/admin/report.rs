//! `thonsync report`: the indicators of a commune, district or province for a
//! round, with numerators, denominators and percentages, and completeness.
//! The figures come from `sync_core::report::build_report`, which adds raw
//! sums from households up and never averages percentages.

use std::collections::BTreeMap;

use clap::{ArgGroup, Args};
use serde_json::Value;
use sync_core::ids::{DocumentId, DEFAULT_ROUND};
use sync_core::registry::{PlaceKind, Registry};
use sync_core::report::{build_report, AreaReport, LeftOut, Report, Treatment, Unit};
use sync_core::survey::SurveyDocument;

use super::out::{self, print_json, print_table, table};
use super::source::{Access, Source};
use super::text::{say, Lang};
use super::{not_found, usage, Common, Format};

/// `thonsync report`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("scope").args(["commune", "district", "province"])))]
pub struct ReportArgs {
    #[command(flatten)]
    pub common: Common,
    /// Report on one commune (e.g. nhu-co).
    #[arg(long)]
    pub commune: Option<String>,
    /// Report on one district, commune by commune (e.g. cho-moi).
    #[arg(long)]
    pub district: Option<String>,
    /// Report on a province, commune by commune (default: the registry's province).
    #[arg(long)]
    pub province: Option<String>,
    /// Survey round.
    #[arg(long, default_value = DEFAULT_ROUND)]
    pub round: String,
    /// Table for people, JSON for scripts, CSV for spreadsheets.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// The indicators in the order officers read them, with their labels.
pub const INDICATORS: &[(&str, &str, &str)] = &[
    (
        "villages_with_digital_team",
        "Villages with a community digital technology team",
        "Thôn có Tổ công nghệ số cộng đồng",
    ),
    ("households_with_fibre_broadband", "Households with fibre broadband", "Hộ gia đình có cáp quang"),
    (
        "people_15_plus_with_account",
        "People 15+ with an account (bank or licensed institution)",
        "Người từ 15 tuổi có tài khoản",
    ),
    ("adults_with_smartphone", "Adults with a smartphone", "Người trưởng thành có điện thoại thông minh"),
    ("people_with_e_health_record", "People with an e-health record", "Người dân có sổ sức khỏe điện tử"),
    ("people_shopping_online", "People who shop online", "Người dân mua sắm trực tuyến"),
    ("cultural_houses_with_internet", "Cultural houses with internet", "Nhà văn hóa có internet"),
    ("public_service_accounts", "Public service portal accounts", "Tài khoản Cổng dịch vụ công"),
    ("public_service_users", "Public service portal users", "Người sử dụng Cổng dịch vụ công"),
    ("security_cameras", "Security cameras", "Camera an ninh"),
    (
        "business_households_cashless",
        "Business households taking cashless payment",
        "Hộ kinh doanh thanh toán không dùng tiền mặt",
    ),
    ("qr_codes_issued", "QR payment codes issued", "Mã QR thanh toán đã cấp"),
    (
        "ocop_products_online",
        "OCOP products on e-commerce platforms",
        "Sản phẩm OCOP trên sàn thương mại điện tử",
    ),
    (
        "cooperatives_production_diary",
        "Cooperatives using production-diary software",
        "Hợp tác xã dùng phần mềm nhật ký sản xuất",
    ),
];

const COMPLETENESS: &[(&str, &str, &str)] = &[
    ("villages_surveyed", "Villages surveyed", "Thôn đã điều tra"),
    ("villages_expected", "Villages expected", "Thôn dự kiến"),
    ("households_surveyed", "Households surveyed", "Hộ đã điều tra"),
    ("households_expected", "Households expected", "Hộ dự kiến"),
    ("conflicts_open", "Fields in conflict", "Trường đang xung đột"),
    ("data_quality_issues", "Data-quality issues", "Vấn đề chất lượng dữ liệu"),
];

/// The place a report is about, from the flags or the registry's province.
fn scope(args: &ReportArgs, registry: &Registry) -> anyhow::Result<String> {
    let (id, kind, flag) = match (&args.commune, &args.district, &args.province) {
        (Some(c), _, _) => (c.clone(), PlaceKind::Commune, "--commune"),
        (_, Some(d), _) => (d.clone(), PlaceKind::District, "--district"),
        (_, _, Some(p)) => (p.clone(), PlaceKind::Province, "--province"),
        _ => {
            let p = registry.of_kind(PlaceKind::Province).next().ok_or_else(|| {
                usage(say(
                    "the registry has no province; load one with `thonsync registry load FILE.csv`",
                    "danh mục địa bàn chưa có tỉnh nào; hãy nạp bằng `thonsync registry load TỆP.csv`",
                ))
            })?;
            return Ok(p.id.clone());
        }
    };
    match registry.get(&id) {
        None => Err(not_found(say(
            format!("{flag} {id:?} is not in the registry; see `thonsync registry show`"),
            format!("{flag} {id:?} không có trong danh mục địa bàn; xem `thonsync registry show`"),
        ))),
        Some(p) if p.kind != kind => Err(usage(say(
            format!(
                "{id:?} ({}) is a {:?}, not what {flag} takes; see `thonsync registry show`",
                p.name, p.kind
            ),
            format!(
                "{id:?} ({}) là {}, không phải cấp mà {flag} nhận; xem `thonsync registry show`",
                p.name,
                match p.kind {
                    PlaceKind::Province => "tỉnh",
                    PlaceKind::District => "huyện",
                    PlaceKind::Commune => "xã",
                    PlaceKind::Village => "thôn",
                }
            ),
        ))),
        Some(_) => Ok(id),
    }
}

/// Builds the report from the source's stored documents.
pub fn build(source: &Source, registry: &Registry, place: &str, round: &str) -> anyhow::Result<Report> {
    let round = out::round(round)?;
    let stored = source.document_ids()?;
    let mut docs: BTreeMap<DocumentId, SurveyDocument> = BTreeMap::new();
    for commune in registry.communes_under(place) {
        for id in registry.documents_for_commune(&commune.id, &round) {
            if stored.contains(&id) {
                if let Some(doc) = source.document(&id)? {
                    docs.insert(id, doc);
                }
            }
        }
    }
    Ok(build_report(registry, place, &round, |id| docs.remove(id))?)
}

pub fn run(args: ReportArgs, lang: Lang) -> anyhow::Result<()> {
    let source = Source::open(&args.common, Access::Read)?;
    let registry = source.registry()?;
    let place = scope(&args, &registry)?;
    let report = build(&source, &registry, &place, &args.round)?;
    match args.format {
        Format::Json => print_json(&report),
        Format::Csv => write_csv(&report),
        Format::Table => print(&report, lang),
    }
}

fn indicators_json(area: &AreaReport) -> serde_json::Map<String, Value> {
    match serde_json::to_value(&area.indicators) {
        Ok(Value::Object(m)) => m,
        _ => Default::default(),
    }
}

fn completeness_json(area: &AreaReport) -> serde_json::Map<String, Value> {
    match serde_json::to_value(&area.completeness) {
        Ok(Value::Object(m)) => m,
        _ => Default::default(),
    }
}

fn percent(v: Option<&Value>) -> String {
    v.and_then(|r| r.get("percent")).and_then(Value::as_f64).map(out::percent).unwrap_or_else(|| "—".into())
}

fn print(report: &Report, lang: Lang) -> anyhow::Result<()> {
    let total = &report.total;
    out::line(format!(
        "{}: {} · {} {}",
        lang.t("Report", "Báo cáo"),
        total.name,
        lang.t("round", "đợt"),
        report.round
    ))?;
    let ind = indicators_json(total);
    let mut t = table([
        lang.t("Indicator", "Chỉ tiêu"),
        lang.t("Value", "Giá trị"),
        lang.t("Numerator", "Tử số"),
        lang.t("Denominator", "Mẫu số"),
    ]);
    for (key, en, vi) in INDICATORS {
        let Some(v) = ind.get(*key) else { continue };
        let (n, d) = match v {
            Value::Object(r) => (
                r.get("numerator").map(ToString::to_string).unwrap_or_default(),
                r.get("denominator").map(ToString::to_string).unwrap_or_default(),
            ),
            _ => (String::new(), String::new()),
        };
        let mut value = match v {
            Value::Object(_) => percent(Some(v)),
            other => other.to_string(),
        };
        if total.left_out.iter().any(|l| l.indicator == *key) {
            value.push_str(" *");
        }
        t.add_row(vec![lang.t(en, vi).to_owned(), value, n, d]);
    }
    print_table(&t)?;
    print_left_out(total, lang)?;
    let comp = completeness_json(total);
    let mut c = table([lang.t("Completeness", "Mức độ hoàn thành"), lang.t("Count", "Số lượng")]);
    for (key, en, vi) in COMPLETENESS {
        c.add_row(vec![
            lang.t(en, vi).to_owned(),
            comp.get(*key).map(ToString::to_string).unwrap_or_default(),
        ]);
    }
    print_table(&c)?;
    if report.communes.len() > 1 {
        let mut t = table([
            lang.t("Commune", "Xã / phường").to_owned(),
            lang.t("Villages", "Thôn").to_owned(),
            lang.t("Households", "Hộ").to_owned(),
            lang.t("Digital team", "Tổ CNS").to_owned(),
            lang.t("Fibre", "Cáp quang").to_owned(),
            lang.t("Account 15+", "Tài khoản 15+").to_owned(),
            lang.t("Smartphone", "Điện thoại TM").to_owned(),
            lang.t("E-health", "Sổ SK điện tử").to_owned(),
            lang.t("Shop online", "Mua sắm TT").to_owned(),
            lang.t("Conflicts", "Xung đột").to_owned(),
        ]);
        for a in &report.communes {
            let i = indicators_json(a);
            let percent = |key: &str| {
                let mut cell = percent(i.get(key));
                if a.left_out.iter().any(|l| l.indicator == key) {
                    cell.push_str(" *");
                }
                cell
            };
            let k = &a.completeness;
            t.add_row(vec![
                a.name.clone(),
                format!("{}/{}", k.villages_surveyed, k.villages_expected),
                format!("{}/{}", k.households_surveyed, k.households_expected),
                percent("villages_with_digital_team"),
                percent("households_with_fibre_broadband"),
                percent("people_15_plus_with_account"),
                percent("adults_with_smartphone"),
                percent("people_with_e_health_record"),
                percent("people_shopping_online"),
                k.conflicts_open.to_string(),
            ]);
        }
        print_table(&t)?;
    }
    Ok(())
}

/// The label of an indicator, by its key.
fn label(key: &str, lang: Lang) -> String {
    INDICATORS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, en, vi)| lang.t(en, vi).to_owned())
        .unwrap_or_else(|| key.to_owned())
}

/// What one indicator left out, for a person: "1 household left out".
fn left_out_text(l: &LeftOut, lang: Lang) -> String {
    let unit = match (l.unit, l.records == 1) {
        (Unit::Household, true) => lang.t("household", "hộ"),
        (Unit::Household, false) => lang.t("households", "hộ"),
        (Unit::Village, true) => lang.t("village", "thôn"),
        (Unit::Village, false) => lang.t("villages", "thôn"),
    };
    let how = match l.treatment {
        Treatment::LeftOut => lang.t("left out", "bị loại khỏi chỉ tiêu"),
        Treatment::CountedAsZero => lang.t("counted as 0 (below zero)", "tính là 0 (nhỏ hơn 0)"),
    };
    format!("{} {unit} {how}", l.records)
}

/// The records the figures above did not read as stored, per indicator, with why and where to look.
fn print_left_out(area: &AreaReport, lang: Lang) -> anyhow::Result<()> {
    if area.left_out.is_empty() {
        return Ok(());
    }
    out::line(lang.t(
        "* Records breaking a consistency rule are not read as stored:",
        "* Bản ghi vi phạm quy tắc nhất quán không được tính như đã lưu:",
    ))?;
    let mut t = table([
        lang.t("Indicator", "Chỉ tiêu"),
        lang.t("Records", "Bản ghi"),
        lang.t("Rule (records)", "Quy tắc (số bản ghi)"),
        lang.t("List them", "Xem danh sách"),
    ]);
    let order = |l: &&LeftOut| INDICATORS.iter().position(|(k, _, _)| *k == l.indicator);
    let mut rows: Vec<&LeftOut> = area.left_out.iter().collect();
    rows.sort_by_key(order);
    for l in rows {
        t.add_row(vec![
            label(&l.indicator, lang),
            left_out_text(l, lang),
            l.rules.iter().map(|r| format!("{} ({})", r.rule, r.records)).collect::<Vec<_>>().join("\n"),
            l.see.join("\n"),
        ]);
    }
    print_table(&t)
}

/// One row per area and indicator: place, name, kind, indicator, numerator, denominator, percent, value.
fn write_csv(report: &Report) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_writer(std::io::stdout().lock());
    w.write_record([
        "round",
        "place",
        "name",
        "kind",
        "indicator",
        "numerator",
        "denominator",
        "percent",
        "value",
    ])?;
    for area in std::iter::once(&report.total).chain(&report.communes) {
        let kind = serde_json::to_value(area.kind)?.as_str().unwrap_or_default().to_owned();
        let base = [report.round.clone(), area.place.clone(), area.name.clone(), kind];
        let ind = indicators_json(area);
        for (key, _, _) in INDICATORS {
            let Some(v) = ind.get(*key) else { continue };
            let mut row: Vec<String> = base.to_vec();
            row.push((*key).to_owned());
            match v {
                Value::Object(r) => {
                    let get = |k: &str| {
                        r.get(k).filter(|v| !v.is_null()).map(ToString::to_string).unwrap_or_default()
                    };
                    row.extend([get("numerator"), get("denominator"), get("percent"), String::new()]);
                }
                other => row.extend([String::new(), String::new(), String::new(), other.to_string()]),
            }
            w.write_record(&row)?;
        }
        for l in &area.left_out {
            let mut row: Vec<String> = base.to_vec();
            let treatment = serde_json::to_value(l.treatment)?.as_str().unwrap_or_default().to_owned();
            row.extend([
                format!("{treatment}.{}", l.indicator),
                String::new(),
                String::new(),
                String::new(),
                l.records.to_string(),
            ]);
            w.write_record(&row)?;
        }
        for (key, value) in completeness_json(area) {
            let mut row: Vec<String> = base.to_vec();
            row.extend([
                format!("completeness.{key}"),
                String::new(),
                String::new(),
                String::new(),
                value.to_string(),
            ]);
            w.write_record(&row)?;
        }
    }
    w.flush()?;
    Ok(())
}
