//! `thonsync demo`: the whole product in one command. A server runs on a
//! temporary database, simulated surveyors (field-device replicas, two or
//! more per pilot commune) record households and village facts offline with
//! realistic clashes, sync in a seeded random order, and the province report
//! and the open conflicts are printed through the same code as `thonsync
//! report` and `thonsync conflicts`, read from the demo server.
//!
//! The fieldwork is dated: each village is surveyed on its own day from
//! 4 March 2024 (the devices' clocks say so), so `show --at` and `history`
//! have a past to show. One surveyor mistypes a household's adults (more
//! than its members: a consistency breach for `thonsync issues`), and one
//! tablet's upload is cut off when the signal drops (kept by the server as a
//! refused upload for `thonsync refused`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use sync_core::ids::{HouseholdId, DEFAULT_ROUND};
use sync_core::registry::{PlaceKind, Registry};
use sync_core::survey::{Edit, FieldValue, Target};
use sync_core::validate::{conflicts as find_conflicts, Conflict};

use super::out;
use super::quality::{self, ConflictsArgs};
use super::report::{self, ReportArgs};
use super::source::{Access, Source};
use super::text::{say, Lang};
use super::{usage, Common, Format, ListFormat};
use crate::device::{Device, SyncOptions};

/// The seed used when none is given, so two plain runs print the same figures.
pub const DEFAULT_SEED: u64 = 2024;

/// The server database's file name inside the demo directory.
const DB_FILE: &str = "thonsync.sqlite";
/// The folder of the device directories inside the demo directory.
const DEVICES_DIR: &str = "devices";
/// 2024-03-04 08:00 Vietnam time: the first morning of fieldwork, ms since 1970.
const FIELDWORK_START_MS: i64 = 1_709_514_000_000;

/// `thonsync demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Seed of the simulated fieldwork and of the sync order; the same seed gives the same report.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,
    /// Households each surveyed village records.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(2..=200))]
    pub households: u32,
    /// Keep the server database and the device directories in DIR (created; must not hold a demo yet).
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
    /// Language of labels and messages (default: from LANG / LC_ALL).
    #[arg(long, value_enum)]
    pub lang: Option<Lang>,
    /// Show times in UTC instead of Vietnam time (UTC+7).
    #[arg(long)]
    pub utc: bool,
    /// Table for people; JSON (seed, surveyors, what they recorded, report, conflicts) for scripts.
    #[arg(long, value_enum, default_value_t)]
    pub format: ListFormat,
}

/// How a commune's households tend to answer: shares between 0 and 1.
#[derive(Clone, Copy, Debug)]
struct Profile {
    fibre: f64,
    smartphone: f64,
    account: f64,
    e_health: f64,
    shopping: f64,
    public_service: f64,
    business: f64,
    cashless: f64,
    digital_team: f64,
    cultural_house_internet: f64,
    /// Most security cameras in one village.
    cameras: u32,
    /// Largest household.
    members: i64,
}

/// Sông Cầu is a ward of Bắc Kạn city; the other pilot communes are rural
/// mountain communes, Như Cố the furthest along.
fn profile(commune: &str) -> Profile {
    let rural = Profile {
        fibre: 0.6,
        smartphone: 0.8,
        account: 0.6,
        e_health: 0.35,
        shopping: 0.45,
        public_service: 0.5,
        business: 0.15,
        cashless: 0.5,
        digital_team: 0.85,
        cultural_house_internet: 0.7,
        cameras: 1,
        members: 7,
    };
    match commune {
        "song-cau" => Profile {
            fibre: 0.9,
            smartphone: 0.95,
            account: 0.85,
            e_health: 0.55,
            shopping: 0.75,
            public_service: 0.8,
            business: 0.35,
            cashless: 0.8,
            digital_team: 1.0,
            cultural_house_internet: 1.0,
            cameras: 3,
            members: 5,
        },
        "nhu-co" => Profile {
            fibre: 0.7,
            smartphone: 0.9,
            account: 0.7,
            e_health: 0.4,
            shopping: 0.7,
            digital_team: 1.0,
            ..rural
        },
        "giao-hieu" | "duc-van" => Profile { fibre: 0.45, smartphone: 0.7, e_health: 0.25, ..rural },
        _ => rural,
    }
}

