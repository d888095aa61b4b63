//! Shared pieces of the administrator's output: tables, JSON, numbers in the
//! command's language, place names, and which documents a command looks at
//! (`--commune`, `--round`).
//!
//! Tables fit the terminal (or `COLUMNS` columns when the output is not a
//! terminal): long cells wrap between words, and no word is ever split, so
//! ids such as `village:nhu-co-03:2024-1` or `dev-3f2a9c1e0b7d4a55` stay whole.

use std::io::Write;

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ColumnConstraint, ContentArrangement, Table, Width};
use serde::Serialize;
use sync_core::ids::{DocumentId, DocumentKind, PlaceId, Round};
use sync_core::registry::{PlaceKind, Registry};
use sync_core::schema::{FieldKind, Scope};
use sync_core::survey::{FieldValue, SurveyDocument};

use super::source::Source;
use super::text::{self, say, Lang};
use super::time;
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

/// Prints a table to stdout, fitted to the width (see the module's doc).
pub fn print_table(t: &Table) -> anyhow::Result<()> {
    let fitted = fit(t, columns_env());
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{fitted}")?;
    Ok(())
}

/// `COLUMNS`, the width to fit when stdout is not a terminal.
fn columns_env() -> Option<u16> {
    std::env::var("COLUMNS").ok()?.trim().parse().ok().filter(|&c| c > 0)
}

/// Whether a word (and whether it is in the header) must stay whole.
type KeepWhole = fn(&str, bool) -> bool;

/// A column narrower than this (or than its longest word, if shorter) is
/// unreadable: a table that cannot give every column that much is shown
/// one record at a time instead.
const READABLE: usize = 5;

/// The table as printed, fitted to the terminal's width, or to `columns`
/// when that is unknown (unwrapped when neither is known):
///
/// - each column at least as wide as its longest word, so only spaces wrap;
/// - if that is too wide, only the headers' words and the ids ([`id_like`])
///   stay whole, then only the ids in the cells, then only those outside
///   columns of prose (a reason, a detail), each column still
///   [`READABLE`];
/// - if even that is too wide, one record at a time: each row as a small
///   table of header and value (as `psql`'s expanded display);
/// - a record whose id alone is wider than the terminal is printed
///   unwrapped rather than with a broken id.
fn fit(t: &Table, columns: Option<u16>) -> String {
    let mut t = t.clone();
    if t.width().is_none() {
        if let Some(c) = columns {
            t.set_width(c);
        }
    }
    let Some(width) = t.width() else { return t.to_string() };
    let count = t.column_count();
    // Borders and padding: `│ a ┆ b │` is 3 per column and 1.
    let room = usize::from(width).saturating_sub(3 * count + 1);
    let header = |i: usize| t.header().and_then(|h| h.cell_iter().nth(i)).map(|c| c.content());
    // The longest word of each column that `keep` (given the word and
    // whether it is in the header) says must stay whole, at least
    // [`READABLE`]; with `prose_wraps`, cells of prose (more than four
    // words, such as a refusal's reason) may wrap anywhere.
    let longest = |keep: KeepWhole, prose_wraps: bool| -> Vec<usize> {
        (0..count)
            .map(|i| {
                let texts: Vec<(String, bool)> = header(i)
                    .map(|h| (h, true))
                    .into_iter()
                    .chain(t.column_cells_iter(i).flatten().map(|c| (c.content(), false)))
                    .collect();
                let words = |keep: &dyn Fn(&str, bool) -> bool, prose_wraps: bool| {
                    texts
                        .iter()
                        .filter(|(text, _)| !(prose_wraps && text.split_whitespace().count() > 4))
                        .flat_map(|(text, in_header)| {
                            text.split_whitespace()
                                .filter(|w| keep(w, *in_header))
                                .map(|w| w.chars().count())
                                .collect::<Vec<_>>()
                        })
                        .max()
                        .unwrap_or(1)
                };
                words(&keep, prose_wraps).max(words(&|_, _| true, false).min(READABLE))
            })
            .collect()
    };
    let tiers: [(KeepWhole, bool); 4] = [
        (|_, _| true, false),
        (|w, in_header| in_header || id_like(w), false),
        (|w, in_header| !in_header && id_like(w), false),
        (|w, in_header| !in_header && id_like(w), true),
    ];
    for (keep, prose_wraps) in tiers {
        let mins = longest(keep, prose_wraps);
        if mins.iter().sum::<usize>() <= room {
            for (column, min) in t.column_iter_mut().zip(mins) {
                // comfy-table's boundaries count the cell's padding too.
                let min = u16::try_from(min + 2).unwrap_or(u16::MAX);
                column.set_constraint(ColumnConstraint::LowerBoundary(Width::Fixed(min)));
            }
            return t.to_string();
        }
    }
    if count > 2 {
        if let Some(headers) = t.header().map(|h| h.cell_iter().map(|c| c.content()).collect::<Vec<_>>()) {
            let records: Vec<String> = t
                .row_iter()
                .map(|row| {
                    let mut r = plain();
                    for (h, cell) in headers.iter().zip(row.cell_iter()) {
                        r.add_row(vec![h.clone(), cell.content()]);
                    }
                    fit(&r, Some(width))
                })
                .collect();
            return records.join("\n");
        }
    }
    t.set_content_arrangement(ContentArrangement::Disabled);
    t.to_string()
}

