//! A generated server database for the administrator's tests: simulated
//! field devices record Như Cố's 11 villages and Sông Cầu's 20 residential
//! groups offline, then sync in shuffled order (seeded) with a validating hub
//! whose new changes are committed to a real `SqliteStore` file.
//!
//! Household values are chosen so that the report must read the seed's
//! figures: Như Cố 11/11 digital teams, 70% fibre, 70% accounts among people
//! 15+, 90% smartphones among adults, 40% e-health records, 70% online
//! shoppers, 2 cooperatives with production-diary software; Sông Cầu 20/20
//! cultural houses with internet, 10 security cameras (added by several
//! devices), 4 OCOP products. Quang Thuận holds the clashes: a conflict, a
//! data-quality issue and a refused upload.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use sync_core::automerge::transaction::Transactable;
use sync_core::automerge::ActorId;
use sync_core::ids::{DocumentId, PeerId, PlaceId, Round, DEFAULT_ROUND};
use sync_core::store::{NewRefusedUpload, SqliteStore, Store, WriteBatch};
use sync_core::survey::{Edit, FieldValue, SurveyDocument, Target};
use sync_core::sync::{DocSession, Trust, MAX_ROUNDS};

/// 2024-03-04 08:00 in Vietnam (01:00 UTC): the first day of fieldwork.
pub const DAY1: i64 = 1_709_514_000_000;
/// One day in milliseconds.
pub const DAY: i64 = 86_400_000;

/// Members, members 15+ and adults of the ten households of every village.
const MEMBERS: [i64; 10] = [4, 5, 6, 5, 4, 6, 5, 5, 4, 6];
const FIFTEEN_PLUS: [i64; 10] = [3, 4, 5, 4, 3, 5, 4, 4, 3, 5];
const ADULTS: [i64; 10] = [2, 3, 4, 3, 2, 4, 3, 3, 2, 4];

/// Splits `total` over households so that no part exceeds its whole.
fn distribute(wholes: &[i64], total: i64) -> Vec<i64> {
    let sum: i64 = wholes.iter().sum();
    let mut parts: Vec<i64> = wholes.iter().map(|w| w * total / sum).collect();
    let mut left = total - parts.iter().sum::<i64>();
    for (p, w) in parts.iter_mut().zip(wholes) {
        if left > 0 && *p < *w {
            *p += 1;
            left -= 1;
        }
    }
    assert_eq!(left, 0);
    parts
}

/// A field device: its own replica of every document it touched.
struct Device {
    peer: PeerId,
    actor: ActorId,
    docs: BTreeMap<DocumentId, SurveyDocument>,
}

impl Device {
    fn new(name: &str, n: u8) -> Self {
        Self { peer: PeerId::new(name).unwrap(), actor: ActorId::from([n; 16]), docs: BTreeMap::new() }
    }

    fn doc(&mut self, id: &DocumentId) -> &mut SurveyDocument {
        let actor = self.actor.clone();
        self.docs.entry(id.clone()).or_insert_with(|| SurveyDocument::create(id.clone(), actor))
    }

    fn record(&mut self, id: &DocumentId, edits: Vec<Edit>, at: i64) {
        self.doc(id).apply(&edits, at).expect("valid edits");
    }
}

fn round() -> Round {
    Round::new(DEFAULT_ROUND).unwrap()
}

fn village(id: &str) -> DocumentId {
    DocumentId::village(PlaceId::new(id).unwrap(), round())
}

fn commune(id: &str) -> DocumentId {
    DocumentId::commune(PlaceId::new(id).unwrap(), round())
}

fn hh(n: usize) -> Target {
    Target::Household(format!("hh-{:02}", n + 1).parse().unwrap())
}

fn int(n: i64) -> FieldValue {
    FieldValue::Int(n)
}

