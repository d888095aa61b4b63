//! `thonsync device import FILE.csv`: households entered from a spreadsheet.
//!
//! The header row names household fields (`sync_core::schema`), a
//! `household` column (the household id) and, optionally, a `village`
//! column. Every row is checked as `thonsync device set` checks an edit (the
//! field's type and range, a household id that looks like a typo, the
//! consistency rules) and every error names its line; nothing is written
//! unless every row passes. Then each row is recorded as one change, all in
//! one commit of the device's database. A byte-order mark is skipped, and a
//! header row with more `;` than `,` means `;`-separated cells.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;
use sync_core::ids::{DocumentId, HouseholdId};
use sync_core::schema::{Field, FieldKind, Scope};
use sync_core::survey::{Edit, SurveyDocument, Target};

use super::{edit, Device, Out};
use crate::admin::out::print_json;
use crate::exit::{failure, EXIT_DATA_REFUSED, EXIT_OK, EXIT_USAGE};

/// One refused row.
#[derive(Debug, Serialize)]
pub struct RowError {
    /// The line of the file (the header is line 1).
    pub line: u64,
    /// What is wrong, in the surveyor's language.
    pub message: String,
}

/// What an import did (or would have done).
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// The file.
    pub file: String,
    /// Data rows read.
    pub rows: usize,
    /// Whether anything was written (all or nothing).
    pub written: bool,
    /// Households created.
    pub households_created: usize,
    /// Existing households changed.
    pub households_updated: usize,
    /// Rows whose every value was already there.
    pub rows_unchanged: usize,
    /// Field values written.
    pub fields_written: usize,
    /// The changes recorded, one per written row.
    pub changes: Vec<String>,
    /// Refused rows; when any, nothing was written.
    pub errors: Vec<RowError>,
}

/// A column of the file.
enum Column {
    Household,
    Village,
    Field(&'static Field),
}

/// A checked row, ready to record.
struct Row {
    document: DocumentId,
    edits: Vec<Edit>,
    new: bool,
}

/// The documents being imported into: as stored, and with the rows so far.
struct Draft {
    existing: Vec<String>,
    candidate: SurveyDocument,
    seen: BTreeMap<String, u64>,
}

/// Reads, checks and (when every row passes) records the file.
pub(super) fn run(
    device: &mut Device,
    file: &Path,
    village: Option<&str>,
    confirmed: bool,
    out: Out,
) -> anyhow::Result<u8> {
    let bytes = std::fs::read(file).map_err(|e| {
        failure(
            crate::exit::EXIT_ERROR,
            out.say(
                format!("{}: {e}", file.display()),
                format!("không đọc được tệp {} ({e})", file.display()),
            ),
        )
    })?;
    // A spreadsheet may start its file with a byte-order mark, and separate
    // cells with `;` (where `,` is the decimal comma, as in Vietnamese).
    let text = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(&bytes);
    let first = text.split(|b| *b == b'\n').next().unwrap_or_default();
    let count = |c: u8| first.iter().filter(|b| **b == c).count();
    let delimiter = if count(b';') > count(b',') { b';' } else { b',' };
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).delimiter(delimiter).from_reader(text);
    let mut summary = Summary { file: file.display().to_string(), ..Summary::default() };
    let columns = columns(&mut reader, out)?;
    if !columns.iter().any(|c| matches!(c, Column::Village)) && village.is_none() {
        return Err(failure(
            EXIT_USAGE,
            out.say(
                "which village? Give --village VILLAGE or a `village` column".into(),
                "thôn nào? Hãy cho --village THÔN hoặc một cột `village`".into(),
            ),
        ));
    }
    let mut drafts: BTreeMap<DocumentId, Draft> = BTreeMap::new();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                summary.rows += 1;
                summary.errors.push(RowError { line, message: e.to_string() });
                continue;
            }
        };
        summary.rows += 1;
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        match check_row(device, &columns, &record, line, village, confirmed, &mut drafts, out) {
            Ok(Some(row)) => rows.push(row),
            Ok(None) => summary.rows_unchanged += 1,
            Err(messages) => {
                summary.errors.extend(messages.into_iter().map(|message| RowError { line, message }))
            }
        }
    }
    if !summary.errors.is_empty() {
        let refused = summary.errors.iter().map(|e| e.line).collect::<std::collections::BTreeSet<_>>().len();
        let message = out.say(
            format!("{refused} row(s) of {} refused; nothing was written", summary.rows),
            format!("{refused} trên {} dòng bị từ chối; chưa ghi gì", summary.rows),
        );
        if out.json {
            print_json(&summary)?;
        } else {
            let mut text = String::new();
            for e in &summary.errors {
                text.push_str(&out.say(
                    format!("line {}: {}\n", e.line, e.message),
                    format!("dòng {}: {}\n", e.line, e.message),
                ));
            }
            super::print(text)?;
        }
        return Err(failure(EXIT_DATA_REFUSED, message));
    }
    let changes: Vec<_> = rows.iter().map(|r| (r.document.clone(), r.edits.clone())).collect();
    let hashes = device.record_all(&changes)?;
    summary.changes = hashes.iter().map(ToString::to_string).collect();
    for row in &rows {
        summary.fields_written += row.edits.len();
        if row.new {
            summary.households_created += 1;
        } else {
            summary.households_updated += 1;
        }
    }
    summary.written = true;
    if out.json {
        print_json(&summary)?;
    } else {
        super::print(out.say(
            format!(
                "imported {} row(s) of {}: {} household(s) created, {} updated, {} unchanged, {} value(s) written; run `thonsync device sync` when online\n",
                summary.rows, summary.file, summary.households_created, summary.households_updated,
                summary.rows_unchanged, summary.fields_written
            ),
            format!(
                "đã nhập {} dòng từ {}: {} hộ mới, {} hộ cập nhật, {} không đổi, ghi {} giá trị; chạy `thonsync device sync` khi có mạng\n",
                summary.rows, summary.file, summary.households_created, summary.households_updated,
                summary.rows_unchanged, summary.fields_written
            ),
        ))?;
    }
    Ok(EXIT_OK)
}

