//! Seeded property test: N replicas edit offline and sync with a hub through
//! lossy, duplicating, interrupted exchanges, both sides driven by
//! sync-core's exchange engine (`ClientExchange`, `HubExchange`); in the end every
//! replica and the hub hold identical documents and no acknowledged change
//! is missing.
//!
//! A failure prints its seed; replay it with `THONSYNC_SEED=<seed> cargo test
//! -p sync-core --test convergence`.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use sync_core::automerge::{ActorId, ReadDoc};
use sync_core::exchange::{Begin, ClientExchange, HubEnv, HubExchange, MAX_EXCHANGE_ROUNDS};
use sync_core::ids::{DocumentId, HouseholdId, PeerId};
use sync_core::survey::{Edit, FieldValue, SurveyDocument, Target};
use sync_core::sync::InputLimits;

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

/// The hub's store, as the exchange engine sees it.
struct Env<'a> {
    peer: &'a PeerId,
    persisted: &'a BTreeMap<(PeerId, DocumentId), Vec<u8>>,
}

impl HubEnv for Env<'_> {
    fn is_known(&self, id: &DocumentId) -> Result<bool, String> {
        Ok(documents().contains(id))
    }
    fn persisted_state(&self, id: &DocumentId) -> Result<Option<Vec<u8>>, String> {
        Ok(self.persisted.get(&(self.peer.clone(), id.clone())).cloned())
    }
    fn legacy_owner(&self, _: &str) -> Result<Option<String>, String> {
        Ok(None)
    }
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
#[derive(Clone, Copy, Debug)]
struct Network {
    loss_percent: u64,
    duplicate_percent: u64,
    /// Rounds after which the exchange is cut (the connection drops).
    cut_after: Option<u32>,
}

/// One exchange between a replica and the hub over every document, both
/// sides driven by sync-core's exchange engine, the network in between: a
/// lost request or answer ends the exchange (the device starts a new one
/// later), a duplicated request is answered again from the hub's memory.
fn exchange(rng: &mut Rng, replica: &mut Replica, hub: &mut Hub, net: Network, n: u64) {
    let server = PeerId::new("server").unwrap();
    let states = documents().into_iter().map(|id| {
        let s = replica.persisted.get(&id).cloned();
        (id, s)
    });
    let id = format!("x-{n}");
    let mut client =
        ClientExchange::new(id.clone(), Some(replica.peer.to_string()), server.clone(), states, 1 << 20);
    let mut engine = HubExchange::new(replica.peer.clone(), id, 64, MAX_EXCHANGE_ROUNDS);
    let limits = InputLimits::default();
    for round in 0.. {
        if net.cut_after == Some(round) {
            return;
        }
        let request = client.poll_request(&replica.docs).expect("settles within the round cap");
        let Some(request) = request else { return };
        if rng.chance(net.loss_percent) {
            return; // the request never arrives
        }
        let copies = if rng.chance(net.duplicate_percent) { 2 } else { 1 };
        let mut answer = None;
        for _ in 0..copies {
            let env = Env { peer: &replica.peer, persisted: &hub.persisted };
            let ids: Vec<DocumentId> =
                request.documents.iter().map(|d| d.document.parse().unwrap()).collect();
            let response = match engine.begin(&request, &ids, &env, 0).expect("a round in step") {
                Begin::Replay(_, response) => response,
                Begin::Round(r) => {
                    let mut docs: BTreeMap<DocumentId, &mut SurveyDocument> =
                        hub.docs.iter_mut().map(|(k, v)| (k.clone(), v)).collect();
                    let out = engine.apply(r, &mut docs, &limits, 0, &env).expect("applies");
                    assert!(out.refusals.is_empty(), "valid edits are refused: {:?}", out.refusals);
                    for (peer, doc, state) in &out.batch.sync_states {
                        hub.persisted.insert((peer.clone(), doc.clone()), state.clone());
                    }
                    engine.finish(out, None).1
                }
            };
            answer = Some(response);
        }
        if rng.chance(net.loss_percent) {
            return; // the answer is lost on its way back
        }
        let round =
            client.handle_response(&mut replica.docs, answer.unwrap()).expect("the hub's answer applies");
        assert!(round.refused.is_empty());
        for (_, doc, state) in round.batch.sync_states {
            replica.persisted.insert(doc, state);
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
                    let actor = sync_core::actors::device_actor(&format!("device-{i}"), [i as u8 + 1; 8]);
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
            exchange(&mut rng, &mut replicas[r], &mut hub, net, step);
        }
    }
    // Connectivity returns for good: everyone syncs until nothing moves.
    let calm = Network { loss_percent: 0, duplicate_percent: 0, cut_after: None };
    for round in 0..4 {
        for replica in replicas.iter_mut() {
            exchange(&mut rng, replica, &mut hub, calm, 1000 + round);
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
    // Failures are kept in proptest-regressions/ beside this file and replayed first.
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

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
