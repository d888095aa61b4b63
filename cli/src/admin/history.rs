//! `thonsync history`: who changed what and when in one village's survey,
//! change by change, with old → new values.

use clap::Args;
use serde::Serialize;
use sync_core::history::{history, Action, HistoryEntry};
use sync_core::ids::DEFAULT_ROUND;

use super::out::{self, print_json, print_table, table};
use super::source::{Access, Source};
use super::survey::load;
use super::text::Lang;
use super::time;
use super::{not_found, Common, ListFormat};

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
    changes: Vec<HistoryEntry>,
}

pub fn run(args: HistoryArgs, lang: Lang) -> anyhow::Result<()> {
    let source = Source::open(&args.common, Access::Read)?;
    let registry = source.registry()?;
    let round = out::round(&args.round)?;
    let doc = load(&source, &registry, &args.village, &round)?;
    let mut changes: Vec<HistoryEntry> =
        history(&doc).into_iter().filter(|e| args.genesis || !e.genesis).collect();
    // People read history by time; among equal times the causal order is kept.
    changes.sort_by_key(|e| e.time);
    if let Some(hh) = &args.household {
        if !doc.household_ids(None).contains(hh) {
            return Err(not_found(format!(
                "household {hh:?} is not in {}; `thonsync show {}` lists its households",
                doc.id(),
                args.village
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
    if args.format == ListFormat::Json {
        let named = changes
            .iter()
            .filter_map(|e| surveyors.get(&e.actor).map(|n| (e.actor.clone(), n.clone())))
            .collect();
        return print_json(&History {
            document: id.to_string(),
            name: out::place_name(&registry, id.place.as_str()),
            administrator: admin,
            surveyors: named,
            changes,
        });
    }
    let utc = args.common.utc;
    out::line(out::title(&registry, &id, lang))?;
    let mut t = table([
        format!("{} ({})", lang.t("Time", "Thời gian"), time::zone(utc)),
        lang.t("Actor", "Tác nhân").to_owned(),
        lang.t("Change", "Thay đổi").to_owned(),
        lang.t("Record", "Bản ghi").to_owned(),
        lang.t("Field", "Trường").to_owned(),
        lang.t("Old → new", "Cũ → mới").to_owned(),
    ]);
    for e in &changes {
        let actor = if admin.as_deref() == Some(e.actor.as_str()) {
            format!("{} ({})", out::short(&e.actor), lang.t("administrator", "quản trị"))
        } else if let Some(name) = surveyors.get(&e.actor) {
            format!("{name} ({})", out::short(&e.actor))
        } else {
            out::short(&e.actor).to_owned()
        };
        for f in &e.fields {
            let record = match &f.household {
                Some(h) => format!("{} {h}", lang.t("household", "hộ")),
                None => lang.t("facts", "chỉ tiêu").to_owned(),
            };
            let change = match f.action {
                Action::Created => lang.t("created", "tạo mới").to_owned(),
                Action::Unset => format!("{} → ∅", out::value(f.old.as_ref(), lang)),
                Action::Increment => {
                    format!("{} → {} (+)", out::value(f.old.as_ref(), lang), out::value(f.new.as_ref(), lang))
                }
                Action::Set => {
                    format!("{} → {}", out::value(f.old.as_ref(), lang), out::value(f.new.as_ref(), lang))
                }
            };
            t.add_row(vec![
                time::format(e.time, utc),
                actor.clone(),
                out::short(&e.change).to_owned(),
                record,
                f.field.clone().unwrap_or_default(),
                change,
            ]);
        }
    }
    print_table(&t)?;
    out::line(format!(
        "{} {} · `thonsync show {} --at <{}>`",
        changes.len(),
        lang.t("change(s)", "thay đổi"),
        args.village,
        lang.t("change", "thay đổi")
    ))
}