/// The edits that record household `i` of village number `v`.
fn household(v: usize, i: usize, parts: &Parts, surveyor: &str, at: i64) -> Vec<Edit> {
    let t = || hh(i);
    let business = (i + v).is_multiple_of(4);
    let mut edits = vec![
        Edit::set(t(), "head_name", FieldValue::Text(format!("Hoàng Văn {}", i + 1))),
        Edit::set(t(), "members", int(MEMBERS[i])),
        Edit::set(t(), "members_15_plus", int(FIFTEEN_PLUS[i])),
        Edit::set(t(), "adults", int(ADULTS[i])),
        Edit::set(t(), "fibre_broadband", FieldValue::Bool((i + v) % 10 < 7)),
        Edit::set(t(), "adults_with_smartphone", int(parts.smartphone[i])),
        Edit::set(t(), "members_15_plus_with_account", int(parts.account[i])),
        Edit::set(t(), "members_with_e_health_record", int(parts.e_health[i])),
        Edit::set(t(), "online_shoppers", int(parts.shoppers[i])),
        Edit::set(t(), "public_service_accounts", int(ADULTS[i])),
        Edit::set(t(), "public_service_users", int(ADULTS[i] / 2)),
        Edit::set(t(), "business_household", FieldValue::Bool(business)),
        Edit::set(t(), "surveyed_by", FieldValue::Text(surveyor.to_owned())),
        Edit::set(t(), "surveyed_at", int(at)),
    ];
    if business {
        edits.push(Edit::set(t(), "cashless_payment", FieldValue::Bool(i.is_multiple_of(2))));
        edits.push(Edit::increment(t(), "qr_codes_issued", 1 + (i as i64 % 3)));
    }
    edits
}

struct Parts {
    smartphone: Vec<i64>,
    account: Vec<i64>,
    e_health: Vec<i64>,
    shoppers: Vec<i64>,
}

fn parts() -> Parts {
    Parts {
        // 90% of 30 adults, 70% of 40 people 15+, 40% of 50 members, 70% of 30 adults.
        smartphone: distribute(&ADULTS, 27),
        account: distribute(&FIFTEEN_PLUS, 28),
        e_health: distribute(&MEMBERS, 20),
        shoppers: distribute(&ADULTS, 21),
    }
}

/// The hub: validating replicas of every document, committing to a store.
struct Hub {
    store: SqliteStore,
    docs: BTreeMap<DocumentId, SurveyDocument>,
    clock: i64,
}

impl Hub {
    /// One exchange between a device and the hub for one document, until both are quiet.
    fn sync(&mut self, device: &mut Device, id: &DocumentId) {
        self.clock += 1_000;
        let hub_doc = self
            .docs
            .entry(id.clone())
            .or_insert_with(|| SurveyDocument::empty(id.clone(), ActorId::from([0xaa; 16])));
        let persisted = self.store.sync_state(&device.peer, id).unwrap();
        let mut hub_session = DocSession::resume(persisted.as_deref());
        let mut device_session = DocSession::resume(None);
        let dev_doc = device.docs.get_mut(id).expect("device has the document");
        let mut batch = WriteBatch::default();
        for _ in 0..MAX_ROUNDS {
            let up = device_session.generate(dev_doc);
            if let Some(m) = &up {
                match hub_session.receive(hub_doc, m, Trust::Validate) {
                    Ok(received) => batch.changes.extend(received.new_changes),
                    Err(refusal) => {
                        batch.refused.push(NewRefusedUpload {
                            source: Some(device.peer.to_string()),
                            document: Some(id.to_string()),
                            code: refusal.code,
                            reason: refusal.message.clone(),
                            bytes: m.clone(),
                            received_at: self.clock,
                        });
                        break;
                    }
                }
            }
            let down = hub_session.generate(hub_doc);
            if let Some(m) = &down {
                device_session.receive(dev_doc, m, Trust::Peer).expect("device accepts the hub");
            }
            if up.is_none() && down.is_none() {
                break;
            }
        }
        batch.sync_states.push((device.peer.clone(), id.clone(), hub_session.persisted()));
        self.store.commit(&batch, self.clock).unwrap();
    }
}

