//! `thonsync history`: who changed what and when in one village's survey,
//! change by change, with old → new values, the device's time and the
//! server's receipt time; device clocks that cannot be right are flagged. An
//! administrator's change is named by who made it (from the audit log), and
//! a clash it settled shows every value it replaced (`7 | 6 → 7`).

use clap::Args;
use serde::Serialize;
use sync_core::access::edited_change;
use sync_core::history::{history, Action, HistoryEntry, Receipts};
use sync_core::ids::DEFAULT_ROUND;
use sync_core::survey::FieldValue;

use super::out::{self, print_json, print_table, table};
use super::source::{Access, Source};
use super::survey::load;
use super::text::{say, Lang};
use super::time;
use super::{not_found, usage, Common, ListFormat};

/// `thonsync history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub common: Common,
    /// A village id (nhu-co-03), a commune id or a document id.
    pub village: String,
    /// Only the changes that touched this household.
    #[arg(long)]
    pub household: Option<String>,
    /// Survey round.
    #[arg(long, default_value = DEFAULT_ROUND)]
    pub round: String,
    /// Include the deterministic genesis changes that create the document and its households.
    #[arg(long)]
    pub genesis: bool,
    /// Only changes the server received at or after this time (2024-03-05 = from the start of
    /// that day, '2024-03-05 14:30'; Vietnam time unless --utc).
    #[arg(long, value_name = "TIME")]
    pub received_since: Option<String>,
    /// Only changes the server received at or before this time (2024-03-05 = to the end of that day).
    #[arg(long, value_name = "TIME")]
    pub received_until: Option<String>,
    /// Only changes whose device clock cannot be right: stamped before 2020, or more than a day
    /// after the server received them. They are kept, and counted at their receipt time.
    #[arg(long)]
    pub suspect_clocks: bool,
    /// Table for people, JSON for scripts.
    #[arg(long, value_enum, default_value_t)]
    pub format: ListFormat,
}

#[derive(Serialize)]
struct History {
    document: String,
    name: String,
    administrator: Option<String>,
    /// The device (surveyor) each actor of these changes is bound to, by name.
    surveyors: std::collections::BTreeMap<String, String>,
    /// The administrator (as the audit log names them) who wrote each of
    /// these changes that an administrator wrote, by change hash.
    administrators: std::collections::BTreeMap<String, String>,
    changes: Vec<HistoryEntry>,
}

/// How many of the newest audit events are searched for the administrators behind changes
/// (the most the server's audit endpoint answers).
const AUDIT_LOOKBACK: usize = 10_000;

/// Marks a device time that cannot be right.
const SUSPECT: &str = "⚠";

