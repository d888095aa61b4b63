//! Seeded property test: N replicas edit offline and sync with a hub through
//! lossy, duplicating, reordering, interrupted exchanges; in the end every
//! replica and the hub hold identical documents and no acknowledged change
//! is missing.
//!
//! A failure prints its seed; replay it with `THONSYNC_SEED=<seed> cargo test
//! -p sync-core --test convergence`.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use sync_core::automerge::{ActorId, ReadDoc};
use sync_core::ids::{DocumentId, HouseholdId, PeerId};
use sync_core::survey::{Edit, FieldValue, SurveyDocument, Target};
use sync_core::sync::{DocSession, Trust, MAX_ROUNDS};

/// A small deterministic generator (SplitMix64), so a seed replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn documents() -> Vec<DocumentId> {
    vec!["village:nhu-co-01:2024-1".parse().unwrap(), "commune:nhu-co:2024-1".parse().unwrap()]
}

/// One replica: its documents and the sync sessions it has persisted.
struct Replica {
    peer: PeerId,
    docs: BTreeMap<DocumentId, SurveyDocument>,
    persisted: BTreeMap<DocumentId, Vec<u8>>,
}

/// The hub: documents plus a persisted session per (replica, document).
struct Hub {
    docs: BTreeMap<DocumentId, SurveyDocument>,
    persisted: BTreeMap<(PeerId, DocumentId), Vec<u8>>,
}

fn random_edit(rng: &mut Rng, id: &DocumentId) -> Edit {
    let household = || Target::Household(HouseholdId::new(format!("hh-{}", 1)).unwrap());
    if id.kind == sync_core::ids::DocumentKind::Commune {
        return Edit::set(Target::Facts, "ocop_products_online", FieldValue::Int(rng.below(9) as i64));
    }
    let hh = Target::Household(HouseholdId::new(format!("hh-{}", rng.below(5))).unwrap());
    match rng.below(6) {
        0 => Edit::set(hh, "members", FieldValue::Int(rng.below(12) as i64)),
        1 => Edit::set(hh, "fibre_broadband", FieldValue::Bool(rng.chance(50))),
        2 => Edit::increment(hh, "qr_codes_issued", 1 + rng.below(3) as i64),
        3 => Edit::increment(Target::Facts, "security_cameras", 1 + rng.below(4) as i64),
        4 => Edit::set(Target::Facts, "digital_team", FieldValue::Bool(rng.chance(50))),
        _ => Edit::set(household(), "adults", FieldValue::Int(rng.below(6) as i64)),
    }
}

/// How hostile the network is during one exchange.
#[derive(Clone, Copy)]
struct Network {
    loss_percent: u64,
    duplicate_percent: u64,
    /// Rounds after which the exchange is cut (the connection drops).
    cut_after: Option<u32>,
}

/// One exchange between a replica and the hub, over every document.
fn exchange(rng: &mut Rng, replica: &mut Replica, hub: &mut Hub, net: Network) {
    let mut sessions: BTreeMap<DocumentId, (DocSession, DocSession)> = BTreeMap::new();
    for id in documents() {
        let mine = DocSession::resume(replica.persisted.get(&id).map(Vec::as_slice));
        let theirs =
            DocSession::resume(hub.persisted.get(&(replica.peer.clone(), id.clone())).map(Vec::as_slice));
        sessions.insert(id, (mine, theirs));
    }
    let mut stale: Vec<(DocumentId, bool, Vec<u8>)> = Vec::new();
    for round in 0..MAX_ROUNDS {
        if net.cut_after == Some(round) {
            return;
        }
        let mut quiet = true;
        for (id, (mine, theirs)) in sessions.iter_mut() {
            let local = replica.docs.get_mut(id).unwrap();
            let remote = hub.docs.get_mut(id).unwrap();
            if let Some(m) = mine.generate(local) {
                quiet = false;
                let copies = if rng.chance(net.duplicate_percent) { 2 } else { 1 };
                if !rng.chance(net.loss_percent) {
                    for _ in 0..copies {
                        theirs.receive(remote, &m, Trust::Validate).expect("hub accepts valid edits");
                        hub.persisted.insert((replica.peer.clone(), id.clone()), theirs.persisted());
                    }
                }
                stale.push((id.clone(), true, m));
            }
            if let Some(m) = theirs.generate(remote) {
                quiet = false;
                if !rng.chance(net.loss_percent) {
                    mine.receive(local, &m, Trust::Peer).expect("replica accepts hub messages");
                    replica.persisted.insert(id.clone(), mine.persisted());
                }
                stale.push((id.clone(), false, m));
            }
        }
        // Reordering: now and then an old message arrives late.
        if !stale.is_empty() && rng.chance(net.duplicate_percent) {
            let (id, up, m) = stale.swap_remove(rng.below(stale.len() as u64) as usize);
            let (mine, theirs) = sessions.get_mut(&id).unwrap();
            if up {
                theirs.receive(hub.docs.get_mut(&id).unwrap(), &m, Trust::Validate).expect("late message");
            } else {
                mine.receive(replica.docs.get_mut(&id).unwrap(), &m, Trust::Peer).expect("late message");
            }
        }
        if quiet {
            return;
        }
    }
}