/// Writes the fixture database to `path`.
pub fn seed_database(path: &Path) {
    let p = parts();
    let mut devices: Vec<Device> = vec![
        Device::new("nhu-co-tablet-1", 1),
        Device::new("nhu-co-tablet-2", 2),
        Device::new("nhu-co-phone-3", 3),
        Device::new("song-cau-phone-1", 4),
        Device::new("song-cau-phone-2", 5),
        Device::new("quang-thuan-1", 6),
        Device::new("quang-thuan-2", 7),
    ];
    // Như Cố: households 1–5 on day 1 by one device, 6–10 on day 2 by another.
    for v in 0..11 {
        let id = village(&format!("nhu-co-{:02}", v + 1));
        let (a, b) = (v % 3, (v + 1) % 3);
        let t1 = DAY1 + v as i64 * 600_000;
        let t2 = t1 + DAY;
        let name_a = devices[a].peer.to_string();
        let name_b = devices[b].peer.to_string();
        let mut facts = vec![
            Edit::set(Target::Facts, "digital_team", FieldValue::Bool(true)),
            Edit::set(Target::Facts, "digital_team_members", int(3 + v as i64 % 4)),
        ];
        for i in 0..5 {
            facts.extend(household(v, i, &p, &name_a, t1 + i as i64 * 1000));
        }
        devices[a].record(&id, facts, t1);
        let mut edits = vec![Edit::set(Target::Facts, "digital_team", FieldValue::Bool(true))];
        for i in 5..10 {
            edits.extend(household(v, i, &p, &name_b, t2 + i as i64 * 1000));
        }
        devices[b].record(&id, edits, t2);
    }
    devices[0].record(
        &commune("nhu-co"),
        vec![Edit::set(Target::Facts, "cooperatives_production_diary", int(2))],
        DAY1,
    );
    devices[1].record(
        &commune("nhu-co"),
        vec![Edit::set(Target::Facts, "cooperatives_production_diary", int(2))],
        DAY1 + DAY,
    );
    // Sông Cầu: two phones share the 20 residential groups; cameras added by both.
    for g in 0..20 {
        let id = village(&format!("song-cau-{:02}", g + 1));
        let d = 3 + g % 2;
        let at = DAY1 + g as i64 * 300_000;
        let name = devices[d].peer.to_string();
        let mut edits = vec![Edit::set(Target::Facts, "cultural_house_internet", FieldValue::Bool(true))];
        for i in 0..10 {
            edits.extend(household(g, i, &p, &name, at + i as i64 * 1000));
        }
        devices[d].record(&id, edits, at);
    }
    for (device, group, cameras) in
        [(3, "song-cau-01", 3), (4, "song-cau-01", 2), (3, "song-cau-05", 4), (4, "song-cau-12", 1)]
    {
        devices[device].record(
            &village(group),
            vec![Edit::increment(Target::Facts, "security_cameras", cameras)],
            DAY1 + DAY,
        );
    }
    devices[3].record(
        &commune("song-cau"),
        vec![Edit::set(Target::Facts, "ocop_products_online", int(4))],
        DAY1,
    );
    // Quang Thuận: two surveyors disagree on hh-01's members; hh-02 breaks adults <= members.
    let qt = village("quang-thuan-01");
    devices[5].record(
        &qt,
        vec![
            Edit::set(hh(0), "members", int(5)),
            Edit::set(hh(1), "members", int(3)),
            Edit::set(hh(1), "adults", int(2)),
        ],
        DAY1,
    );
    devices[6].record(&qt, vec![Edit::set(hh(0), "members", int(6))], DAY1 + 60_000);

    let store = SqliteStore::open(path).unwrap();
    let mut hub = Hub { store, docs: BTreeMap::new(), clock: DAY1 + 2 * DAY };
    let mut exchanges: Vec<(usize, DocumentId)> =
        devices.iter().enumerate().flat_map(|(n, d)| d.docs.keys().map(move |id| (n, id.clone()))).collect();
    exchanges.shuffle(&mut StdRng::seed_from_u64(2024));
    for (n, id) in &exchanges {
        hub.sync(&mut devices[*n], id);
    }
    // Back in signal, the second surveyor syncs again, then raises hh-02's adults above its members.
    hub.sync(&mut devices[6], &qt);
    devices[6].record(&qt, vec![Edit::set(hh(1), "adults", int(4))], DAY1 + 2 * DAY + 3_600_000);
    hub.sync(&mut devices[6], &qt);
    // A device that writes text into a count: refused, kept aside, nothing changed.
    let rogue = &mut devices[5];
    let doc = rogue.doc(&qt);
    let obj = doc.household_obj("hh-01").unwrap();
    let mut tx = doc.automerge_mut().transaction();
    tx.put(&obj, "members", "many").unwrap();
    tx.commit();
    hub.sync(&mut devices[5], &qt);
}