/// Surveyors' names, given out in order.
const SURVEYORS: &[&str] = &[
    "Hoàng Thị Mai",
    "Nông Văn Sơn",
    "Triệu Thị Hoa",
    "Lục Văn Thắng",
    "Ma Thị Lan",
    "Đàm Văn Hùng",
    "Hà Thị Thu",
    "Lý Văn Phúc",
    "Bế Thị Hằng",
    "Lường Văn Tuấn",
    "Dương Thị Nga",
    "Nông Thị Huyền",
    "Hoàng Văn Dũng",
    "Triệu Văn Kiên",
    "Lục Thị Nhung",
    "Ma Văn Toàn",
    "Đàm Thị Yến",
    "Hà Văn Quân",
    "Lý Thị Vân",
    "Bế Văn Long",
];
const SURNAMES: &[&str] = &["Hoàng", "Nông", "Triệu", "Lục", "Ma", "Đàm", "Hà", "Lý", "Bế", "Lường", "Dương"];
const GIVEN: &[&str] = &[
    "Văn Bình",
    "Thị Chuyên",
    "Văn Đức",
    "Thị Hiền",
    "Văn Khánh",
    "Thị Liên",
    "Văn Minh",
    "Thị Ngọc",
    "Văn Pháo",
    "Thị Quyên",
    "Văn Sáng",
    "Thị Thơm",
    "Văn Vượng",
    "Thị Xuân",
];

/// One simulated surveyor with a tablet.
struct Surveyor {
    device: Device,
    name: String,
    commune: String,
    commune_name: String,
}

/// A household that two surveyors recorded with different `members`.
#[derive(Debug, Serialize)]
struct Clash {
    document: String,
    village: String,
    household: String,
    field: &'static str,
    /// The first surveyor's value, then the second's.
    values: [i64; 2],
    /// Who wrote each value.
    surveyors: [String; 2],
}

/// What the surveyors entered, to read the report against.
#[derive(Debug, Default, Serialize)]
struct Recorded {
    /// Households recorded (a household two surveyors started counts once).
    households: u64,
    /// Security cameras added per commune, all devices together.
    security_cameras: BTreeMap<String, i64>,
    /// Villages whose cameras were counted by more than one device.
    villages_cameras_from_several_devices: u64,
    /// QR payment codes added per commune.
    qr_codes_issued: BTreeMap<String, i64>,
    /// The households with clashing values.
    clashes: Vec<Clash>,
    /// The household whose adults were mistyped (more adults than members).
    breach: Option<Breach>,
    /// Uploads the server refused and kept (the cut-off one).
    refused_uploads: u64,
}

/// A household whose answers break a consistency rule.
#[derive(Debug, Serialize)]
struct Breach {
    document: String,
    village: String,
    household: String,
    rule: &'static str,
}

/// The commune whose surveyor mistypes a household's adults.
const BREACH_COMMUNE: &str = "song-cau";

#[derive(Serialize)]
struct SurveyorOut<'a> {
    name: &'a str,
    commune: &'a str,
    device: String,
    directory: Option<String>,
}

#[derive(Serialize)]
struct DemoOut<'a> {
    seed: u64,
    households_per_village: u32,
    round: &'a str,
    surveyors: Vec<SurveyorOut<'a>>,
    recorded: &'a Recorded,
    report: sync_core::report::Report,
    conflicts: Vec<Conflict>,
    kept: Option<String>,
}