/// A word that must not be split: an id such as `dev-3f2a9c1e0b7d4a55`,
/// `hh-04` or `song-cau`, a date, a number, a version. A field name
/// (`members_15_plus`) may wrap when nothing else fits.
fn id_like(word: &str) -> bool {
    word.is_ascii()
        && !word.contains('_')
        && (word.bytes().any(|b| b.is_ascii_digit()) || word.contains(['-', ':']))
}

/// A number with `places` decimals: `12.5` in English, `12,5` in Vietnamese.
pub fn decimal(x: f64, places: usize) -> String {
    let s = format!("{x:.places$}");
    match text::current() {
        Lang::En => s,
        Lang::Vi => s.replace('.', ","),
    }
}

/// A percentage with one decimal: `12.5%` in English, `12,5 %` in Vietnamese.
pub fn percent(p: f64) -> String {
    match text::current() {
        Lang::En => format!("{}%", decimal(p, 1)),
        Lang::Vi => format!("{} %", decimal(p, 1)),
    }
}

/// Prints a line to stdout, wrapped between words to the terminal's width
/// (or `COLUMNS`, as tables are; see [`wrap`]).
pub fn line(text: impl std::fmt::Display) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", wrap(&text.to_string()))?;
    Ok(())
}

/// The width plain lines are wrapped to: the terminal's, else `COLUMNS`,
/// else none (unwrapped).
pub fn width() -> Option<usize> {
    plain().width().or_else(columns_env).map(usize::from)
}

/// Text with each line wrapped between words to [`width`]; a word wider
/// than the width (an id, a path, a URL) stays whole on a line of its own.
pub fn wrap(text: &str) -> String {
    match width() {
        Some(w) => wrap_to(text, w),
        None => text.to_owned(),
    }
}

/// [`wrap`] to `width` columns; continued lines are indented two spaces
/// more than the line they continue.
fn wrap_to(text: &str, width: usize) -> String {
    let mut lines = Vec::new();
    for source in text.split('\n') {
        if source.chars().count() <= width {
            lines.push(source.to_owned());
            continue;
        }
        let indent: String = source.chars().take_while(|c| *c == ' ').collect();
        let mut current = indent.clone();
        let mut words_on_line = 0;
        for word in source.split_whitespace() {
            if words_on_line > 0 && current.chars().count() + 1 + word.chars().count() > width {
                lines.push(std::mem::replace(&mut current, format!("{indent}  ")));
                words_on_line = 0;
            }
            if words_on_line > 0 {
                current.push(' ');
            }
            current.push_str(word);
            words_on_line += 1;
        }
        lines.push(current);
    }
    lines.join("\n")
}

/// Prints a value as pretty JSON to stdout.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut stdout, value)?;
    writeln!(stdout)?;
    Ok(())
}

/// A hash or actor id for people: the first 8 hex digits, or for a field
/// device's actor its device id (every device actor starts with the same
/// bytes, so its first digits would name no one).
pub fn short(hex: &str) -> String {
    sync_core::actors::hex_actor_device(hex).unwrap_or_else(|| hex[..hex.len().min(8)].to_owned())
}

/// A value cell: `—` when there is none.
pub fn value(v: Option<&FieldValue>, lang: Lang) -> String {
    match v {
        None => "—".to_owned(),
        Some(FieldValue::Bool(b)) => lang.yes_no(Some(*b)).to_owned(),
        Some(other) => other.to_string(),
    }
}

/// Whether a survey field holds a time ([`FieldKind::Time`], milliseconds since 1970).
pub fn is_time_field(name: &str) -> bool {
    [Scope::Household, Scope::Village, Scope::Commune]
        .into_iter()
        .any(|s| s.field(name).is_some_and(|f| f.kind == FieldKind::Time))
}

/// A value cell of `field`: a time as a date and time in the command's
/// language ([`time::format`]), anything else as [`value`].
pub fn field_value(field: &str, v: Option<&FieldValue>, lang: Lang, utc: bool) -> String {
    match v {
        Some(FieldValue::Int(ms)) if is_time_field(field) => time::format(*ms, utc),
        other => value(other, lang),
    }
}

