//! `thonsync conflicts`, `thonsync resolve` and `thonsync issues`: where
//! surveyors disagree, how an administrator settles it, and which merged
//! records break a consistency rule.

use clap::Args;
use serde::Serialize;
use sync_core::ids::{DocumentKind, HouseholdId, DEFAULT_ROUND};
use sync_core::schema::{FieldKind, Scope, MAX_COUNT, MAX_TEXT_LEN};
use sync_core::survey::{Edit, FieldValue, Survey, Target};
use sync_core::validate::{conflicts as find_conflicts, data_quality, Conflict, DataQualityIssue};

use super::out::{self, print_json, print_table, table};
use super::source::{Access, Source};
use super::survey::load;
use super::text::{say, Lang};
use super::time;
use super::{not_found, usage, Common, ListFormat};

/// `thonsync conflicts`.
#[derive(Debug, Args)]
pub struct ConflictsArgs {
    #[command(flatten)]
    pub common: Common,
    /// Only this commune's documents (e.g. nhu-co).
    #[arg(long)]
    pub commune: Option<String>,
    /// Survey round.
    #[arg(long, default_value = DEFAULT_ROUND)]
    pub round: String,
    /// Table for people, JSON for scripts.
    #[arg(long, value_enum, default_value_t)]
    pub format: ListFormat,
}

