//! `thonsync rounds list` and `thonsync rounds open NAME`: the survey rounds
//! the server creates documents for. A device can sync a village's document
//! of a round only once the administrator opened that round.

use clap::Subcommand;
use serde::Serialize;
use sync_core::ids::Round;

use super::out::{self, print_json, print_table, table};
use super::source::{Access, Source};
use super::text::{say, Lang};
use super::{usage, Common, ListFormat};

/// `thonsync rounds ...`.
#[derive(Debug, Subcommand)]
pub enum RoundsCommand {
    /// The survey rounds the server creates documents for, with how many documents each holds.
    #[command(after_help = help!(
        "thonsync rounds list",
        "thonsync rounds list --format json --server http://127.0.0.1:7300",
    ))]
    List {
        #[command(flatten)]
        common: Common,
        /// Table for people, JSON for scripts.
        #[arg(long, value_enum, default_value_t)]
        format: ListFormat,
    },
    /// Open a survey round: from now on devices may create and sync its documents
    /// (`village:<place>:<round>`), and `thonsync device init --round` finds it.
    ///
    /// A device naming a round that is not open gets its message refused (`unknown_document`,
    /// the bytes kept as a refused upload) and nothing is created, so a typo or a made-up round
    /// cannot fill the server with empty documents. A new server knows only the default round
    /// (2024-1). Rounds are never closed; a round's stored documents always stay syncable.
    /// Opening is written to the audit log. Give --server for a running server: it takes the
    /// round at once; one opened with --db in the database file is taken at the server's next start.
    #[command(after_help = help!(
        "thonsync rounds open 2025-1 --server http://127.0.0.1:7300",
        "thonsync rounds open 2025-1 --db /var/lib/thonsync/thonsync.sqlite   (server stopped)",
        "thonsync device init --server http://192.168.1.10:7300 --code K7PQ-M3XA-92TB --round 2025-1 --dir ./tablet-07",
    ))]
    Open {
        #[command(flatten)]
        common: Common,
        /// The round's name: a-z, 0-9, - and _ (e.g. 2025-1 for the first survey of 2025).
        name: String,
        /// Text for people, JSON for scripts.
        #[arg(long, value_enum, default_value_t)]
        format: ListFormat,
    },
}

impl RoundsCommand {
    /// The options every subcommand shares.
    pub fn common(&self) -> &Common {
        match self {
            RoundsCommand::List { common, .. } | RoundsCommand::Open { common, .. } => common,
        }
    }
}

#[derive(Serialize)]
struct RoundRow {
    round: String,
    documents: usize,
}

pub fn run(cmd: RoundsCommand, lang: Lang) -> anyhow::Result<()> {
    match cmd {
        RoundsCommand::List { common, format } => list(&common, format, lang),
        RoundsCommand::Open { common, name, format } => open(&common, &name, format, lang),
    }
}

fn list(common: &Common, format: ListFormat, lang: Lang) -> anyhow::Result<()> {
    let source = Source::open(common, Access::Read)?;
    let stored = source.document_ids()?;
    let rows: Vec<RoundRow> = source
        .rounds()?
        .into_iter()
        .map(|round| RoundRow {
            documents: stored.iter().filter(|id| id.round.as_str() == round).count(),
            round,
        })
        .collect();
    if format == ListFormat::Json {
        return print_json(&rows);
    }
    let mut t = table([lang.t("Round", "Đợt điều tra"), lang.t("Documents stored", "Tài liệu đã lưu")]);
    for r in &rows {
        t.add_row(vec![r.round.clone(), r.documents.to_string()]);
    }
    print_table(&t)?;
    out::line(lang.t(
        "Devices can create documents only for these rounds; `thonsync rounds open NAME` opens another.",
        "Thiết bị chỉ tạo được tài liệu cho các đợt này; mở đợt khác bằng `thonsync rounds open NAME`.",
    ))
}

fn open(common: &Common, name: &str, format: ListFormat, lang: Lang) -> anyhow::Result<()> {
    let round = Round::new(name).map_err(|e| {
        usage(say(
            format!("{e}; a round is named like 2025-1 (letters a-z, digits, - and _)"),
            format!(
                "tên đợt điều tra {name:?} không hợp lệ; tên đợt có dạng 2025-1 (chữ a-z, chữ số, - và _)"
            ),
        ))
    })?;
    let mut source = Source::open(common, Access::Write)?;
    let opened = source.open_round(&round)?;
    if format == ListFormat::Json {
        return print_json(&opened);
    }
    let what = if opened.opened {
        format!(
            "{} {round} {}",
            lang.t("Survey round", "Đợt điều tra"),
            lang.t(
                "opened: devices may now create its documents.",
                "đã mở: thiết bị có thể tạo tài liệu của đợt này."
            )
        )
    } else {
        format!(
            "{} {round} {}",
            lang.t("Survey round", "Đợt điều tra"),
            lang.t("was already open; nothing changed.", "đã mở từ trước; không có gì thay đổi.")
        )
    };
    out::line(what)?;
    out::line(format!(
        "{}: {} → {}",
        lang.t("Open rounds", "Các đợt đang mở"),
        opened.rounds.join(", "),
        source.describe()
    ))?;
    if opened.opened && matches!(source, Source::Db { .. }) {
        out::line(lang.t(
            "A server running on this database takes the round at its next start; open it with --server to use it at once.",
            "Máy chủ đang chạy trên cơ sở dữ liệu này sẽ nhận đợt mới khi khởi động lại; dùng --server để áp dụng ngay.",
        ))?;
    }
    Ok(())
}
