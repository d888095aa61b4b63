//! `thonsync export`: households, village facts and commune facts in one flat
//! table a spreadsheet opens (CSV) or a script reads (JSON), written row by
//! row as each document is loaded, so there is no row cap.
//!
//! Every registry village of the scope gets a `village` row (empty facts when
//! nothing is surveyed yet, with its expected households), every commune a
//! `commune` row, every surveyed household a `household` row. Summing the
//! rows gives the report's numerators and denominators. Personal fields
//! (`head_name`) are left out unless `--include-personal` is given.
//! `--excel` starts a CSV file with the UTF-8 byte order mark, which Excel
//! needs to read Vietnamese names as UTF-8 rather than the system code page.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;
use sync_core::ids::{DocumentId, PlaceId, DEFAULT_ROUND};
use sync_core::registry::{Place, PlaceKind};
use sync_core::schema::{COMMUNE_FIELDS, HOUSEHOLD_FIELDS, VILLAGE_FIELDS};
use sync_core::survey::Survey;

use super::out;
use super::source::{Access, Source};
use super::text::{say, Lang};
use super::time;
use super::{usage, Common};

/// The file formats of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// Comma-separated values with a header row.
    Csv,
    /// A JSON array of flat objects.
    Json,
}

/// `thonsync export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub common: Common,
    /// CSV for spreadsheets, JSON for scripts.
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// Only this commune (e.g. song-cau); default: every commune in the registry.
    #[arg(long)]
    pub commune: Option<String>,
    /// Survey round.
    #[arg(long, default_value = DEFAULT_ROUND)]
    pub round: String,
    /// Write to this file instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Include personal fields (head_name). Handle such a file as personal data.
    #[arg(long)]
    pub include_personal: bool,
    /// For Excel: start the CSV with a UTF-8 byte order mark, so Excel shows diacritics right.
    #[arg(long)]
    pub excel: bool,
}

/// The UTF-8 byte order mark.
const UTF8_BOM: &[u8] = "\u{feff}".as_bytes();

/// The columns before the survey fields.
const PLACE_COLUMNS: &[&str] = &[
    "record",
    "round",
    "district",
    "commune",
    "commune_name",
    "village",
    "village_name",
    "expected_households",
    "household",
];

/// The export's columns, in order.
pub fn columns(include_personal: bool) -> Vec<&'static str> {
    let mut cols = PLACE_COLUMNS.to_vec();
    cols.extend(VILLAGE_FIELDS.iter().map(|f| f.name));
    cols.extend(HOUSEHOLD_FIELDS.iter().filter(|f| include_personal || !f.personal).map(|f| f.name));
    cols.extend(COMMUNE_FIELDS.iter().map(|f| f.name));
    cols
}

/// Writes rows as CSV or as a streamed JSON array.
struct RowWriter<W: Write> {
    format: ExportFormat,
    columns: Vec<&'static str>,
    csv: Option<csv::Writer<W>>,
    json: Option<W>,
    rows: u64,
}

impl<W: Write> RowWriter<W> {
    fn new(format: ExportFormat, columns: Vec<&'static str>, mut w: W) -> anyhow::Result<Self> {
        match format {
            ExportFormat::Csv => {
                let mut c = csv::Writer::from_writer(w);
                c.write_record(&columns)?;
                Ok(Self { format, columns, csv: Some(c), json: None, rows: 0 })
            }
            ExportFormat::Json => {
                w.write_all(b"[")?;
                Ok(Self { format, columns, csv: None, json: Some(w), rows: 0 })
            }
        }
    }