/// A fixture database shared by the read-only tests of one test binary.
pub fn shared_db() -> &'static Path {
    static FIXTURE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &FIXTURE
        .get_or_init(|| {
            let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
            remove_abandoned(tmp);
            let dir = tempfile::Builder::new()
                .prefix(&format!("admin-fixture-{}-", std::process::id()))
                .tempdir_in(tmp)
                .unwrap();
            let db = dir.path().join("thonsync.sqlite");
            seed_database(&db);
            (dir, db)
        })
        .1
}

/// Removes shared fixtures left by test processes that have ended (a static
/// is never dropped, so each process's fixture outlives it).
fn remove_abandoned(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("admin-fixture-").and_then(|r| r.split('-').next()) else {
            continue;
        };
        let alive = Path::new("/proc").join(pid).exists() || !Path::new("/proc/self").exists();
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A fresh fixture database of its own, for tests that write.
pub fn own_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("thonsync.sqlite");
    seed_database(&db);
    (dir, db)
}

thread_local! {
    /// The administrator token this test's commands send with `--server`.
    static ADMIN_TOKEN: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Makes this test's `thonsync` commands send `token` (as THONSYNC_ADMIN_TOKEN).
#[allow(dead_code)]
pub fn use_admin_token(token: &str) {
    ADMIN_TOKEN.with(|t| *t.borrow_mut() = Some(token.to_owned()));
}

/// Creates an administrator token directly in a database file.
#[allow(dead_code)]
pub fn admin_token(db: &Path) -> String {
    let mut store = SqliteStore::open(db).expect("database");
    sync_core::devices::create_admin_token(&mut store, "tests", 0, [1; 32]).expect("admin token")
}

/// Runs the real `thonsync` binary in English (unless `args` say otherwise).
pub fn thonsync(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_thonsync"));
    cmd.args(args)
        .env("LANG", "en_US.UTF-8")
        .env_remove("LC_ALL")
        .env_remove("LC_MESSAGES")
        .env_remove("THONSYNC_DB")
        .env_remove("THONSYNC_SERVER")
        .env_remove("THONSYNC_ADMIN_TOKEN");
    if let Some(t) = ADMIN_TOKEN.with(|t| t.borrow().clone()) {
        cmd.env("THONSYNC_ADMIN_TOKEN", t);
    }
    cmd.output().expect("thonsync runs")
}

/// Runs `thonsync`, expects success, returns stdout.
pub fn ok(args: &[&str]) -> String {
    let out = thonsync(args);
    assert!(
        out.status.success(),
        "thonsync {args:?} failed with {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Runs `thonsync ... --format json` (the caller passes it), expects success, parses stdout.
pub fn json(args: &[&str]) -> serde_json::Value {
    let text = ok(args);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("thonsync {args:?}: not JSON ({e}):\n{text}"))
}
