//! `thonsync refused` and `thonsync refused show ID`: uploads the server
//! refused and kept aside, never lost, with reason and source.

use std::path::PathBuf;

use anyhow::Context;
use base64::Engine;
use clap::{Args, Subcommand};
use serde::Serialize;

use super::out::{self, print_json, print_table, table};
use super::source::{Access, RefusedSummary, Source};
use super::text::{say, Lang};
use super::time;
use super::{not_found, Common, ListFormat};

/// `thonsync refused`.
#[derive(Debug, Args)]
pub struct RefusedArgs {
    #[command(flatten)]
    pub common: Common,
    /// Show one upload instead of listing them.
    #[command(subcommand)]
    pub action: Option<RefusedAction>,
    /// Table for people, JSON for scripts.
    #[arg(long, value_enum, default_value_t, global = true)]
    pub format: ListFormat,
}

/// What to do with refused uploads.
#[derive(Debug, Subcommand)]
pub enum RefusedAction {
    /// One refused upload: its reason, source and bytes.
    #[command(
        after_help = help!("thonsync refused show 12", "thonsync refused show 12 --out upload-12.bin --format json")
    )]
    Show {
        /// Its id, from `thonsync refused`.
        id: i64,
        /// Also write the bytes exactly as received to this file.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Serialize)]
struct WithBytes {
    #[serde(flatten)]
    summary: RefusedSummary,
    bytes_base64: String,
}

pub fn run(args: RefusedArgs, lang: Lang) -> anyhow::Result<()> {
    let source = Source::open(&args.common, Access::Read)?;
    let utc = args.common.utc;
    match args.action {
        None => {
            let list = source.refused()?;
            if args.format == ListFormat::Json {
                return print_json(&list);
            }
            if list.is_empty() {
                return out::line(lang.t("No refused uploads.", "Không có dữ liệu bị từ chối."));
            }
            let mut t = table([
                "ID".to_owned(),
                format!("{} ({})", lang.t("Received", "Nhận lúc"), time::zone(utc)),
                lang.t("Source", "Nguồn").to_owned(),
                lang.t("Document", "Tài liệu").to_owned(),
                lang.t("Code", "Mã").to_owned(),
                lang.t("Reason", "Lý do").to_owned(),
                lang.t("Bytes", "Byte").to_owned(),
            ]);
            for r in &list {
                t.add_row(vec![
                    r.id.to_string(),
                    time::format(r.received_at, utc),
                    r.source.clone().unwrap_or_else(|| "—".to_owned()),
                    r.document.clone().unwrap_or_else(|| "—".to_owned()),
                    r.code.to_string(),
                    r.reason.clone(),
                    r.bytes_len.to_string(),
                ]);
            }
            print_table(&t)?;
            out::line(format!(
                "{} {} · `thonsync refused show ID`",
                list.len(),
                lang.t("refused upload(s) kept", "dữ liệu bị từ chối đang lưu")
            ))
        }
        Some(RefusedAction::Show { id, out: file }) => {
            let (summary, bytes) = source.refused_one(id)?.ok_or_else(|| {
                not_found(say(
                    format!("no refused upload has id {id}; `thonsync refused` lists them"),
                    format!("không có dữ liệu bị từ chối mã {id}; `thonsync refused` liệt kê chúng"),
                ))
            })?;
            if let Some(path) = &file {
                std::fs::write(path, &bytes).with_context(|| {
                    say(
                        format!("cannot write {}", path.display()),
                        format!("không ghi được {}", path.display()),
                    )
                })?;
            }
            if args.format == ListFormat::Json {
                return print_json(&WithBytes {
                    summary,
                    bytes_base64: base64::engine::general_purpose::STANDARD.encode(&bytes),
                });
            }
            let mut t = out::plain();
            let rows = [
                ("ID", summary.id.to_string()),
                (
                    lang.t("Received", "Nhận lúc"),
                    format!("{} ({})", time::format(summary.received_at, utc), time::zone(utc)),
                ),
                (lang.t("Source", "Nguồn"), summary.source.clone().unwrap_or_else(|| "—".to_owned())),
                (lang.t("Document", "Tài liệu"), summary.document.clone().unwrap_or_else(|| "—".to_owned())),
                (lang.t("Code", "Mã"), summary.code.to_string()),
                (lang.t("Reason", "Lý do"), summary.reason.clone()),
                (lang.t("Bytes", "Byte"), summary.bytes_len.to_string()),
            ];
            for (k, v) in rows {
                t.add_row(vec![k.to_owned(), v]);
            }
            print_table(&t)?;
            out::line(hex_dump(&bytes, 256))?;
            if let Some(path) = file {
                out::line(format!("{} {}", lang.t("Bytes written to", "Đã ghi byte vào"), path.display()))?;
            }
            Ok(())
        }
    }
}

/// The first `limit` bytes as a hex dump, 16 to a line.
fn hex_dump(bytes: &[u8], limit: usize) -> String {
    let mut s = String::new();
    for (i, chunk) in bytes.chunks(16).take(limit.div_ceil(16)).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        let text: String =
            chunk.iter().map(|&b| if b.is_ascii_graphic() { b as char } else { '.' }).collect();
        s.push_str(&format!("{:08x}  {:<47}  {text}\n", i * 16, hex.join(" ")));
    }
    if bytes.len() > limit {
        s.push_str(&format!("… {} more bytes\n", bytes.len() - limit));
    }
    s.trim_end().to_owned()
}
