//! `thonsync registry load FILE.csv` and `thonsync registry show`: the places
//! (province → district → commune → village) the survey is organised by.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use sync_core::registry::{Place, PlaceKind, Registry, RegistryError};

use super::out::{self, print_json, print_table, table};
use super::source::{Access, Source};
use super::text::{say, Lang};
use super::{not_found, Common, Format};

/// `thonsync registry ...`.
#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Replace the registry with the places in a CSV file (id,kind,name,parent,expected_households).
    #[command(after_help = concat!(
        "Examples:\n",
        "  thonsync registry load places.csv --db thonsync.sqlite\n",
        "  thonsync registry load places.csv --server http://127.0.0.1:7300\n\n",
        "A file that drops places holding survey data is refused, naming them, unless --force;\n",
        "every load and refusal is written to the audit log (`thonsync audit`).\n\n",
        "The file starts with the header id,kind,name,parent,expected_households; kind is province,\n",
        "district, commune or village; `thonsync registry show --format csv` writes one to start from.\n\n",
        "Exit codes: 0 ok, 1 error, 2 wrong usage, 3 not found, 4 database or server unreachable."
    ))]
    Load(LoadArgs),
    /// The places, the stored registry or else the bundled Bắc Kạn sample.
    #[command(after_help = concat!(
        "Examples:\n",
        "  thonsync registry show\n",
        "  thonsync registry show --format csv > places.csv\n\n",
        "Exit codes: 0 ok, 1 error, 2 wrong usage, 3 not found, 4 database or server unreachable."
    ))]
    Show(ShowArgs),
}

impl RegistryCommand {
    /// The shared options.
    pub fn common(&self) -> &Common {
        match self {
            RegistryCommand::Load(a) => &a.common,
            RegistryCommand::Show(a) => &a.common,
        }
    }
}

/// `thonsync registry load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    #[command(flatten)]
    pub common: Common,
    /// The CSV file.
    pub file: PathBuf,
    /// Load it even if it drops places that hold survey data (their data stays stored but is
    /// left out of `status` and `report`).
    #[arg(long)]
    pub force: bool,
}

/// `thonsync registry show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub common: Common,
    /// Table, JSON, or CSV (the format `registry load` reads).
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// The survey round whose documents' automerge-repo URLs JSON lists (`url`).
    #[arg(long, default_value = sync_core::ids::DEFAULT_ROUND)]
    pub round: String,
}

pub fn run(cmd: RegistryCommand, lang: Lang) -> anyhow::Result<()> {
    match cmd {
        RegistryCommand::Load(a) => load(a, lang),
        RegistryCommand::Show(a) => show(a, lang),
    }
}

fn load(args: LoadArgs, lang: Lang) -> anyhow::Result<()> {
    let csv = match std::fs::read_to_string(&args.file) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(not_found(say(
                format!("no file {}", args.file.display()),
                format!("không có tệp {}", args.file.display()),
            )))
        }
        Err(e) => {
            return Err(anyhow::anyhow!(say(
                format!("reading {}: {e}", args.file.display()),
                format!("không đọc được tệp {} ({e})", args.file.display()),
            )))
        }
    };
    let registry = Registry::from_csv(csv.as_bytes()).map_err(|e| {
        let (en, vi) = registry_error(&e);
        anyhow::anyhow!(say(
            format!(
                "{} is not a valid registry ({en}); fix it and load it again \
                 (`thonsync registry show --format csv` shows the format)",
                args.file.display()
            ),
            format!(
                "{} không phải danh mục địa bàn hợp lệ ({vi}); hãy sửa rồi nạp lại \
                 (`thonsync registry show --format csv` cho thấy định dạng)",
                args.file.display()
            ),
        ))
    })?;
    let mut source = Source::open(&args.common, Access::Write)?;
    let (n, dropped) = source.put_registry(&csv, &registry, args.force)?;
    let count = |k| registry.of_kind(k).count();
    out::line(format!(
        "{n} {} ({} {}, {} {}, {} {}, {} {}) → {}",
        lang.t("places loaded", "địa bàn đã nạp"),
        count(PlaceKind::Province),
        lang.t("provinces", "tỉnh"),
        count(PlaceKind::District),
        lang.t("districts", "huyện"),
        count(PlaceKind::Commune),
        lang.t("communes", "xã"),
        count(PlaceKind::Village),
        lang.t("villages", "thôn"),
        source.describe()
    ))?;
    if !dropped.is_empty() {
        out::line(format!(
            "{} {}",
            lang.t(
                "Dropped with --force, their survey data kept but left out of status and report:",
                "Đã bỏ bằng --force, dữ liệu điều tra vẫn lưu nhưng không tính trong status và report:"
            ),
            dropped.join(", ")
        ))?;
    }
    Ok(())
}

/// Why a registry file was refused, in English and Vietnamese. The
/// registry's reasons about a place are translated; a reason from the CSV
/// reader (a malformed row) is shown as it reads.
fn registry_error(e: &RegistryError) -> (String, String) {
    match e {
        RegistryError::Csv { line, reason } => {
            (format!("line {line}: {reason}"), format!("dòng {line}: {reason}"))
        }
        RegistryError::Place { id, reason } => {
            (format!("place {id:?}: {reason}"), format!("địa bàn {id:?}: {}", place_reason_vi(reason)))
        }
    }
}