pub fn run(args: HistoryArgs, lang: Lang) -> anyhow::Result<()> {
    let source = Source::open(&args.common, Access::Read)?;
    let registry = source.registry()?;
    let round = out::round(&args.round)?;
    let utc = args.common.utc;
    let bound = |flag: &str, raw: &Option<String>, start: bool| -> anyhow::Result<Option<i64>> {
        let Some(raw) = raw else { return Ok(None) };
        let parsed = if start { time::parse_start(raw, utc) } else { time::parse(raw, utc) };
        parsed.map(Some).ok_or_else(|| {
            usage(say(
                format!("{flag} {raw:?} is not a time; give one like 2024-03-05 or '2024-03-05 14:30'"),
                format!(
                    "{flag} {raw:?} không phải thời điểm; hãy cho dạng 05/03/2024 hoặc '05/03/2024 14:30'"
                ),
            ))
        })
    };
    let since = bound("--received-since", &args.received_since, true)?;
    let until = bound("--received-until", &args.received_until, false)?;
    let doc = load(&source, &registry, &args.village, &round)?;
    let received = Receipts::from_meta(&source.changes(Some(doc.id()))?);
    let mut changes: Vec<HistoryEntry> =
        history(&doc, &received).into_iter().filter(|e| args.genesis || !e.genesis).collect();
    // People read history by time, each change at its effective time (a device
    // clock that cannot be right counts at the receipt time); among equal
    // times the causal order is kept.
    changes.sort_by_key(HistoryEntry::effective_time);
    changes.retain(|e| {
        let after = since.into_iter().all(|s| e.received_at.is_some_and(|r| r >= s));
        let before = until.into_iter().all(|u| e.received_at.is_some_and(|r| r <= u));
        (!args.suspect_clocks || e.clock_suspect) && after && before
    });
    if let Some(hh) = &args.household {
        if !doc.household_ids(None).contains(hh) {
            return Err(not_found(say(
                format!(
                    "household {hh:?} is not in {}; `thonsync show {}` lists its households",
                    doc.id(),
                    args.village
                ),
                format!(
                    "hộ {hh:?} không có trong {}; `thonsync show {}` liệt kê các hộ của nó",
                    doc.id(),
                    args.village
                ),
            )));
        }
        changes.retain(|e| e.touches_household(hh));
        for e in &mut changes {
            e.fields.retain(|f| f.household.as_deref() == Some(hh.as_str()));
        }
    }
    let admin = source.known_admin_actor();
    let id = doc.id().clone();
    let surveyors = source.actor_names()?;
    // The audit log names the administrator behind each of their changes,
    // whichever way (database or server) the change was written.
    let mut resolvers: std::collections::BTreeMap<String, String> = source
        .audit(AUDIT_LOOKBACK)?
        .iter()
        .filter_map(|e| edited_change(e).map(|c| (c.to_owned(), e.who.clone())))
        .collect();
    resolvers.retain(|hash, _| changes.iter().any(|e| &e.change == hash));
    if args.format == ListFormat::Json {
        let named = changes
            .iter()
            .filter_map(|e| surveyors.get(&e.actor).map(|n| (e.actor.clone(), n.clone())))
            .collect();
        // A time field's values (`surveyed_at`) as ISO-8601, as exports write them.
        let mut json = serde_json::to_value(History {
            document: id.to_string(),
            name: out::place_name(&registry, id.place.as_str()),
            administrator: admin,
            surveyors: named,
            administrators: resolvers,
            changes,
        })?;
        out::iso_field_times(&mut json, utc);
        return print_json(&json);
    }
    out::line(out::title(&registry, &id, lang))?;
    let mut t = table([
        format!("{} ({})", lang.t("Device time", "Giờ thiết bị"), time::zone(utc)),
        format!("{} ({})", lang.t("Received", "Máy chủ nhận"), time::zone(utc)),
        lang.t("Actor", "Tác nhân").to_owned(),
        lang.t("Change", "Thay đổi").to_owned(),
        lang.t("Record", "Bản ghi").to_owned(),
        lang.t("Field", "Trường").to_owned(),
        lang.t("Old → new", "Cũ → mới").to_owned(),
    ]);
    for e in &changes {
        let actor = if let Some(who) = resolvers.get(&e.change) {
            format!("{who} ({})", lang.t("administrator", "quản trị"))
        } else if admin.as_deref() == Some(e.actor.as_str()) {
            format!("{} ({})", out::short(&e.actor), lang.t("administrator", "quản trị"))
        } else if let Some(name) = surveyors.get(&e.actor) {
            format!("{name} ({})", out::short(&e.actor))
        } else {
            out::short(&e.actor).to_owned()
        };
        for f in &e.fields {
            let name = f.field.as_deref().unwrap_or_default();
            let value = |v: Option<&FieldValue>| out::field_value(name, v, lang, utc);
            let record = match &f.household {
                Some(h) => format!("{} {h}", lang.t("household", "hộ")),
                None => lang.t("facts", "chỉ tiêu").to_owned(),
            };
            let change = match f.action {
                Action::Created => lang.t("created", "tạo mới").to_owned(),
                Action::Unset => format!("{} → ∅", value(f.old.as_ref())),
                Action::Increment => {
                    let delta = match (&f.old, &f.new) {
                        (Some(FieldValue::Int(old)), Some(FieldValue::Int(new))) => {
                            format!("{:+}", new - old)
                        }
                        (None, Some(FieldValue::Int(new))) => format!("{new:+}"),
                        _ => "+".to_owned(),
                    };
                    format!("{} → {} ({delta})", value(f.old.as_ref()), value(f.new.as_ref()))
                }
                Action::Set => {
                    let mut old = value(f.old.as_ref());
                    for other in &f.clashing {
                        old = format!("{old} | {}", value(Some(other)));
                    }
                    format!("{old} → {}", value(f.new.as_ref()))
                }
            };
            let device_time = if e.clock_suspect {
                format!("{} {SUSPECT}", time::format(e.time, utc))
            } else {
                time::format(e.time, utc)
            };
            t.add_row(vec![
                device_time,
                e.received_at.map(|r| time::format(r, utc)).unwrap_or_else(|| "—".to_owned()),
                actor.clone(),
                out::short(&e.change).to_owned(),
                record,
                f.field.clone().unwrap_or_default(),
                change,
            ]);
        }
    }
    print_table(&t)?;
    let suspect = changes.iter().filter(|e| e.clock_suspect).count();
    if suspect > 0 {
        out::line(format!(
            "{SUSPECT} {suspect} {}",
            lang.t(
                "change(s) with a device clock that cannot be right (before 2020, or more than a day after \
                 the server received the change): kept as sent, ordered and shown (`show --at`) at the \
                 time the server received them; `--suspect-clocks` lists only them",
                "thay đổi có giờ thiết bị không thể đúng (trước năm 2020, hoặc muộn hơn lúc máy chủ nhận \
                 quá một ngày): giữ nguyên như đã gửi, được sắp xếp và hiển thị (`show --at`) theo lúc \
                 máy chủ nhận; `--suspect-clocks` chỉ liệt kê các thay đổi này"
            )
        ))?;
    }
    out::line(format!(
        "{} {} · `thonsync show {} --at <{}>`",
        changes.len(),
        lang.t("change(s)", "thay đổi"),
        args.village,
        lang.t("change", "thay đổi")
    ))
}