fn run(seed: u64) -> Result<(), String> {
    let mut rng = Rng(seed);
    let n = 3 + rng.below(6) as usize;
    let mut hub = Hub {
        docs: documents()
            .into_iter()
            .map(|id| (id.clone(), SurveyDocument::create(id, ActorId::from([0xEE; 16]))))
            .collect(),
        persisted: BTreeMap::new(),
    };
    let mut replicas: Vec<Replica> = (0..n)
        .map(|i| Replica {
            peer: PeerId::new(format!("device-{i}")).unwrap(),
            docs: documents()
                .into_iter()
                .map(|id| {
                    // Some devices pull first, some start the documents offline.
                    let actor = ActorId::from([i as u8 + 1; 16]);
                    let doc = if i % 2 == 0 {
                        SurveyDocument::create(id.clone(), actor)
                    } else {
                        SurveyDocument::empty(id.clone(), actor)
                    };
                    (id, doc)
                })
                .collect(),
            persisted: BTreeMap::new(),
        })
        .collect();
    let mut made: BTreeSet<String> = BTreeSet::new();
    let steps = 20 + rng.below(40);
    for step in 0..steps {
        let r = rng.below(n as u64) as usize;
        if rng.chance(60) {
            let ids = documents();
            let id = &ids[rng.below(ids.len() as u64) as usize];
            let edits: Vec<Edit> = (0..1 + rng.below(3)).map(|_| random_edit(&mut rng, id)).collect();
            let doc = replicas[r].docs.get_mut(id).unwrap();
            if let Some(hash) = doc.apply(&edits, step as i64).map_err(|e| e.to_string())? {
                made.insert(hash.to_string());
            }
        } else {
            let net = Network {
                loss_percent: rng.below(40),
                duplicate_percent: rng.below(30),
                cut_after: rng.chance(25).then(|| rng.below(3) as u32),
            };
            exchange(&mut rng, &mut replicas[r], &mut hub, net);
        }
    }
    // Connectivity returns for good: everyone syncs until nothing moves.
    let calm = Network { loss_percent: 0, duplicate_percent: 0, cut_after: None };
    for _ in 0..4 {
        for replica in replicas.iter_mut() {
            exchange(&mut rng, replica, &mut hub, calm);
        }
    }
    for id in documents() {
        let hub_doc = &hub.docs[&id];
        for replica in &replicas {
            let doc = &replica.docs[&id];
            if doc.heads() != hub_doc.heads() {
                return Err(format!("{}: {} heads differ from the hub's", id, replica.peer));
            }
            if doc.snapshot(None).unwrap() != hub_doc.snapshot(None).unwrap() {
                return Err(format!("{}: {} snapshot differs from the hub's", id, replica.peer));
            }
        }
    }
    for hash in &made {
        let found =
            hub.docs.values().any(|d| d.automerge().get_change_by_hash(&hash.parse().unwrap()).is_some());
        if !found {
            return Err(format!("change {hash} made on a replica is missing at the hub"));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn replicas_converge_through_a_hostile_network(seed in any::<u64>()) {
        if let Err(e) = run(seed) {
            panic!("{e}\nreplay with THONSYNC_SEED={seed} cargo test -p sync-core --test convergence");
        }
    }
}

#[test]
fn replay_a_seed() {
    let seed = std::env::var("THONSYNC_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20_241);
    if let Err(e) = run(seed) {
        panic!("{e}\nseed {seed}");
    }
}