pub fn conflicts(args: ConflictsArgs, lang: Lang) -> anyhow::Result<()> {
    let source = Source::open(&args.common, Access::Read)?;
    let registry = source.registry()?;
    let round = out::round(&args.round)?;
    let docs = out::documents(&source, &registry, args.commune.as_deref(), &round)?;
    let found: Vec<Conflict> = docs.iter().flat_map(find_conflicts).collect();
    if args.format == ListFormat::Json {
        // A time field's values (`surveyed_at`) as ISO-8601, as exports write them.
        let mut json = serde_json::to_value(&found)?;
        out::iso_field_times(&mut json, args.common.utc);
        return print_json(&json);
    }
    if found.is_empty() {
        return out::line(lang.t("No open conflicts.", "Không có xung đột nào."));
    }
    let utc = args.common.utc;
    let surveyors = source.actor_names()?;
    let who = |actor: &str| match surveyors.get(actor) {
        Some(name) => format!("{name} ({})", out::short(actor)),
        None => out::short(actor).to_owned(),
    };
    let mut t = table([
        lang.t("Place", "Địa bàn").to_owned(),
        lang.t("Household", "Hộ").to_owned(),
        lang.t("Field", "Trường").to_owned(),
        lang.t("Shown", "Đang hiển thị").to_owned(),
        format!(
            "{} ({})",
            lang.t("Candidates: value — actor, time", "Các giá trị: giá trị — tác nhân, lúc"),
            time::zone(utc)
        ),
    ]);
    for c in &found {
        let candidates = c
            .candidates
            .iter()
            .map(|k| {
                format!(
                    "{} — {}, {}",
                    out::field_value(&c.field, k.value.as_ref(), lang, utc),
                    who(&k.actor),
                    time::format(k.time, utc)
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        t.add_row(vec![
            format!("{}\n{}", out::place_name(&registry, c.document.place.as_str()), c.document),
            c.household.clone().unwrap_or_else(|| "—".to_owned()),
            c.field.clone(),
            out::field_value(&c.field, c.shown.as_ref(), lang, utc),
            candidates,
        ]);
    }
    print_table(&t)?;
    out::line(format!("{} {}", found.len(), lang.t("field(s) in conflict.", "trường đang xung đột.")))?;
    out::line(lang.t(
        "Settle one with: thonsync resolve DOCUMENT FIELD VALUE [--household ID]",
        "Giải quyết bằng: thonsync resolve TÀI_LIỆU TRƯỜNG GIÁ_TRỊ [--household MÃ_HỘ]",
    ))
}

/// `thonsync resolve`.
#[derive(Debug, Args)]
pub struct ResolveArgs {
    #[command(flatten)]
    pub common: Common,
    /// The document: a village id (nhu-co-03), a commune id or a document id.
    pub document: String,
    /// The field, e.g. members or cultural_house_internet.
    pub field: String,
    /// The chosen value (numbers; yes/no/true/false/có/không; text). For a counter
    /// (security_cameras, qr_codes_issued) the value it should show: the administrator's
    /// increment from its current value is written, so devices' additions still add up.
    pub value: String,
    /// The household, for household fields.
    #[arg(long)]
    pub household: Option<String>,
    /// Survey round, when DOCUMENT is a place id.
    #[arg(long, default_value = DEFAULT_ROUND)]
    pub round: String,
    /// Table for people, JSON for scripts.
    #[arg(long, value_enum, default_value_t)]
    pub format: ListFormat,
}

#[derive(Serialize)]
struct Resolved {
    document: String,
    household: Option<String>,
    field: String,
    /// The value shown before.
    old: Option<FieldValue>,
    value: FieldValue,
    /// For a counter: the compensating increment written (new − old).
    #[serde(skip_serializing_if = "Option::is_none")]
    increment: Option<i64>,
    /// The change written; `None` when the counter already held the value.
    change: Option<String>,
    was_in_conflict: bool,
    /// Consistency rules on this field the record broke before, and still breaks after.
    breaches_before: Vec<String>,
    breaches_after: Vec<String>,
}

/// Milliseconds since 1970, now.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// The value a field of one record shows in a merged survey.
fn shown(survey: &Survey, household: Option<&str>, field: &str) -> Option<FieldValue> {
    match (survey, household) {
        (Survey::Village(v), Some(h)) => v.households.get(h).and_then(|r| r.get(field)),
        (Survey::Village(v), None) => v.facts.get(field),
        (Survey::Commune(c), _) => c.facts.get(field),
    }
}

/// The consistency rules involving `field` that one record breaks.
fn breaches(survey: &Survey, household: Option<&str>, field: &str) -> Vec<String> {
    data_quality(survey)
        .into_iter()
        .filter(|i| i.household.as_deref() == household && i.fields.iter().any(|f| f == field))
        .map(|i| i.rule)
        .collect()
}

/// The value an administrator chose, read by its field's kind: a time as
/// a date and time (`2024-03-05 14:30`, Vietnam time unless `utc`).
fn chosen_value(field: &str, kind: FieldKind, raw: &str, utc: bool) -> anyhow::Result<FieldValue> {
    let parsed = match kind {
        FieldKind::Time => time::parse_start(raw, utc).filter(|ms| *ms >= 0).map(FieldValue::Int),
        _ => FieldValue::parse(field, kind, raw).ok(),
    };
    parsed.ok_or_else(|| {
        let (en, vi) = match kind {
            FieldKind::Count | FieldKind::Counter => (
                format!("a whole number between 0 and {MAX_COUNT}"),
                format!("một số nguyên từ 0 đến {MAX_COUNT}"),
            ),
            FieldKind::Bool => ("yes or no (có / không)".to_owned(), "có hoặc không (yes / no)".to_owned()),
            FieldKind::Text => (
                format!("text of at most {MAX_TEXT_LEN} characters"),
                format!("văn bản tối đa {MAX_TEXT_LEN} ký tự"),
            ),
            FieldKind::Time => (
                "a date and time such as 2024-03-05 or '2024-03-05 14:30'".to_owned(),
                "ngày giờ dạng 05/03/2024 hoặc '05/03/2024 14:30'".to_owned(),
            ),
        };
        usage(say(
            format!("{field} takes {en}, not {raw:?}"),
            format!("{field} nhận {vi}, không phải {raw:?}"),
        ))
    })
}

pub fn resolve(args: ResolveArgs, lang: Lang) -> anyhow::Result<()> {
    let mut source = Source::open(&args.common, Access::Write)?;
    let registry = source.registry()?;
    let round = out::round(&args.round)?;
    let doc = load(&source, &registry, &args.document, &round)?;
    let id = doc.id().clone();
    let (scope, target) = match (&args.household, id.kind) {
        (Some(h), DocumentKind::Village) => {
            let hh = HouseholdId::new(h.as_str()).map_err(|e| {
                usage(say(
                    format!("--household: {e}"),
                    format!("--household {h:?} không phải mã hộ hợp lệ (ví dụ: hh-004)"),
                ))
            })?;
            if !doc.household_ids(None).contains(h) {
                return Err(not_found(say(
                    format!(
                        "household {h:?} is not in {id}; `thonsync show {}` lists its households",
                        args.document
                    ),
                    format!(
                        "hộ {h:?} không có trong {id}; `thonsync show {}` liệt kê các hộ của nó",
                        args.document
                    ),
                )));
            }
            (Scope::Household, Target::Household(hh))
        }
        (Some(_), DocumentKind::Commune) => {
            return Err(usage(say(
                format!("{id} is a commune document and has no households; drop --household"),
                format!("{id} là tài liệu của xã, không có hộ nào; hãy bỏ --household"),
            )))
        }
        (None, DocumentKind::Village) => (Scope::Village, Target::Facts),
        (None, DocumentKind::Commune) => (Scope::Commune, Target::Facts),
    };
    let field = scope.field(&args.field).ok_or_else(|| {
        let household_field = scope == Scope::Village && Scope::Household.field(&args.field).is_some();
        let (hint, hint_vi) = if household_field {
            (
                " (it is a household field: add --household ID)",
                " (đây là trường của hộ: thêm --household MÃ_HỘ)",
            )
        } else {
            ("", "")
        };
        let scope_name = out::scope_name(scope);
        usage(say(
            format!("{:?} is not a field of {scope_name}{hint}; known fields: {}", args.field, scope.known()),
            format!(
                "{:?} không phải là một trường của {scope_name}{hint_vi}; các trường có: {}",
                args.field,
                scope.known()
            ),
        ))
    })?;
    // A counter is set by the increment that takes it from its value to the
    // chosen one, so additions devices make meanwhile still add up.
    let value_kind = if field.kind == FieldKind::Counter { FieldKind::Count } else { field.kind };
    let value = chosen_value(field.name, value_kind, &args.value, args.common.utc)?;
    let household = args.household.clone();
    let before = doc.snapshot(None)?;
    let old = shown(&before, household.as_deref(), field.name);
    let breaches_before = breaches(&before, household.as_deref(), field.name);
    let was_in_conflict = find_conflicts(&doc)
        .iter()
        .any(|c| c.field == field.name && c.household.as_deref() == household.as_deref());
    let (edit, increment) = match (field.kind, &old, &value) {
        (FieldKind::Counter, Some(FieldValue::Int(now)), FieldValue::Int(want)) => {
            let delta = want - now;
            (Edit::increment(target, field.name, delta), Some(delta))
        }
        _ => (Edit::set(target, field.name, value.clone()), None),
    };
    // A value the field already holds, undisputed, writes nothing.
    let holds =
        increment == Some(0) || increment.is_none() && !was_in_conflict && old.as_ref() == Some(&value);
    let change = if holds {
        None
    } else {
        let change = source.apply_edits(&id, &[edit], now_ms())?;
        tracing::info!(document = %id, field = field.name, %change, "resolved");
        Some(change)
    };
    let after = match (&change, source.document(&id)?) {
        (Some(_), Some(doc)) => doc.snapshot(None)?,
        _ => before,
    };
    let breaches_after = breaches(&after, household.as_deref(), field.name);
    let utc = args.common.utc;
    if args.format == ListFormat::Json {
        let mut json = serde_json::to_value(Resolved {
            document: id.to_string(),
            household,
            field: field.name.to_owned(),
            old,
            value,
            increment,
            change,
            was_in_conflict,
            breaches_before,
            breaches_after,
        })?;
        out::iso_field_times(&mut json, utc);
        return print_json(&json);
    }
    let place = out::place_name(&registry, id.place.as_str());
    let record = household.map(|h| format!(" {} {h}", lang.t("household", "hộ"))).unwrap_or_default();
    let Some(change) = change else {
        return out::line(format!(
            "{place}{record}: {} {} {}; {}",
            field.name,
            lang.t("already holds", "đã có giá trị"),
            out::field_value(field.name, Some(&value), lang, utc),
            lang.t("nothing written.", "không ghi gì.")
        ));
    };
    let delta = increment.map(|d| format!(" ({d:+})")).unwrap_or_default();
    out::line(format!(
        "{place}{record}: {} {} → {}{delta} ({} {})",
        field.name,
        out::field_value(field.name, old.as_ref(), lang, utc),
        out::field_value(field.name, Some(&value), lang, utc),
        lang.t("change", "thay đổi"),
        out::short(&change)
    ))?;
    let settled: Vec<&String> = breaches_before.iter().filter(|r| !breaches_after.contains(r)).collect();
    for rule in &settled {
        out::line(format!("{} {rule}", lang.t("No longer breaks:", "Không còn vi phạm:")))?;
    }
    for rule in &breaches_after {
        out::line(format!(
            "{} {rule} (`thonsync issues --commune {}`)",
            lang.t("Still breaks:", "Vẫn vi phạm:"),
            out::commune_of(&registry, &id).0
        ))?;
    }
    if !was_in_conflict && breaches_before.is_empty() && increment.is_none() {
        out::line(lang.t(
            "Note: this field was not in conflict nor flagged; the value was written anyway.",
            "Lưu ý: trường này không có xung đột hay vấn đề; giá trị vẫn được ghi.",
        ))?;
    }
    out::line(lang.t(
        "Devices receive the administrator's value at their next sync.",
        "Các thiết bị sẽ nhận giá trị của quản trị viên ở lần đồng bộ tới.",
    ))
}

/// `thonsync issues`.
#[derive(Debug, Args)]
pub struct IssuesArgs {
    #[command(flatten)]
    pub common: Common,
    /// Only this commune's documents (e.g. song-cau).
    #[arg(long)]
    pub commune: Option<String>,
    /// Survey round.
    #[arg(long, default_value = DEFAULT_ROUND)]
    pub round: String,
    /// Table for people, JSON for scripts.
    #[arg(long, value_enum, default_value_t)]
    pub format: ListFormat,
}

#[derive(Serialize)]
struct Issue {
    #[serde(flatten)]
    issue: DataQualityIssue,
    place_name: String,
    look: String,
}

pub fn issues(args: IssuesArgs, lang: Lang) -> anyhow::Result<()> {
    let source = Source::open(&args.common, Access::Read)?;
    let registry = source.registry()?;
    let round = out::round(&args.round)?;
    let docs = out::documents(&source, &registry, args.commune.as_deref(), &round)?;
    let surveys = docs.iter().map(|d| d.snapshot(None)).collect::<Result<Vec<_>, _>>()?;
    let found: Vec<(Issue, &Survey)> = surveys
        .iter()
        .flat_map(|s| data_quality(s).into_iter().map(move |i| (i, s)))
        .map(|(issue, survey)| {
            let place = issue.document.place.to_string();
            let look = match &issue.household {
                Some(h) => format!("thonsync history {place} --household {h}"),
                None => format!("thonsync show {place}"),
            };
            (Issue { place_name: out::place_name(&registry, &place), look, issue }, survey)
        })
        .collect();
    if args.format == ListFormat::Json {
        return print_json(&found.iter().map(|(i, _)| i).collect::<Vec<_>>());
    }
    if found.is_empty() {
        return out::line(lang.t("No data-quality issues.", "Không có vấn đề chất lượng dữ liệu."));
    }
    let mut t = table([
        lang.t("Place", "Địa bàn"),
        lang.t("Household", "Hộ"),
        lang.t("Rule", "Quy tắc"),
        lang.t("Detail", "Chi tiết"),
        lang.t("Where to look", "Xem tại"),
    ]);
    for (i, survey) in &found {
        // The detail as the survey model words it, or in Vietnamese as a surveyor reads it.
        let detail = match lang {
            Lang::En => i.issue.detail.clone(),
            Lang::Vi => crate::device::edit::breach_words(&i.issue, &serde_json::to_value(survey)?, lang),
        };
        t.add_row(vec![
            format!("{}\n{}", i.place_name, i.issue.document),
            i.issue.household.clone().unwrap_or_else(|| "—".to_owned()),
            i.issue.rule.clone(),
            detail,
            i.look.clone(),
        ]);
    }
    print_table(&t)?;
    out::line(format!("{} {}", found.len(), lang.t("issue(s).", "vấn đề.")))
}
