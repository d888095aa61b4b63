//! Two `thonsync-server` processes on one PostgreSQL database serving the
//! same devices: every request of a device (each round of an exchange
//! included) reaches one of them at random, one is killed with SIGKILL
//! while the devices record and sync, and at the end every change a device
//! saw acknowledged is in the store and every replica has the store's heads.
//!
//! Skipped (saying so) without `THONSYNC_TEST_POSTGRES`; the test makes its
//! own database beside the one named there and drops it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use cli::device::{Device, DeviceError, SyncOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use store_postgres::scratch::{test_server_url, ScratchDatabase};
use store_postgres::PgStore;
use sync_core::automerge::ActorId;
use sync_core::devices;
use sync_core::ids::DocumentId;
use sync_core::registry::Registry;
use sync_core::store::Store;
use sync_core::survey::{Edit, FieldValue, Target};
use tests::{hh, village};

/// The `thonsync-server` binary of this build, built (or found up to date)
/// by cargo first, so the processes run the code under test.
fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "-p", "server", "--bin", "thonsync-server"]);
    if profile_dir.ends_with("release") {
        build.arg("--release");
    }
    let built = build.status().expect("cargo runs");
    assert!(built.success(), "building thonsync-server failed");
    let binary = profile_dir.join("thonsync-server");
    assert!(binary.exists(), "{} was built", binary.display());
    binary
}

/// A free port on 127.0.0.1.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// One server process the test started.
struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    /// Where it serves `GET /metrics`.
    metrics: SocketAddr,
}