/// Where the demo keeps its database and devices.
enum Workdir {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl Workdir {
    fn path(&self) -> &Path {
        match self {
            Workdir::Temp(t) => t.path(),
            Workdir::Kept(p) => p,
        }
    }
}

fn workdir(keep: Option<&Path>) -> anyhow::Result<Workdir> {
    let Some(dir) = keep else {
        let tmp = tempfile::Builder::new()
            .prefix("thonsync-demo-")
            .tempdir()
            .context(say("temporary directory", "thư mục tạm"))?;
        return Ok(Workdir::Temp(tmp));
    };
    for taken in [DB_FILE, DEVICES_DIR] {
        if dir.join(taken).exists() {
            return Err(usage(say(
                format!("{} already holds {taken}; give --keep an empty or new directory", dir.display()),
                format!("{} đã chứa {taken}; hãy cho --keep một thư mục trống hoặc mới", dir.display()),
            )));
        }
    }
    std::fs::create_dir_all(dir)
        .with_context(|| say(format!("creating {}", dir.display()), format!("tạo {}", dir.display())))?;
    Ok(Workdir::Kept(dir.to_owned()))
}

fn progress(text: impl std::fmt::Display) {
    eprintln!("{text}");
}

fn count(rng: &mut StdRng, n: i64, p: f64) -> i64 {
    (0..n).filter(|_| rng.random_bool(p)).count() as i64
}

fn int(n: i64) -> FieldValue {
    FieldValue::Int(n)
}

/// One household's answers, as the edits of one visit.
fn household_edits(
    rng: &mut StdRng,
    p: &Profile,
    household: &HouseholdId,
    surveyor: &str,
    at: i64,
    commune: &str,
    recorded: &mut Recorded,
) -> (Vec<Edit>, i64) {
    let t = || Target::Household(household.clone());
    let members = rng.random_range(2..=p.members);
    let fifteen_plus = members - rng.random_range(0..=(members - 1).min(3));
    let adults = fifteen_plus - rng.random_range(0..=(fifteen_plus - 1).min(1));
    let accounts = count(rng, adults, p.public_service);
    let business = rng.random_bool(p.business);
    let head = format!(
        "{} {}",
        SURNAMES[rng.random_range(0..SURNAMES.len())],
        GIVEN[rng.random_range(0..GIVEN.len())]
    );
    let mut edits = vec![
        Edit::set(t(), "head_name", FieldValue::Text(head)),
        Edit::set(t(), "members", int(members)),
        Edit::set(t(), "members_15_plus", int(fifteen_plus)),
        Edit::set(t(), "adults", int(adults)),
        Edit::set(t(), "fibre_broadband", FieldValue::Bool(rng.random_bool(p.fibre))),
        Edit::set(t(), "adults_with_smartphone", int(count(rng, adults, p.smartphone))),
        Edit::set(t(), "members_15_plus_with_account", int(count(rng, fifteen_plus, p.account))),
        Edit::set(t(), "members_with_e_health_record", int(count(rng, members, p.e_health))),
        Edit::set(t(), "online_shoppers", int(count(rng, adults, p.shopping))),
        Edit::set(t(), "public_service_accounts", int(accounts)),
        Edit::set(t(), "public_service_users", int(count(rng, accounts, 0.7))),
        Edit::set(t(), "business_household", FieldValue::Bool(business)),
        Edit::set(t(), "surveyed_by", FieldValue::Text(surveyor.to_owned())),
        Edit::set(t(), "surveyed_at", int(at)),
    ];
    if business {
        let cashless = rng.random_bool(p.cashless);
        edits.push(Edit::set(t(), "cashless_payment", FieldValue::Bool(cashless)));
        if cashless {
            let codes = rng.random_range(1..=2);
            edits.push(Edit::increment(t(), "qr_codes_issued", codes));
            *recorded.qr_codes_issued.entry(commune.to_owned()).or_default() += codes;
        }
    }
    recorded.households += 1;
    (edits, members)
}

/// Every surveyor records offline: households split between two surveyors
/// per village, cameras counted by both, one household per commune recorded
/// by both with different `members`.
///
/// The surveyor who revisits the clashing household does so after recording
/// households of their own in that village, so their value is the later
/// operation in the document and the value every replica shows does not
/// depend on the randomly minted device ids: the same seed, the same report.
fn record_fieldwork(
    rng: &mut StdRng,
    registry: &Registry,
    surveyors: &mut [Surveyor],
    households: u32,
    recorded: &mut Recorded,
) -> anyhow::Result<()> {
    let n = households as usize;
    let communes: Vec<String> = registry.of_kind(PlaceKind::Commune).map(|c| c.id.clone()).collect();
    for commune in &communes {
        let p = profile(commune);
        let team: Vec<usize> =
            surveyors.iter().enumerate().filter(|(_, s)| &s.commune == commune).map(|(i, _)| i).collect();
        let villages: Vec<String> = registry.children(commune).map(|v| v.id.clone()).collect();
        if team.len() < 2 || villages.is_empty() {
            continue;
        }
        let clash_village = rng.random_range(0..villages.len());
        for (vi, village) in villages.iter().enumerate() {
            let lead = team[vi % team.len()];
            let other = team[(vi + 1) % team.len()];
            let doc = surveyors[lead].device.document_for(village)?;
            let day = FIELDWORK_START_MS + (vi as i64) * 86_400_000;
            let hh = |i: usize| HouseholdId::new(format!("hh-{:02}", i + 1));
            let half = n.div_ceil(2);
            // The lead surveyor: the first half of the households, then the village facts.
            let mut clash_members = 0;
            for i in 0..half {
                let at = day + (i as i64) * 1_200_000;
                let name = surveyors[lead].name.clone();
                let (edits, members) = household_edits(rng, &p, &hh(i)?, &name, at, commune, recorded);
                if i == 0 {
                    clash_members = members;
                }
                surveyors[lead].device.record_at(&doc, &edits, at)?;
            }
            let has_team = rng.random_bool(p.digital_team);
            let team_members = if has_team { rng.random_range(3..=6) } else { 0 };
            let facts = vec![
                Edit::set(Target::Facts, "digital_team", FieldValue::Bool(has_team)),
                Edit::set(Target::Facts, "digital_team_members", int(team_members)),
                Edit::set(
                    Target::Facts,
                    "cultural_house_internet",
                    FieldValue::Bool(rng.random_bool(p.cultural_house_internet)),
                ),
            ];
            let facts_at = day + (n as i64) * 1_200_000;
            surveyors[lead].device.record_at(&doc, &facts, facts_at)?;
            // Cameras: each surveyor counts the ones on their side of the village.
            let cameras = i64::from(rng.random_range(0..=p.cameras));
            let by_lead = rng.random_range(0..=cameras);
            let by_other = cameras - by_lead;
            for (who, amount) in [(lead, by_lead), (other, by_other)] {
                if amount > 0 {
                    surveyors[who].device.record_at(
                        &doc,
                        &[Edit::increment(Target::Facts, "security_cameras", amount)],
                        facts_at + 60_000,
                    )?;
                }
            }
            *recorded.security_cameras.entry(commune.clone()).or_default() += cameras;
            recorded.villages_cameras_from_several_devices += u64::from(by_lead > 0 && by_other > 0);
            // The second surveyor: the other half.
            for i in half..n {
                let at = day + (i as i64) * 1_200_000 + 600_000;
                let name = surveyors[other].name.clone();
                let (mut edits, members) = household_edits(rng, &p, &hh(i)?, &name, at, commune, recorded);
                // Sông Cầu's first village: the second surveyor's first household
                // gets one adult more than its members, a typing slip.
                if i == half && vi == 0 && commune == BREACH_COMMUNE {
                    edits.push(Edit::set(Target::Household(hh(i)?), "adults", int(members + 1)));
                    recorded.breach = Some(Breach {
                        document: doc.to_string(),
                        village: village.clone(),
                        household: hh(i)?.to_string(),
                        rule: "adults <= members",
                    });
                }
                surveyors[other].device.record_at(&doc, &edits, at)?;
            }
            // A household the lead surveyor recorded, started again by the second,
            // who counts one more member (a relative home for the harvest).
            if vi == clash_village {
                let household = hh(0)?;
                let theirs = clash_members + 1;
                surveyors[other].device.record_at(
                    &doc,
                    &[Edit::set(Target::Household(household.clone()), "members", int(theirs))],
                    day + (n as i64 + 1) * 1_200_000,
                )?;
                recorded.clashes.push(Clash {
                    document: doc.to_string(),
                    village: village.clone(),
                    household: household.to_string(),
                    field: "members",
                    values: [clash_members, theirs],
                    surveyors: [surveyors[lead].name.clone(), surveyors[other].name.clone()],
                });
            }
        }
        // The commune's own facts, from the first surveyor.
        let first = team[0];
        let doc = surveyors[first].device.document_for(commune)?;
        let at = FIELDWORK_START_MS + (villages.len() as i64) * 86_400_000;
        surveyors[first].device.record_at(
            &doc,
            &[
                Edit::set(Target::Facts, "ocop_products_online", int(rng.random_range(0..=4))),
                Edit::set(Target::Facts, "cooperatives_production_diary", int(rng.random_range(0..=3))),
            ],
            at,
        )?;
    }
    Ok(())
}

/// The last surveyor's tablet loses signal halfway through an upload: the
/// server receives the first half of a sync request, refuses it and keeps
/// the bytes aside (`thonsync refused`).
fn cut_off_upload(surveyors: &[Surveyor], recorded: &mut Recorded, lang: Lang) -> anyhow::Result<()> {
    let Some(s) = surveyors.last() else { return Ok(()) };
    let whole = format!(
        r#"{{"device":"{}","exchange":"cut-off","round":0,"documents":[{{"document":"village:{}-01:{}"}}]}}"#,
        s.device.config().device,
        s.commune,
        DEFAULT_ROUND
    );
    let half = &whole.as_bytes()[..whole.len() / 2];
    let (status, _) = s
        .device
        .client()
        .post_sync_bytes(&crate::device::wire::gzip(half))
        .map_err(|e| anyhow::anyhow!("{}: {e}", s.name))?;
    if status == 400 {
        recorded.refused_uploads += 1;
        progress(format!(
            "  {} · {}: {}",
            s.name,
            s.commune_name,
            lang.t(
                "upload cut off by a lost signal; the server kept it aside",
                "tải lên bị ngắt do mất sóng; máy chủ đã giữ lại riêng"
            ),
        ));
    } else {
        tracing::warn!(status, "the server did not refuse a cut-off upload");
    }
    Ok(())
}

fn sync_options() -> SyncOptions {
    SyncOptions { attempts: 3, first_backoff: Duration::from_millis(100), ..SyncOptions::default() }
}

/// Every device syncs once, in the seeded order.
fn sync_all(
    rng: &mut StdRng,
    surveyors: &mut [Surveyor],
    lang: Lang,
    pass: &'static str,
) -> anyhow::Result<()> {
    let mut order: Vec<usize> = (0..surveyors.len()).collect();
    order.shuffle(rng);
    let total = order.len();
    for (step, i) in order.into_iter().enumerate() {
        let s = &mut surveyors[i];
        let r = s
            .device
            .sync(&sync_options())
            .with_context(|| say(format!("{} syncs", s.name), format!("{} đồng bộ", s.name)))?;
        progress(format!(
            "  {pass} [{:>2}/{total}] {} · {}: {} {}, {} {}",
            step + 1,
            s.name,
            s.commune_name,
            r.accepted_by_server,
            lang.t("change(s) accepted", "thay đổi được nhận"),
            r.received_changes,
            lang.t("received", "nhận về"),
        ));
        if !r.refused.is_empty() {
            tracing::warn!(surveyor = %s.name, refused = ?r.refused, "the server refused a demo upload");
        }
    }
    Ok(())
}

pub fn run(args: DemoArgs, lang: Lang) -> anyhow::Result<()> {
    let started = Instant::now();
    let work = workdir(args.keep.as_deref())?;
    let db = work.path().join(DB_FILE);
    // The demo's administrator: a token written straight into the new database.
    let token = {
        let mut store = sync_core::store::SqliteStore::open(&db)
            .context(say("creating the demo database", "tạo cơ sở dữ liệu demo"))?;
        sync_core::devices::create_admin_token(&mut store, "demo", 0, rand::random())
            .context(say("creating the demo's admin token", "tạo mã truy cập quản trị của demo"))?
    };
    let handle = server::start(server::Config::new(&db, "127.0.0.1:0".parse().expect("an address")))
        .context(say("starting the demo server", "khởi động máy chủ demo"))?;
    let url = handle.url();
    tracing::info!(%url, db = %db.display(), "demo server started");
    progress(format!(
        "{} {} · seed {} · {}",
        lang.t("Thôn Sync demo: server on", "Thôn Sync demo: máy chủ tại"),
        url,
        args.seed,
        lang.t("same seed, same report (--seed N)", "cùng seed, cùng báo cáo (--seed N)")
    ));
    let common = Common {
        db: db.clone(),
        server: Some(url.clone()),
        token: Some(token),
        lang: Some(lang),
        utc: args.utc,
    };
    let mut source = Source::open(&common, Access::Read)?;
    let registry = source.registry()?;
    let mut rng = StdRng::seed_from_u64(args.seed);

    // Enrol: two surveyors per commune, three where there are more than ten villages.
    let mut surveyors = Vec::new();
    let mut names = SURVEYORS.iter().cycle();
    for commune in registry.of_kind(PlaceKind::Commune) {
        let team = if registry.children(&commune.id).count() > 10 { 3 } else { 2 };
        for n in 1..=team {
            let name = (*names.next().expect("cycles")).to_owned();
            let dir = work.path().join(DEVICES_DIR).join(format!("{}-{n}", commune.id));
            let added = source.add_device(&name, std::slice::from_ref(&commune.id))?;
            let mut device = Device::init(&dir, &url, &added.code, None, None)?;
            device.pull(&sync_options()).with_context(|| {
                say(format!("{name} pulls {}", commune.id), format!("{name} tải về {}", commune.id))
            })?;
            surveyors.push(Surveyor {
                device,
                name,
                commune: commune.id.clone(),
                commune_name: commune.name.clone(),
            });
        }
    }
    progress(format!(
        "{} {}",
        surveyors.len(),
        lang.t(
            "surveyors enrolled for the 8 pilot communes; recording offline…",
            "điều tra viên đã đăng ký cho 8 xã thí điểm; đang ghi ngoại tuyến…"
        ),
    ));

    let mut recorded = Recorded::default();
    record_fieldwork(&mut rng, &registry, &mut surveyors, args.households, &mut recorded)?;
    progress(format!(
        "{} {}, {} {}; {}",
        recorded.households,
        lang.t("households", "hộ"),
        recorded.clashes.len(),
        lang.t("clashing", "xung đột"),
        lang.t("back in signal, syncing in random order:", "có sóng, đồng bộ theo thứ tự ngẫu nhiên:")
    ));
    sync_all(&mut rng, &mut surveyors, lang, lang.t("upload ", "tải lên"))?;
    progress(lang.t(
        "again, so every tablet receives the others' work:",
        "lần nữa, để mỗi máy nhận dữ liệu của người khác:",
    ));
    sync_all(&mut rng, &mut surveyors, lang, lang.t("receive", "nhận về"))?;
    cut_off_upload(&surveyors, &mut recorded, lang)?;
    progress(format!(
        "{} {} s",
        lang.t("fieldwork simulated and synced in", "đã mô phỏng và đồng bộ trong"),
        out::decimal(started.elapsed().as_secs_f64(), 1)
    ));

    let kept = args.keep.as_ref().map(|_| work.path().display().to_string());
    match args.format {
        ListFormat::Json => {
            let place =
                registry.of_kind(PlaceKind::Province).next().map(|p| p.id.clone()).ok_or_else(|| {
                    anyhow::anyhow!(say("the demo registry has no province", "danh mục demo không có tỉnh"))
                })?;
            let report = report::build(&source, &registry, &place, DEFAULT_ROUND)?;
            let round = out::round(DEFAULT_ROUND)?;
            let docs = out::documents(&source, &registry, None, &round)?;
            let conflicts: Vec<Conflict> = docs.iter().flat_map(find_conflicts).collect();
            let surveyors_out = surveyors
                .iter()
                .map(|s| SurveyorOut {
                    name: &s.name,
                    commune: &s.commune,
                    device: s.device.config().device.to_string(),
                    directory: kept.as_ref().map(|_| s.device.dir().display().to_string()),
                })
                .collect();
            out::print_json(&DemoOut {
                seed: args.seed,
                households_per_village: args.households,
                round: DEFAULT_ROUND,
                surveyors: surveyors_out,
                recorded: &recorded,
                report,
                conflicts,
                kept: kept.clone(),
            })?;
        }
        ListFormat::Table => {
            out::line(format!(
                "Thôn Sync demo · seed {} · {} {} · {} {}",
                args.seed,
                surveyors.len(),
                lang.t("surveyors", "điều tra viên"),
                args.households,
                lang.t("households per village", "hộ mỗi thôn"),
            ))?;
            out::line("")?;
            report::run(
                ReportArgs {
                    common: common.clone(),
                    commune: None,
                    district: None,
                    province: None,
                    round: DEFAULT_ROUND.to_owned(),
                    format: Format::Table,
                },
                lang,
            )?;
            out::line("")?;
            quality::conflicts(
                ConflictsArgs {
                    common,
                    commune: None,
                    round: DEFAULT_ROUND.to_owned(),
                    format: ListFormat::Table,
                },
                lang,
            )?;
        }
    }

    drop(source);
    let devices: Vec<PathBuf> = surveyors.iter().map(|s| s.device.dir().to_owned()).collect();
    drop(surveyors);
    handle.stop().context(say("stopping the demo server", "dừng máy chủ demo"))?;
    tracing::info!("demo server stopped");
    if let Workdir::Kept(dir) = &work {
        let db = dir.join(DB_FILE);
        progress(format!("\n{} {}", lang.t("Kept in", "Đã giữ lại trong"), dir.display()));
        progress(format!("  thonsync status --db {}", db.display()));
        progress(format!("  thonsync conflicts --db {}", db.display()));
        if let Some(c) = recorded.clashes.first() {
            progress(format!(
                "  thonsync history {} --household {} --db {}",
                c.village,
                c.household,
                db.display()
            ));
        }
        if let Some(b) = &recorded.breach {
            progress(format!("  thonsync issues --commune {BREACH_COMMUNE} --db {}", db.display()));
            progress(format!("  thonsync show {} --at 2024-03-04 --db {}", b.village, db.display()));
        }
        progress(format!("  thonsync refused --db {}", db.display()));
        if let Some(device) = devices.first() {
            progress(format!("  thonsync device status --dir {}", device.display()));
        }
    }
    Ok(())
}
