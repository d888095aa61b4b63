//! Shared pieces of the administrator's output: tables, JSON, place names,
//! and which documents a command looks at (`--commune`, `--round`).

use std::io::Write;

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ContentArrangement, Table};
use serde::Serialize;
use sync_core::ids::{DocumentId, DocumentKind, PlaceId, Round};
use sync_core::registry::{PlaceKind, Registry};
use sync_core::survey::{FieldValue, SurveyDocument};

use super::source::Source;
use super::text::Lang;
use super::{not_found, usage};

/// A table with headers, fitted to the terminal when there is one.
pub fn table<S: ToString>(headers: impl IntoIterator<Item = S>) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic);
    t.set_header(headers.into_iter().map(|h| h.to_string()).collect::<Vec<_>>());
    t
}

/// A table without headers, for key / value lists.
pub fn plain() -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic);
    t
}

/// Prints a table to stdout.
pub fn print_table(t: &Table) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{t}")?;
    Ok(())
}

/// Prints a line to stdout.
pub fn line(text: impl std::fmt::Display) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}")?;
    Ok(())
}

/// Prints a value as pretty JSON to stdout.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut stdout, value)?;
    writeln!(stdout)?;
    Ok(())
}

/// The first 8 hex digits of a hash or actor id.
pub fn short(hex: &str) -> &str {
    &hex[..hex.len().min(8)]
}

/// A value cell: `—` when there is none.
pub fn value(v: Option<&FieldValue>, lang: Lang) -> String {
    match v {
        None => "—".to_owned(),
        Some(FieldValue::Bool(b)) => lang.yes_no(Some(*b)).to_owned(),
        Some(other) => other.to_string(),
    }
}

/// An optional number cell.
pub fn num(v: Option<i64>) -> String {
    v.map(|n| n.to_string()).unwrap_or_else(|| "—".to_owned())
}

/// The name of a place with its diacritics, or its id when the registry does not know it.
pub fn place_name(registry: &Registry, id: &str) -> String {
    registry.get(id).map(|p| p.name.clone()).unwrap_or_else(|| id.to_owned())
}

/// The commune a document belongs to, as (id, name).
pub fn commune_of(registry: &Registry, doc: &DocumentId) -> (String, String) {
    match registry.commune_of(doc) {
        Some(c) => (c.id.clone(), c.name.clone()),
        None => (String::new(), String::new()),
    }
}

/// Parses `--round`.
pub fn round(raw: &str) -> anyhow::Result<Round> {
    Round::new(raw).map_err(|e| usage(format!("--round: {e}")))
}

/// Checks that `--commune ID` names a commune.
pub fn check_commune(registry: &Registry, commune: &str) -> anyhow::Result<()> {
    match registry.get(commune) {
        Some(p) if p.kind == PlaceKind::Commune => Ok(()),
        Some(p) => Err(usage(format!(
            "{commune:?} ({}) is a {:?}, not a commune; `thonsync registry show` lists the communes",
            p.name, p.kind
        ))),
        None => Err(not_found(format!(
            "commune {commune:?} is not in the registry; `thonsync registry show` lists the communes"
        ))),
    }
}

/// The stored documents of a round, of one commune or all, loaded and merged.
pub fn documents(
    source: &Source,
    registry: &Registry,
    commune: Option<&str>,
    round: &Round,
) -> anyhow::Result<Vec<SurveyDocument>> {
    let stored = source.document_ids()?;
    let wanted: Vec<DocumentId> = match commune {
        Some(c) => {
            check_commune(registry, c)?;
            let of_commune = registry.documents_for_commune(c, round);
            stored.into_iter().filter(|id| of_commune.contains(id)).collect()
        }
        None => stored.into_iter().filter(|id| &id.round == round).collect(),
    };
    let mut docs = Vec::with_capacity(wanted.len());
    for id in wanted {
        if let Some(doc) = source.document(&id)? {
            docs.push(doc);
        }
    }
    Ok(docs)
}

/// Reads a document argument: a document id (`village:nhu-co-03:2024-1`), a
/// village id (its village document) or a commune id (its commune document).
pub fn document_arg(registry: &Registry, raw: &str, round: &Round) -> anyhow::Result<DocumentId> {
    if raw.contains(':') {
        return raw.parse().map_err(|e| usage(format!("{raw:?}: {e}")));
    }
    let place = PlaceId::new(raw).map_err(|e| usage(format!("{raw:?}: {e}")))?;
    match registry.get(raw).map(|p| p.kind) {
        Some(PlaceKind::Village) | None => Ok(DocumentId::village(place, round.clone())),
        Some(PlaceKind::Commune) => Ok(DocumentId::commune(place, round.clone())),
        Some(kind) => Err(usage(format!(
            "{raw:?} is a {kind:?}; give a village or a commune (`thonsync villages` lists them)"
        ))),
    }
}

/// A document's title: place name, commune, round.
pub fn title(registry: &Registry, id: &DocumentId, lang: Lang) -> String {
    let name = place_name(registry, id.place.as_str());
    match id.kind {
        DocumentKind::Village => {
            let (_, commune) = commune_of(registry, id);
            let district = registry
                .ancestor(id.place.as_str(), PlaceKind::District)
                .map(|d| format!(", {}", d.name))
                .unwrap_or_default();
            format!("{name} — {commune}{district} · {} {}", lang.t("round", "đợt"), id.round)
        }
        DocumentKind::Commune => format!("{name} · {} {}", lang.t("round", "đợt"), id.round),
    }
}