impl ServerProcess {
    fn start(binary: &Path, db: &str, log_path: &Path) -> Self {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let log = std::fs::File::create(log_path).expect("log file");
        let child = Command::new(binary)
            .args(["--db", db, "--listen", &addr.to_string(), "--metrics-listen", &metrics.to_string()])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the server starts");
        let server = Self { child, addr, metrics };
        // Bounded: the server answers /v1/health once it is listening.
        let agent = ureq::Agent::new_with_defaults();
        for _ in 0..600 {
            if agent.get(format!("http://{addr}/v1/health")).call().is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(log_path).unwrap_or_default();
        panic!("the server on {addr} never answered /v1/health:\n{log}");
    }

    /// The value of a counter of `GET /metrics` whose line starts with `prefix`.
    fn counter(&self, prefix: &str) -> f64 {
        tests::metric_sum(self.metrics, prefix)
    }

    /// SIGKILL, by the PID this test started.
    fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A 127.0.0.1 TCP proxy in front of the servers: each connection goes to
/// a backend picked at random (seeded), and each request is made to ask
/// for `Connection: close`, so every request of a device opens a new
/// connection and may reach the other server, rounds of one exchange
/// included. A backend taken out (as a load balancer would a dead one) is
/// no longer picked; a connection to a killed one fails, as it would.
struct Proxy {
    addr: SocketAddr,
    backends: Arc<Mutex<Vec<SocketAddr>>>,
    /// Connections handed to each backend so far.
    handed: Arc<Mutex<BTreeMap<SocketAddr, usize>>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    fn start(backends: Vec<SocketAddr>, seed: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let backends = Arc::new(Mutex::new(backends));
        let stop = Arc::new(AtomicBool::new(false));
        let handed = Arc::new(Mutex::new(BTreeMap::new()));
        let (pool, done, count) = (backends.clone(), stop.clone(), handed.clone());
        std::thread::spawn(move || {
            let mut rng = StdRng::seed_from_u64(seed);
            for client in listener.incoming() {
                if done.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let backend = {
                    let pool = pool.lock().expect("backends");
                    pool[rng.random_range(0..pool.len())]
                };
                *count.lock().expect("counts").entry(backend).or_insert(0) += 1;
                std::thread::spawn(move || forward(client, backend));
            }
        });
        Self { addr, backends, handed, stop }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops picking a backend.
    fn take_out(&self, backend: SocketAddr) {
        self.backends.lock().expect("backends").retain(|b| *b != backend);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
    }
}

/// One connection: the request's headers with `Connection: close`, then
/// bytes both ways until the backend closes.
fn forward(mut client: TcpStream, backend: SocketAddr) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 64 * 1024 || !matches!(client.read(&mut byte), Ok(1)) {
            return;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines: Vec<&str> = text
        .trim_end_matches("\r\n")
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect();
    lines.push("Connection: close");
    let head = format!("{}\r\n\r\n", lines.join("\r\n"));
    let Ok(mut server) = TcpStream::connect(backend) else { return }; // a killed server: the device sees the cut
    if server.write_all(head.as_bytes()).is_err() {
        return;
    }
    let (mut up_from, mut up_to) = (client.try_clone().expect("clone"), server.try_clone().expect("clone"));
    let upload = std::thread::spawn(move || {
        let _ = std::io::copy(&mut up_from, &mut up_to);
    });
    let _ = std::io::copy(&mut server, &mut client);
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
    let _ = upload.join();
}

/// Sync options for this test: a few quick retries, each a new exchange.
fn options() -> SyncOptions {
    SyncOptions {
        attempts: 6,
        first_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        progress: false,
    }
}

/// What one device thread did.
#[derive(Default)]
struct Run {
    /// Heads of each document after each sync that succeeded: acknowledged.
    acknowledged: Vec<(DocumentId, Vec<String>)>,
    /// Increments of `security_cameras` recorded, per document.
    increments: BTreeMap<DocumentId, i64>,
    /// Syncs that gave up (the killed server was picked every time).
    gave_up: usize,
}

fn heads_of(device: &mut Device, id: &DocumentId) -> Vec<String> {
    let mut heads: Vec<String> =
        device.document(id).expect("document").heads().iter().map(|h| h.to_string()).collect();
    heads.sort();
    heads
}

#[test]
fn devices_alternating_between_two_servers_converge_when_one_is_killed() {
    let Some(postgres) = test_server_url() else { return };
    let binary = server_binary();
    let database = ScratchDatabase::create(&postgres).expect("a scratch database");
    let db = database.url().to_owned();
    let work = tempfile::tempdir().expect("tempdir");

    // Devices are added to the database before the servers start.
    let mut store = PgStore::open(&db).expect("open the database");
    let names = ["tablet-a", "tablet-b", "tablet-c"];
    let codes = add_devices(&mut store, &names);

    let mut first = ServerProcess::start(&binary, &db, &work.path().join("first.log"));
    let second = ServerProcess::start(&binary, &db, &work.path().join("second.log"));
    let proxy = Proxy::start(vec![first.addr, second.addr], 7);
    let documents = [village("nhu-co-01"), village("nhu-co-02")];

    let mut devices: Vec<Device> = names
        .iter()
        .zip(&codes)
        .map(|(name, code)| {
            let mut d = Device::init(&work.path().join(name), &proxy.url(), code, None, None).expect("init");
            d.pull(&options()).expect("pull");
            d
        })
        .collect();

    // Each device records and syncs in its own thread; the first server is
    // killed once a third of all syncs are done, while the others go on.
    const STEPS: usize = 12;
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let threads: Vec<_> = devices
        .drain(..)
        .enumerate()
        .map(|(n, mut device)| {
            let documents = documents.clone();
            let done = done_tx.clone();
            std::thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(100 + n as u64);
                let mut run = Run::default();
                for step in 0..STEPS {
                    let id = &documents[rng.random_range(0..documents.len())];
                    let household = format!("hh-{n}{:02}", rng.random_range(0..6));
                    let edits = [
                        Edit::increment(Target::Facts, "security_cameras", 1),
                        Edit::set(hh(&household), "members", FieldValue::Int(step as i64 + 1)),
                    ];
                    device.record(id, &edits).expect("record");
                    *run.increments.entry(id.clone()).or_default() += 1;
                    match device.sync(&options()) {
                        Ok(report) => {
                            assert!(report.refused.is_empty(), "nothing is refused: {:?}", report.refused);
                            for id in &documents {
                                run.acknowledged.push((id.clone(), heads_of(&mut device, id)));
                            }
                        }
                        Err(DeviceError::GaveUp { .. }) => run.gave_up += 1,
                        Err(e) => panic!("{} could not sync: {e}", names_of(n)),
                    }
                    let _ = done.send(());
                }
                (device, run)
            })
        })
        .collect();
    drop(done_tx);
    let kill_after = names.len() * STEPS / 3;
    let mut seen = 0;
    while seen < kill_after && done_rx.recv().is_ok() {
        seen += 1;
    }
    {
        let handed = proxy.handed.lock().expect("counts");
        assert!(handed.len() == 2 && handed.values().all(|n| *n > 0), "both servers served: {handed:?}");
    }
    let played_by_first = first.counter("thonsync_sync_rounds_total ");
    assert!(played_by_first > 0.0, "the first server played rounds before it was killed");
    first.kill();
    let killed = first.addr;
    let mut runs = Vec::new();
    for t in threads {
        let (device, run) = t.join().expect("a device thread");
        devices.push(device);
        runs.push(run);
    }

    // Everything acknowledged is stored, before anyone syncs again.
    let reader = PgStore::open(&db).expect("open");
    let check_acknowledged = |when: &str| {
        for run in &runs {
            for (id, heads) in &run.acknowledged {
                for hash in heads {
                    assert!(
                        reader.has_change(id, hash).expect("read"),
                        "{when}: acknowledged change {hash} of {id} is stored"
                    );
                }
            }
        }
    };
    check_acknowledged("after the kill");
    let acknowledged: usize = runs.iter().map(|r| r.acknowledged.len()).sum();
    assert!(acknowledged > 0, "some syncs succeeded");

    // The survivor alone now (the balancer takes the dead one out): sync
    // until a whole pass moves nothing, at most 8 passes.
    proxy.take_out(killed);
    let mut quiet = false;
    for _ in 0..8 {
        let mut moved = 0;
        for d in devices.iter_mut() {
            let report = d.sync(&options()).expect("sync with the survivor");
            assert!(report.refused.is_empty());
            moved += report.received_changes + report.accepted_by_server;
        }
        if moved == 0 {
            quiet = true;
            break;
        }
    }
    assert!(quiet, "the devices settled");
    check_acknowledged("at the end");
    // Rounds that reached a server that had not played the exchange's
    // earlier rounds were played, not refused as out of step.
    assert!(second.counter("thonsync_sync_rounds_total ") > 0.0);
    assert_eq!(second.counter("thonsync_sync_refusals_total{code=\"exchange_out_of_step\"}"), 0.0);

    // Every replica has the store's heads, and every increment recorded
    // anywhere is counted once.
    for id in &documents {
        let stored = sync_core::store::load_survey(&reader, id, ActorId::random())
            .expect("load")
            .expect("the document is stored");
        let mut stored_heads: Vec<String> = stored.heads().iter().map(|h| h.to_string()).collect();
        stored_heads.sort();
        for (n, d) in devices.iter_mut().enumerate() {
            assert_eq!(heads_of(d, id), stored_heads, "{} holds the store's {id}", names_of(n));
        }
        let sync_core::survey::Survey::Village(v) = stored.snapshot(None).expect("snapshot") else {
            panic!("{id} is a village")
        };
        let recorded: i64 = runs.iter().filter_map(|r| r.increments.get(id)).sum();
        assert_eq!(v.facts.security_cameras, recorded, "every increment of {id} is in the store");
    }
    let gave_up: usize = runs.iter().map(|r| r.gave_up).sum();
    println!("{acknowledged} acknowledged syncs, {gave_up} gave up while the killed server was picked");
    drop(second);
    drop(proxy);
    drop(reader);
    drop(store);
    drop(database);
}

/// Devices added to the database for commune `nhu-co`, with their enrollment codes.
fn add_devices(store: &mut PgStore, names: &[&str]) -> Vec<String> {
    let registry = Registry::sample_bac_kan();
    let now = server::state::now_ms();
    names
        .iter()
        .map(|name| {
            devices::add_device(
                store,
                &registry,
                name,
                &["nhu-co".to_owned()],
                "admin:tests",
                now,
                rand::random(),
            )
            .expect("device added")
            .1
        })
        .collect()
}

#[test]
fn a_server_plays_no_round_on_a_document_older_than_the_store() {
    let Some(postgres) = test_server_url() else { return };
    let binary = server_binary();
    let database = ScratchDatabase::create(&postgres).expect("a scratch database");
    let db = database.url().to_owned();
    let work = tempfile::tempdir().expect("tempdir");
    let mut store = PgStore::open(&db).expect("open the database");
    let codes = add_devices(&mut store, &["tablet-a", "tablet-b"]);
    let first = ServerProcess::start(&binary, &db, &work.path().join("first.log"));
    let second = ServerProcess::start(&binary, &db, &work.path().join("second.log"));
    let url = |s: &ServerProcess| format!("http://{}", s.addr);
    let id = village("nhu-co-03");

    // Tablet A works through the first server, tablet B through the second,
    // which has the village loaded from B's first sync.
    let mut a = Device::init(&work.path().join("a"), &url(&first), &codes[0], None, None).expect("init");
    let mut b = Device::init(&work.path().join("b"), &url(&second), &codes[1], None, None).expect("init");
    a.record(&id, &[Edit::increment(Target::Facts, "security_cameras", 1)]).expect("record");
    a.sync(&options()).expect("sync");
    b.sync(&options()).expect("sync");
    assert_eq!(heads_of(&mut b, &id), heads_of(&mut a, &id));

    // A's next change goes through the first server only; B's next sync,
    // through the second, which must not answer from its loaded copy (B's
    // heads digest equals that copy's heads).
    for n in 2..=4 {
        a.record(&id, &[Edit::increment(Target::Facts, "security_cameras", 1)]).expect("record");
        a.sync(&options()).expect("sync");
        let report = b.sync(&options()).expect("sync");
        assert_eq!(report.received_changes, 1, "B got A's change through the other server");
        assert_eq!(heads_of(&mut b, &id), heads_of(&mut a, &id));
        let sync_core::survey::Survey::Village(v) =
            b.document(&id).expect("doc").snapshot(None).expect("snapshot")
        else {
            panic!("a village")
        };
        assert_eq!(v.facts.security_cameras, n);
    }
    drop((first, second, store, database));
}

fn names_of(n: usize) -> &'static str {
    ["tablet-a", "tablet-b", "tablet-c"][n]
}