/// The survey's time values in a JSON value as ISO-8601 text
/// ([`time::format_iso`]): the value of a time field's own key, and the
/// values (`old`, `new`, `shown`, `value`, `clashing`, `candidates`) of an
/// object about a time field (`"field": "surveyed_at"`: a change, a conflict).
pub fn iso_field_times(json: &mut serde_json::Value, utc: bool) {
    use serde_json::Value;
    fn iso(v: &mut Value, utc: bool) {
        match v {
            Value::Number(n) => {
                if let Some(ms) = n.as_i64() {
                    *v = Value::from(time::format_iso(ms, utc));
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| iso(v, utc)),
            Value::Object(map) => {
                if let Some(inner) = map.get_mut("value") {
                    iso(inner, utc);
                }
            }
            _ => {}
        }
    }
    match json {
        Value::Object(map) => {
            let about_time = map.get("field").and_then(Value::as_str).is_some_and(is_time_field);
            for (k, v) in map.iter_mut() {
                let values = ["old", "new", "shown", "value", "clashing", "candidates"];
                if is_time_field(k) || about_time && values.contains(&k.as_str()) {
                    iso(v, utc);
                } else {
                    iso_field_times(v, utc);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| iso_field_times(v, utc)),
        _ => {}
    }
}

/// Where a field lives, for messages: `a household`, `một hộ`.
pub fn scope_name(scope: Scope) -> String {
    let vi = match scope {
        Scope::Village => "phần chỉ tiêu của thôn",
        Scope::Household => "một hộ",
        Scope::Commune => "phần chỉ tiêu của xã",
    };
    say(scope.name(), vi)
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
    Round::new(raw).map_err(|e| {
        usage(say(
            format!("--round {raw:?}: {e}"),
            format!("--round {raw:?}: đợt điều tra không hợp lệ (ví dụ đúng: 2024-1)"),
        ))
    })
}

/// Checks that `--commune ID` names a commune.
pub fn check_commune(registry: &Registry, commune: &str) -> anyhow::Result<()> {
    match registry.get(commune) {
        Some(p) if p.kind == PlaceKind::Commune => Ok(()),
        Some(p) => Err(usage(say(
            format!(
                "{commune:?} ({}) is a {:?}, not a commune; `thonsync registry show` lists the communes",
                p.name, p.kind
            ),
            format!("{commune:?} ({}) không phải là xã; `thonsync registry show` liệt kê các xã", p.name),
        ))),
        None => Err(not_found(say(
            format!(
                "commune {commune:?} is not in the registry; `thonsync registry show` lists the communes"
            ),
            format!(
                "xã {commune:?} không có trong danh mục địa bàn; `thonsync registry show` liệt kê các xã"
            ),
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
    let bad = |e: &dyn std::fmt::Display| {
        usage(say(
            format!("{raw:?}: {e}"),
            format!("{raw:?} không phải mã tài liệu, thôn hay xã (ví dụ: nhu-co-03)"),
        ))
    };
    if raw.contains(':') {
        return raw.parse().map_err(|e| bad(&e));
    }
    let place = PlaceId::new(raw).map_err(|e| bad(&e))?;
    match registry.get(raw).map(|p| p.kind) {
        Some(PlaceKind::Village) | None => Ok(DocumentId::village(place, round.clone())),
        Some(PlaceKind::Commune) => Ok(DocumentId::commune(place, round.clone())),
        Some(kind) => Err(usage(say(
            format!("{raw:?} is a {kind:?}; give a village or a commune (`thonsync villages` lists them)"),
            format!(
                "{raw:?} không phải thôn hay xã; hãy cho một thôn hoặc một xã (`thonsync villages` liệt kê)"
            ),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_narrow_table_wraps_names_between_words_and_keeps_ids_whole() {
        let mut t = table(["Device", "Name", "Communes"]);
        let id = "dev-3f2a9c1e0b7d4a55";
        t.add_row(vec![id, "Chị Lan, tablet 07 của xã Như Cố, thôn Nà Kham", "nhu-co, song-cau"]);
        let shown = fit(&t, Some(50));
        assert!(shown.lines().all(|l| l.chars().count() <= 50), "{shown}");
        assert!(shown.contains(id), "{shown}");
        assert!(shown.contains("song-cau"), "{shown}");
        assert!(shown.lines().count() > 5, "the name wraps:\n{shown}");
        // Too narrow for the id: printed unwrapped, the id whole.
        let shown = fit(&t, Some(20));
        assert!(shown.contains(id), "{shown}");
    }

    #[test]
    fn a_device_actor_is_shown_by_its_device() {
        let actor = sync_core::actors::device_actor("dev-3f2a9c1e0b7d4a55", [7; 8]);
        assert_eq!(short(&actor.to_hex_string()), "dev-3f2a9c1e0b7d4a55");
        assert_eq!(short(&"ab".repeat(32)), "abababab");
        assert_eq!(short("abc"), "abc");
    }
}