/// The header row (line 1): every column must be known, once.
fn columns(reader: &mut csv::Reader<&[u8]>, out: Out) -> anyhow::Result<Vec<Column>> {
    let headers = reader
        .headers()
        .map_err(|e| failure(EXIT_DATA_REFUSED, format!("{} 1: {e}", out.lang.t("line", "dòng"))))?
        .clone();
    let refuse = |en: String, vi: String| {
        let line = out.lang.t("line", "dòng");
        failure(EXIT_DATA_REFUSED, format!("{line} 1: {}", out.say(en, vi)))
    };
    let mut columns = Vec::new();
    for (i, name) in headers.iter().enumerate() {
        if headers.iter().take(i).any(|h| h == name) {
            return Err(refuse(
                format!("column {name:?} appears twice"),
                format!("cột {name:?} xuất hiện hai lần"),
            ));
        }
        let column = match name {
            "household" | "household_id" => Column::Household,
            "village" => Column::Village,
            other => match Scope::Household.field(other) {
                Some(f) if f.kind == FieldKind::Counter => {
                    return Err(refuse(
                        format!("column {other:?} is a counter: add to it with `thonsync device add`"),
                        format!("cột {other:?} là bộ đếm: cộng thêm bằng `thonsync device add`"),
                    ))
                }
                Some(f) => Column::Field(f),
                None => {
                    let known = Scope::Household.known();
                    return Err(refuse(
                        format!("unknown column {other:?}; known: household, village, {known}"),
                        format!("không có cột {other:?}; các cột: household, village, {known}"),
                    ));
                }
            },
        };
        columns.push(column);
    }
    if !columns.iter().any(|c| matches!(c, Column::Household)) {
        return Err(refuse(
            "no `household` column (the household id)".into(),
            "thiếu cột `household` (mã hộ)".into(),
        ));
    }
    Ok(columns)
}

/// Checks one row against the draft of its document; `Ok(None)` when every
/// value is already there, the row's messages when it is refused.
#[allow(clippy::too_many_arguments)]
fn check_row(
    device: &mut Device,
    columns: &[Column],
    record: &csv::StringRecord,
    line: u64,
    village: Option<&str>,
    confirmed: bool,
    drafts: &mut BTreeMap<DocumentId, Draft>,
    out: Out,
) -> Result<Option<Row>, Vec<String>> {
    let cell = |want: fn(&Column) -> bool| {
        columns.iter().zip(record.iter()).find(|(c, _)| want(c)).map(|(_, v)| v).filter(|v| !v.is_empty())
    };
    let place = cell(|c| matches!(c, Column::Village)).or(village).unwrap_or_default();
    let document = device.document_for(place).map_err(|e| vec![e.to_string()])?;
    let household = cell(|c| matches!(c, Column::Household))
        .ok_or_else(|| vec![out.say("no household id".into(), "thiếu mã hộ".into())])?;
    let id = HouseholdId::new(household).map_err(|e| vec![e.to_string()])?;
    if !drafts.contains_key(&document) {
        let doc = device.document(&document).map_err(|e| vec![e.to_string()])?.clone();
        drafts.insert(
            document.clone(),
            Draft { existing: doc.household_ids(None), candidate: doc, seen: BTreeMap::new() },
        );
    }
    let draft = drafts.get_mut(&document).expect("inserted");
    if let Some(first) = draft.seen.get(household) {
        return Err(vec![out.say(
            format!("household {household} is already on line {first}"),
            format!("hộ {household} đã có ở dòng {first}"),
        )]);
    }
    draft.seen.insert(household.to_owned(), line);
    edit::check_new_household(household, &draft.existing, confirmed, out.lang)
        .map_err(|e| vec![e.to_string()])?;
    let target = Target::Household(id);
    let before = draft.candidate.snapshot(None).map_err(|e| vec![e.to_string()])?;
    let now = serde_json::to_value(&before).map_err(|e| vec![e.to_string()])?;
    let mut errors = Vec::new();
    let mut edits = Vec::new();
    for (column, raw) in columns.iter().zip(record.iter()) {
        let Column::Field(field) = column else { continue };
        if raw.is_empty() {
            continue;
        }
        match edit::parse_value(field, raw, out.lang, out.utc) {
            Ok(v) if edit::current(&now, &target, field.name).as_ref() == Some(&v.to_json()) => {}
            Ok(v) => edits.push(Edit::set(target.clone(), field.name, v)),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let new = !draft.existing.iter().any(|h| h == household);
    if edits.is_empty() {
        if new {
            return Err(vec![out.say(
                format!("new household {household} has no values"),
                format!("hộ mới {household} không có giá trị nào"),
            )]);
        }
        return Ok(None);
    }
    let mut candidate = draft.candidate.clone();
    candidate.apply(&edits, 0).map_err(|e| vec![e.to_string()])?;
    let after = candidate.snapshot(None).map_err(|e| vec![e.to_string()])?;
    let breaches = edit::new_breaches(&before, &after);
    if !breaches.is_empty() {
        let after: Value = serde_json::to_value(&after).unwrap_or_default();
        return Err(breaches.iter().map(|b| edit::breach_message(b, &after, out.lang)).collect());
    }
    draft.candidate = candidate;
    Ok(Some(Row { document, edits, new }))
}