    fn row(&mut self, values: &serde_json::Map<String, Value>) -> anyhow::Result<()> {
        let get = |c: &str| values.get(c).unwrap_or(&Value::Null);
        match self.format {
            ExportFormat::Csv => {
                let cells: Vec<String> = self
                    .columns
                    .iter()
                    .map(|c| match get(c) {
                        Value::Null => String::new(),
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect();
                self.csv.as_mut().expect("csv").write_record(&cells)?;
            }
            ExportFormat::Json => {
                let w = self.json.as_mut().expect("json");
                w.write_all(if self.rows == 0 { b"\n" } else { b",\n" })?;
                w.write_all(b"{")?;
                for (i, c) in self.columns.iter().enumerate() {
                    if i > 0 {
                        w.write_all(b",")?;
                    }
                    serde_json::to_writer(&mut *w, c)?;
                    w.write_all(b":")?;
                    serde_json::to_writer(&mut *w, get(c))?;
                }
                w.write_all(b"}")?;
            }
        }
        self.rows += 1;
        Ok(())
    }

    fn finish(self) -> anyhow::Result<u64> {
        if let Some(mut c) = self.csv {
            c.flush()?;
        }
        if let Some(mut w) = self.json {
            w.write_all(b"\n]\n")?;
            w.flush()?;
        }
        Ok(self.rows)
    }
}

fn place_values(
    record: &str,
    round: &str,
    commune: &Place,
    village: Option<&Place>,
    household: Option<&str>,
) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("record".into(), record.into());
    m.insert("round".into(), round.into());
    m.insert("district".into(), commune.parent.clone().map(Value::from).unwrap_or(Value::Null));
    m.insert("commune".into(), commune.id.clone().into());
    m.insert("commune_name".into(), commune.name.clone().into());
    if let Some(v) = village {
        m.insert("village".into(), v.id.clone().into());
        m.insert("village_name".into(), v.name.clone().into());
        if household.is_none() {
            m.insert(
                "expected_households".into(),
                v.expected_households.map(Value::from).unwrap_or(Value::Null),
            );
        }
    }
    if let Some(h) = household {
        m.insert("household".into(), h.into());
    }
    m
}

fn merge_fields(
    m: &mut serde_json::Map<String, Value>,
    record: Value,
    fields: &[sync_core::schema::Field],
    utc: bool,
) {
    let Value::Object(record) = record else { return };
    for f in fields {
        let v = record.get(f.name).cloned().unwrap_or(Value::Null);
        let v = match (f.name, &v) {
            ("surveyed_at", Value::Number(n)) => {
                n.as_i64().map(|ms| time::format_iso(ms, utc).into()).unwrap_or(v)
            }
            _ => v,
        };
        m.insert(f.name.into(), v);
    }
}

pub fn run(args: ExportArgs, lang: Lang) -> anyhow::Result<()> {
    let source = Source::open(&args.common, Access::Read)?;
    let registry = source.registry()?;
    let round = out::round(&args.round)?;
    let communes: Vec<&Place> = match &args.commune {
        Some(c) => {
            out::check_commune(&registry, c)?;
            registry.get(c).into_iter().collect()
        }
        None => registry.of_kind(PlaceKind::Commune).collect(),
    };
    let stored = source.document_ids()?;
    let total: u64 = communes.iter().map(|c| 1 + registry.children(&c.id).count() as u64).sum();
    let progress = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} ({eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(lang.t("exporting", "đang xuất").to_owned());
        bar
    } else {
        ProgressBar::hidden()
    };
    if args.excel && args.format != ExportFormat::Csv {
        return Err(usage(say("--excel goes with --format csv", "--excel chỉ dùng cùng --format csv")));
    }
    let mut sink: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(BufWriter::new(File::create(path).with_context(|| {
            say(format!("cannot write {}", path.display()), format!("không ghi được {}", path.display()))
        })?)),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    if args.excel {
        sink.write_all(UTF8_BOM)?;
    }
    let utc = args.common.utc;
    let mut w = RowWriter::new(args.format, columns(args.include_personal), sink)?;
    let load = |id: DocumentId| -> anyhow::Result<Option<Survey>> {
        if !stored.contains(&id) {
            return Ok(None);
        }
        Ok(source.document(&id)?.map(|d| d.snapshot(None)).transpose()?)
    };
    for commune in communes {
        let cid = PlaceId::new(commune.id.as_str())?;
        let mut row = place_values("commune", round.as_str(), commune, None, None);
        if let Some(Survey::Commune(c)) = load(DocumentId::commune(cid, round.clone()))? {
            merge_fields(&mut row, serde_json::to_value(&c.facts)?, COMMUNE_FIELDS, utc);
        }
        w.row(&row)?;
        progress.inc(1);
        for village in registry.children(&commune.id).filter(|p| p.kind == PlaceKind::Village) {
            let vid = PlaceId::new(village.id.as_str())?;
            let survey = load(DocumentId::village(vid, round.clone()))?;
            let mut row = place_values("village", round.as_str(), commune, Some(village), None);
            if let Some(Survey::Village(v)) = &survey {
                merge_fields(&mut row, serde_json::to_value(&v.facts)?, VILLAGE_FIELDS, utc);
            }
            w.row(&row)?;
            if let Some(Survey::Village(v)) = &survey {
                for (id, h) in &v.households {
                    let mut row = place_values("household", round.as_str(), commune, Some(village), Some(id));
                    let fields: Vec<_> = HOUSEHOLD_FIELDS
                        .iter()
                        .filter(|f| args.include_personal || !f.personal)
                        .copied()
                        .collect();
                    merge_fields(&mut row, serde_json::to_value(h)?, &fields, utc);
                    w.row(&row)?;
                }
            }
            progress.inc(1);
        }
    }
    let rows = w.finish()?;
    progress.finish_and_clear();
    if let Some(path) = &args.out {
        eprintln!("{rows} {} → {}", lang.t("rows written", "dòng đã ghi"), path.display());
    }
    Ok(())
}