/// A reason of [`RegistryError::Place`] in Vietnamese, when it is one the
/// registry gives (`name is empty`, `parent "x" is not in the registry`, ...).
pub(super) fn place_reason_vi(reason: &str) -> String {
    let kind_vi = |k: &str| {
        match k {
            "Province" => "tỉnh",
            "District" => "huyện",
            "Commune" => "xã",
            "Village" => "thôn",
            other => other,
        }
        .to_owned()
    };
    match reason {
        "name is empty" => return "tên để trống".to_owned(),
        "listed twice" => return "có hai lần trong tệp".to_owned(),
        "a province has no parent" => return "tỉnh không có cấp trên".to_owned(),
        _ => {}
    }
    if let Some(k) = reason.strip_prefix("needs a parent ") {
        return format!("cần một cấp trên là {}", kind_vi(k));
    }
    if let Some(rest) = reason.strip_prefix("parent ") {
        if let Some(parent) = rest.strip_suffix(" is not in the registry") {
            return format!("cấp trên {parent} không có trong danh mục");
        }
        if let Some((parent, kinds)) = rest.split_once(" is a ") {
            if let Some((is, expected)) = kinds.split_once(", expected a ") {
                return format!("cấp trên {parent} là {}, cần là {}", kind_vi(is), kind_vi(expected));
            }
        }
    }
    reason.to_owned()
}

/// Why a registry that drops places holding survey data is refused, in
/// Vietnamese (`sync_core::registry::DropsData` says it in English).
pub(super) fn drops_data_vi(places: &[String]) -> String {
    format!(
        "danh mục mới bỏ {} địa bàn đang có dữ liệu điều tra: {}; dữ liệu của chúng sẽ không được tính \
         trong mọi số liệu (`thonsync status`, `thonsync report`). Hãy thêm lại chúng vào tệp, hoặc vẫn \
         nạp bằng `thonsync registry load TỆP --force`",
        places.len(),
        places.join(", ")
    )
}

/// Places in tree order: each place followed by the places under it.
fn tree(registry: &Registry) -> Vec<&Place> {
    fn walk<'a>(registry: &'a Registry, place: &'a Place, out: &mut Vec<&'a Place>) {
        out.push(place);
        for child in registry.children(&place.id) {
            walk(registry, child, out);
        }
    }
    let mut out = Vec::new();
    for p in registry.of_kind(PlaceKind::Province) {
        walk(registry, p, &mut out);
    }
    out
}

fn show(args: ShowArgs, lang: Lang) -> anyhow::Result<()> {
    let source = Source::open(&args.common, Access::Read)?;
    let stored = !source.places()?.is_empty();
    let registry = source.registry()?;
    match args.format {
        Format::Json => {
            // Each village and commune with its document's automerge-repo URL in `--round`.
            let round = super::out::round(&args.round)?;
            let places: Vec<serde_json::Value> = tree(&registry)
                .into_iter()
                .map(|p| {
                    let mut value = serde_json::to_value(p)?;
                    let kind = match p.kind {
                        PlaceKind::Village => Some(sync_core::ids::DocumentKind::Village),
                        PlaceKind::Commune => Some(sync_core::ids::DocumentKind::Commune),
                        _ => None,
                    };
                    let id = kind.and_then(|kind| {
                        let place = sync_core::ids::PlaceId::new(p.id.as_str()).ok()?;
                        Some(sync_core::ids::DocumentId { kind, place, round: round.clone() })
                    });
                    if let (Some(id), Some(map)) = (id, value.as_object_mut()) {
                        map.insert("url".into(), sync_core::repo_url::repo_url(&id).into());
                    }
                    Ok(value)
                })
                .collect::<anyhow::Result<_>>()?;
            print_json(&places)
        }
        Format::Csv => {
            let mut stdout = std::io::stdout().lock();
            registry.to_csv(&mut stdout)?;
            Ok(())
        }
        Format::Table => {
            let mut t = table([
                lang.t("Id", "Mã"),
                lang.t("Kind", "Cấp"),
                lang.t("Name", "Tên"),
                lang.t("Parent", "Trực thuộc"),
                lang.t("Expected households", "Số hộ dự kiến"),
            ]);
            for p in tree(&registry) {
                let indent = match p.kind {
                    PlaceKind::Province => "",
                    PlaceKind::District => "  ",
                    PlaceKind::Commune => "    ",
                    PlaceKind::Village => "      ",
                };
                let kind = match p.kind {
                    PlaceKind::Province => lang.t("province", "tỉnh"),
                    PlaceKind::District => lang.t("district", "huyện"),
                    PlaceKind::Commune => lang.t("commune", "xã"),
                    PlaceKind::Village => lang.t("village", "thôn"),
                };
                t.add_row(vec![
                    format!("{indent}{}", p.id),
                    kind.to_owned(),
                    p.name.clone(),
                    p.parent.clone().unwrap_or_default(),
                    p.expected_households.map(|e| e.to_string()).unwrap_or_default(),
                ]);
            }
            print_table(&t)?;
            if !stored {
                out::line(lang.t(
                    "No registry loaded: this is the bundled Bắc Kạn sample. Load a real one with `thonsync registry load FILE.csv`.",
                    "Chưa nạp danh mục địa bàn: đây là mẫu Bắc Kạn đi kèm. Nạp danh mục thật bằng `thonsync registry load FILE.csv`.",
                ))?;
            }
            Ok(())
        }
    }
}
