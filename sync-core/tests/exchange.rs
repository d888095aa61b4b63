//! The exchange engine on its own, sans IO: round numbering and replay,
//! rounds that reach several hubs, the caps, refusals and the device's recovery, and waiting changes kept
//! when an exchange ends.

use std::collections::{BTreeMap, BTreeSet};

use sync_core::actors::device_actor;
use sync_core::automerge::sync::{Message, MessageVersion};
use sync_core::automerge::ActorId;
use sync_core::exchange::{set_aside, Begin, ClientExchange, HubEnv, HubError, HubExchange, RoundOutput};
use sync_core::ids::{DocumentId, PeerId};
use sync_core::survey::{Edit, FieldValue, SurveyDocument, Target};
use sync_core::sync::{DocSession, InputLimits, RefusalCode, Trust};
use sync_core::wire::{DocumentMessage, ErrorCode, SyncRequest, SyncResponse};

fn village(n: u32) -> DocumentId {
    format!("village:nhu-co-{n:02}:2024-1").parse().unwrap()
}

fn hh(id: &str) -> Target {
    Target::Household(id.parse().unwrap())
}

/// A hub whose store knows villages 1–9 and has no sessions or bindings.
struct Env;

impl HubEnv for Env {
    fn is_known(&self, id: &DocumentId) -> Result<bool, String> {
        Ok(id.place.as_str().starts_with("nhu-co-0"))
    }
    fn persisted_state(&self, _: &DocumentId) -> Result<Option<Vec<u8>>, String> {
        Ok(None)
    }
    fn legacy_owner(&self, _: &str) -> Result<Option<String>, String> {
        Ok(None)
    }
}

/// The hub's documents, created as the server would for known villages.
fn hub_docs(ids: &[DocumentId]) -> BTreeMap<DocumentId, SurveyDocument> {
    ids.iter().map(|id| (id.clone(), SurveyDocument::create(id.clone(), ActorId::random()))).collect()
}

fn request(round: u32, docs: &[(DocumentId, Option<String>)]) -> SyncRequest {
    SyncRequest {
        device: None,
        exchange: "x-1".into(),
        round,
        documents: docs
            .iter()
            .map(|(d, m)| DocumentMessage { document: d.to_string(), message: m.clone(), heads: None })
            .collect(),
    }
}

/// Plays one round on the hub; commits nothing (the batch is returned).
fn play(
    hub: &mut HubExchange,
    docs: &mut BTreeMap<DocumentId, SurveyDocument>,
    req: &SyncRequest,
) -> Result<(RoundOutput, Option<(u16, SyncResponse)>), HubError> {
    let named: Vec<DocumentId> = req.documents.iter().map(|d| d.document.parse().unwrap()).collect();
    match hub.begin(req, &named, &Env, 7)? {
        Begin::Replay(status, response) => Ok((RoundOutput::default(), Some((status, response)))),
        Begin::Round(round) => {
            let mut view: BTreeMap<DocumentId, &mut SurveyDocument> = docs
                .iter_mut()
                .filter(|(k, _)| hub.documents().contains(k))
                .map(|(k, v)| (k.clone(), v))
                .collect();
            Ok((hub.apply(round, &mut view, &InputLimits::default(), 0, &Env)?, None))
        }
    }
}

#[test]
fn rounds_go_in_step_and_a_repeat_is_answered_again_unchanged() {
    let ids = [village(1)];
    let mut docs = hub_docs(&ids);
    let mut hub = HubExchange::new(PeerId::new("tablet-a").unwrap(), "x-1".into(), 4, 3);
    let first = request(1, &[(village(1), None)]);
    let (out, _) = play(&mut hub, &mut docs, &first).unwrap();
    let (status, answer) = hub.finish(out, None);
    assert_eq!(status, 200);
    let (_, replay) = play(&mut hub, &mut docs, &first).unwrap();
    let (s2, again) = replay.expect("a replay");
    assert_eq!((s2, serde_json::to_value(&again).unwrap()), (200, serde_json::to_value(&answer).unwrap()));
    // Round 2 was played elsewhere (another server): round 3 goes on.
    let (out, _) = play(&mut hub, &mut docs, &request(3, &[(village(1), None)])).unwrap();
    assert_eq!(hub.finish(out, None).1.round, 3);
    for behind in [2, 1, 0] {
        assert!(matches!(
            play(&mut hub, &mut docs, &request(behind, &[])),
            Err(HubError::OutOfStep { last: 3, .. })
        ));
    }
    assert_eq!(play(&mut hub, &mut docs, &request(4, &[])).unwrap_err(), HubError::TooManyRounds { max: 3 });
}

/// A device whose rounds each reach one of two hubs (two servers sharing
/// one store, so one set of documents), as `order` says: hub 0 or 1 per
/// round. Returns the rounds played.
fn sync_across(
    device: &str,
    mine: &mut BTreeMap<DocumentId, SurveyDocument>,
    theirs: &mut BTreeMap<DocumentId, SurveyDocument>,
    order: &[usize],
) -> u32 {
    let server = PeerId::new("server").unwrap();
    let states = mine.keys().map(|id| (id.clone(), None));
    let mut client = ClientExchange::new("x-1".into(), Some(device.into()), server, states, 1 << 20);
    let mut hubs: Vec<HubExchange> =
        (0..2).map(|_| HubExchange::new(PeerId::new(device).unwrap(), "x-1".into(), 8, 32)).collect();
    let mut rounds = 0;
    while let Some(req) = client.poll_request(mine).unwrap() {
        let hub = &mut hubs[order[rounds as usize % order.len()]];
        let (out, _) = play(hub, theirs, &req).unwrap();
        assert!(out.refusals.is_empty(), "{:?}", out.refusals);
        let (_, response) = hub.finish(out, None);
        let round = client.handle_response(mine, response).unwrap();
        assert!(round.refused.is_empty());
        rounds += 1;
    }
    rounds
}

#[test]
fn an_exchange_whose_rounds_reach_two_hubs_converges() {
    let ids = [village(4), village(5)];
    let mut theirs = hub_docs(&ids);
    let mut a: BTreeMap<DocumentId, SurveyDocument> = ids
        .iter()
        .map(|id| (id.clone(), SurveyDocument::create(id.clone(), device_actor("tablet-a", [1; 8]))))
        .collect();
    let mut b: BTreeMap<DocumentId, SurveyDocument> = ids
        .iter()
        .map(|id| (id.clone(), SurveyDocument::create(id.clone(), device_actor("tablet-b", [2; 8]))))
        .collect();
    for (n, id) in ids.iter().enumerate() {
        let edits: Vec<Edit> = (0..20)
            .map(|i| Edit::set(hh(&format!("hh-{n}{i:02}")), "members", FieldValue::Int(i + 1)))
            .collect();
        a.get_mut(id).unwrap().apply(&edits, 1).unwrap();
        b.get_mut(id).unwrap().apply(&[Edit::increment(Target::Facts, "security_cameras", 3)], 2).unwrap();
    }
    for order in [&[0, 1][..], &[1, 1, 0], &[0, 0, 1, 0]] {
        let played = sync_across("tablet-a", &mut a, &mut theirs, order);
        assert!(played >= 2, "the exchange took several rounds, so it crossed hubs");
        sync_across("tablet-b", &mut b, &mut theirs, order);
    }
    sync_across("tablet-a", &mut a, &mut theirs, &[1, 0]);
    for id in &ids {
        assert_eq!(a[id].heads(), theirs[id].heads(), "{id}");
        assert_eq!(b[id].heads(), theirs[id].heads(), "{id}");
        assert_eq!(a[id].snapshot(None).unwrap(), theirs[id].snapshot(None).unwrap());
    }
}

/// Nine villages of 60 households each, recorded offline by tablet-a.
fn surveyed_offline(ids: &[DocumentId]) -> BTreeMap<DocumentId, SurveyDocument> {
    let mut mine: BTreeMap<DocumentId, SurveyDocument> = ids
        .iter()
        .map(|id| (id.clone(), SurveyDocument::create(id.clone(), device_actor("tablet-a", [1; 8]))))
        .collect();
    for (n, doc) in mine.values_mut().enumerate() {
        for h in 0..60 {
            let t = hh(&format!("hh-{n}{h:02}"));
            let edits = [
                Edit::set(t.clone(), "members", FieldValue::Int(5)),
                Edit::set(t, "adults", FieldValue::Int(3)),
            ];
            doc.apply(&edits, h).unwrap();
        }
    }
    mine
}

/// How many changes after their genesis the documents hold in all.
fn history_after_genesis(docs: &BTreeMap<DocumentId, SurveyDocument>) -> usize {
    docs.values().map(|d| d.automerge().get_changes(&[]).len() - 1).sum()
}

/// Both sides hold the same version of every document of `mine`.
fn assert_converged(
    mine: &BTreeMap<DocumentId, SurveyDocument>,
    theirs: &BTreeMap<DocumentId, SurveyDocument>,
) {
    for (id, doc) in mine {
        assert_eq!(doc.heads(), theirs[id].heads(), "{id}");
    }
}

/// A peer speaking automerge's sync protocol as it comes (a stock client,
/// no Thôn Sync exchange): both sides hold each document's genesis from the
/// start, and the hub counts it as shared once the peer's first message
/// shows it, so its first Bloom filter covers nothing the peer could have.
/// The peer withholds no change for a false "maybe", and nothing waits a
/// round for one: each village's history arrives whole in one round. (With
/// a filter covering the genesis, some household genesis of most of these
/// villages is withheld, and the changes after it wait.)
#[test]
fn a_stock_peers_first_upload_arrives_whole_in_one_round() {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let ids: Vec<DocumentId> = (1..=9).map(village).collect();
    let mut theirs = hub_docs(&ids);
    let mut mine = surveyed_offline(&ids);
    let mut sessions: BTreeMap<DocumentId, DocSession> =
        ids.iter().map(|id| (id.clone(), DocSession::resume(None))).collect();
    let mut hub = HubExchange::new(PeerId::new("tablet-a").unwrap(), "x-1".into(), 16, 32);
    let mut stored_per_round = Vec::new();
    for round in 1..=8 {
        let messages: Vec<(DocumentId, Option<String>)> = ids
            .iter()
            .map(|id| (id.clone(), sessions.get_mut(id).unwrap().generate(&mine[id]).map(|m| b64.encode(m))))
            .collect();
        let (out, _) = play(&mut hub, &mut theirs, &request(round, &messages)).unwrap();
        assert!(out.refusals.is_empty(), "{:?}", out.refusals);
        assert_eq!(out.waiting, 0, "round {round}: changes wait for a dependency the peer withheld");
        stored_per_round.push(out.batch.changes.len());
        let (_, response) = hub.finish(out, None);
        let mut said = false;
        for reply in response.documents {
            let Some(m) = reply.message else { continue };
            let id: DocumentId = reply.document.parse().unwrap();
            let bytes = b64.decode(m).unwrap();
            sessions.get_mut(&id).unwrap().receive(mine.get_mut(&id).unwrap(), &bytes, Trust::Peer).unwrap();
            said = true;
        }
        if !said && messages.iter().all(|(_, m)| m.is_none()) {
            break;
        }
    }
    let history = history_after_genesis(&mine);
    let uploads: Vec<&usize> = stored_per_round.iter().filter(|n| **n > 0).collect();
    assert_eq!(uploads, [&history], "changes stored per round: {stored_per_round:?}");
    assert_converged(&mine, &theirs);
}

/// A device's exchange opens each document it never synced as if the hub
/// had said it holds the genesis alone: the first round carries every
/// village's whole history, the second only confirms it.
#[test]
fn a_devices_first_upload_goes_in_its_first_round() {
    let ids: Vec<DocumentId> = (1..=9).map(village).collect();
    let mut theirs = hub_docs(&ids);
    let mut mine = surveyed_offline(&ids);
    let played = sync("tablet-a", &mut mine, &mut theirs);
    let history = history_after_genesis(&mine);
    assert_eq!(played.stored, [history, 0], "changes stored per round");
    assert!(played.waiting.iter().all(|n| *n == 0) && played.refused.is_empty(), "{played:?}");
    assert_converged(&mine, &theirs);
}

/// A device that holds no copy of a document yet (a village another
/// surveyor recorded) has no genesis to open its session on: it asks for
/// everything as automerge does and gets the hub's whole document in its
/// first exchange.
#[test]
fn a_device_without_a_copy_gets_the_whole_document_in_its_first_exchange() {
    let ids: Vec<DocumentId> = (1..=3).map(village).collect();
    let mut theirs = surveyed_offline(&ids);
    let mut mine: BTreeMap<DocumentId, SurveyDocument> = ids
        .iter()
        .map(|id| (id.clone(), SurveyDocument::empty(id.clone(), device_actor("tablet-b", [2; 8]))))
        .collect();
    let played = sync("tablet-b", &mut mine, &mut theirs);
    assert!(played.stored.iter().all(|n| *n == 0), "the device had nothing to give: {played:?}");
    assert!(played.stored.len() <= 3, "{played:?}");
    assert_converged(&mine, &theirs);
}

/// A device's last change, a field of `hh-001`, and its message (base64)
/// for `id` carrying that change alone, without the household's genesis it
/// depends on.
fn last_change_alone(id: &DocumentId) -> (sync_core::automerge::Change, String) {
    let mut dev = SurveyDocument::create(id.clone(), device_actor("tablet-a", [1; 8]));
    dev.apply(&[Edit::set(hh("hh-001"), "members", FieldValue::Int(5))], 1).unwrap();
    let last = dev.automerge().get_last_local_change().unwrap().clone();
    let only_last = Message {
        heads: vec![last.hash()],
        need: vec![],
        have: vec![],
        changes: vec![last.raw_bytes().to_vec()].into(),
        flags: None,
        version: MessageVersion::V1,
    }
    .encode();
    use base64::Engine as _;
    (last, base64::engine::general_purpose::STANDARD.encode(only_last))
}

#[test]
fn a_resumed_exchange_keeps_the_changes_its_old_sessions_held_waiting() {
    let id = village(6);
    let mut docs = hub_docs(std::slice::from_ref(&id));
    let (last, text) = last_change_alone(&id);
    let mut hub = HubExchange::new(PeerId::new("tablet-a").unwrap(), "x-1".into(), 8, 8);
    let (out, _) = play(&mut hub, &mut docs, &request(1, &[(id.clone(), Some(text))])).unwrap();
    assert_eq!(out.waiting, 1);
    hub.finish(out, None);
    let (out, _) = play(&mut hub, &mut docs, &request(4, &[(id.clone(), None)])).unwrap();
    assert_eq!(out.waiting, 0, "the sessions started again from the store");
    assert_eq!(out.batch.refused.len(), 1);
    assert_eq!(out.batch.refused[0].code, RefusalCode::WaitingExpired);
    assert_eq!(out.batch.refused[0].bytes, last.raw_bytes());
    assert_eq!(hub.finish(out, None).0, 200, "kept, not a refusal of the round");
}

#[test]
fn an_exchange_holds_a_bounded_number_of_documents() {
    let ids: Vec<DocumentId> = (1..=3).map(village).collect();
    let mut docs = hub_docs(&ids);
    let mut hub = HubExchange::new(PeerId::new("tablet-a").unwrap(), "x-1".into(), 2, 8);
    let all: Vec<(DocumentId, Option<String>)> = ids.iter().map(|id| (id.clone(), None)).collect();
    assert_eq!(
        play(&mut hub, &mut docs, &request(1, &all)).unwrap_err(),
        HubError::TooManyDocuments { max: 2 }
    );
    assert!(hub.documents().is_empty(), "nothing of the round was taken");
}

#[test]
fn undecodable_and_unknown_documents_are_refused_and_kept_each_on_its_own() {
    let mut docs = hub_docs(&[village(1)]);
    let mut hub = HubExchange::new(PeerId::new("tablet-a").unwrap(), "x-1".into(), 8, 8);
    let unknown: DocumentId = "village:song-cau-01:2024-1".parse().unwrap();
    let req =
        request(1, &[(village(1), Some("not base64!".into())), (unknown.clone(), Some("QgAAAA==".into()))]);
    let (out, _) = play(&mut hub, &mut docs, &req).unwrap();
    let codes: Vec<RefusalCode> = out.batch.refused.iter().map(|r| r.code).collect();
    assert_eq!(codes, vec![RefusalCode::Undecodable, RefusalCode::UnknownDocument]);
    assert_eq!(out.batch.refused[0].bytes, b"not base64!");
    assert_eq!(out.batch.refused[0].source.as_deref(), Some("tablet-a"));
    assert!(!hub.documents().contains(&unknown), "an unknown document gets no session");
    let (status, response) = hub.finish(out, Some(40));
    assert_eq!(status, 422, "every message was refused");
    let kept: Vec<Option<i64>> =
        response.documents.iter().map(|d| d.error.as_ref().and_then(|e| e.refused_upload)).collect();
    assert_eq!(kept, vec![Some(40), Some(41)]);
}

/// What a device's exchange did, round by round.
#[derive(Debug, Default)]
struct Played {
    /// The documents refused, with their codes.
    refused: Vec<(DocumentId, ErrorCode)>,
    /// Changes the hub stored in each round.
    stored: Vec<usize>,
    /// Changes waiting at the hub after each round.
    waiting: Vec<usize>,
}

/// A device (no stored sync states) and the hub, both on the engine, until
/// the device is done.
fn sync(
    device: &str,
    mine: &mut BTreeMap<DocumentId, SurveyDocument>,
    theirs: &mut BTreeMap<DocumentId, SurveyDocument>,
) -> Played {
    let server = PeerId::new("server").unwrap();
    let states = mine.keys().map(|id| (id.clone(), None));
    let mut client = ClientExchange::new("x-1".into(), Some(device.into()), server, states, 1 << 20);
    let mut hub = HubExchange::new(PeerId::new(device).unwrap(), "x-1".into(), 16, 32);
    let mut played = Played::default();
    while let Some(req) = client.poll_request(mine).unwrap() {
        let (out, _) = play(&mut hub, theirs, &req).unwrap();
        played.stored.push(out.batch.changes.len());
        played.waiting.push(out.waiting);
        let (_, response) = hub.finish(out, Some(1));
        let round = client.handle_response(mine, response).unwrap();
        played.refused.extend(round.refused.into_iter().map(|(id, e)| (id, e.code)));
    }
    played
}

#[test]
fn a_refused_document_is_set_aside_and_starts_over_from_the_hubs_version() {
    let id = village(2);
    let mut theirs = hub_docs(std::slice::from_ref(&id));
    // Another device's accepted work is on the hub.
    let mut b =
        BTreeMap::from([(id.clone(), SurveyDocument::create(id.clone(), device_actor("tablet-b", [1; 8])))]);
    b.get_mut(&id).unwrap().apply(&[Edit::set(hh("hh-001"), "members", FieldValue::Int(5))], 1).unwrap();
    assert!(sync("tablet-b", &mut b, &mut theirs).refused.is_empty());
    // This device writes under another device's actor: refused.
    let mut mine =
        BTreeMap::from([(id.clone(), SurveyDocument::create(id.clone(), device_actor("tablet-b", [2; 8])))]);
    mine.get_mut(&id).unwrap().apply(&[Edit::set(hh("hh-002"), "members", FieldValue::Int(2))], 2).unwrap();
    let refused = sync("tablet-a", &mut mine, &mut theirs).refused;
    assert_eq!(refused, vec![(id.clone(), ErrorCode::ActorConflict)]);
    // Recovery: the local version is kept, the document starts over and syncs.
    let aside = set_aside(&mine[&id], device_actor("tablet-a", [3; 8]));
    let kept =
        SurveyDocument::load(id.clone(), ActorId::random(), Some(&aside.local_version), std::iter::empty())
            .unwrap();
    assert_eq!(kept.heads(), mine[&id].heads());
    mine.insert(id.clone(), aside.fresh);
    assert!(sync("tablet-a", &mut mine, &mut theirs).refused.is_empty());
    assert_eq!(mine[&id].heads(), theirs[&id].heads());
    mine.get_mut(&id).unwrap().apply(&[Edit::set(hh("hh-002"), "members", FieldValue::Int(2))], 3).unwrap();
    assert!(sync("tablet-a", &mut mine, &mut theirs).refused.is_empty());
    assert_eq!(mine[&id].snapshot(None).unwrap(), theirs[&id].snapshot(None).unwrap());
}

#[test]
fn changes_still_waiting_when_an_exchange_ends_are_kept() {
    let id = village(3);
    let mut docs = hub_docs(std::slice::from_ref(&id));
    let (last, text) = last_change_alone(&id);
    let mut hub = HubExchange::new(PeerId::new("tablet-a").unwrap(), "x-1".into(), 8, 8);
    let (out, _) = play(&mut hub, &mut docs, &request(1, &[(id.clone(), Some(text))])).unwrap();
    assert!(out.batch.changes.is_empty() && out.refusals.is_empty());
    assert_eq!((out.waiting, hub.waiting()), (1, 1));
    hub.finish(out, None);
    let ended = hub.end(99);
    assert_eq!(ended.refused.len(), 1);
    assert_eq!(ended.refused[0].code, RefusalCode::WaitingExpired);
    assert_eq!(ended.refused[0].bytes, last.raw_bytes());
    assert_eq!(hub.waiting(), 0);
}

#[test]
fn an_answer_for_another_round_is_not_taken() {
    let id = village(4);
    let mut mine =
        BTreeMap::from([(id.clone(), SurveyDocument::create(id.clone(), device_actor("tablet-a", [1; 8])))]);
    let mut client = ClientExchange::new(
        "x-1".into(),
        None,
        PeerId::new("server").unwrap(),
        [(id.clone(), None)],
        1 << 20,
    );
    client.poll_request(&mine).unwrap().unwrap();
    let stale = SyncResponse { exchange: "x-1".into(), round: 7, documents: vec![], error: None };
    assert!(client.handle_response(&mut mine, stale).is_err());
}

/// A hub whose documents are all in memory: their heads are at hand.
struct Loaded<'a>(&'a BTreeMap<DocumentId, SurveyDocument>);

impl HubEnv for Loaded<'_> {
    fn is_known(&self, id: &DocumentId) -> Result<bool, String> {
        Env.is_known(id)
    }
    fn persisted_state(&self, _: &DocumentId) -> Result<Option<Vec<u8>>, String> {
        Ok(None)
    }
    fn legacy_owner(&self, _: &str) -> Result<Option<String>, String> {
        Ok(None)
    }
    fn current_heads(&self, id: &DocumentId) -> Option<Vec<sync_core::automerge::ChangeHash>> {
        self.0.get(id).map(SurveyDocument::heads)
    }
}

#[test]
fn documents_in_step_cost_a_digest_and_are_left_alone() {
    let ids: Vec<DocumentId> = (1..=6).map(village).collect();
    let mut theirs = hub_docs(&ids);
    let actor = device_actor("tablet-a", [1; 8]);
    let mut mine: BTreeMap<DocumentId, SurveyDocument> =
        ids.iter().map(|id| (id.clone(), SurveyDocument::create(id.clone(), actor.clone()))).collect();
    let server = PeerId::new("server").unwrap();
    let mut states: BTreeMap<DocumentId, Vec<u8>> = BTreeMap::new();
    // Runs one exchange; returns the documents that carried a sync message
    // from the device, and how many the hub locked at most in a round.
    let exchange = |mine: &mut BTreeMap<DocumentId, SurveyDocument>,
                    theirs: &mut BTreeMap<DocumentId, SurveyDocument>,
                    states: &mut BTreeMap<DocumentId, Vec<u8>>| {
        let saved = ids.iter().map(|id| (id.clone(), states.get(id).cloned()));
        let mut client = ClientExchange::new("x-1".into(), None, server.clone(), saved, 1 << 20);
        let mut hub = HubExchange::new(PeerId::new("tablet-a").unwrap(), "x-1".into(), 8, 32);
        let (mut spoken, mut touched) = (BTreeSet::new(), 0);
        while let Some(req) = client.poll_request(mine).unwrap() {
            spoken.extend(req.documents.iter().filter(|d| d.message.is_some()).map(|d| d.document.clone()));
            let named: Vec<DocumentId> = req.documents.iter().map(|d| d.document.parse().unwrap()).collect();
            let round = match hub.begin(&req, &named, &Loaded(theirs), 7).unwrap() {
                Begin::Round(r) => r,
                Begin::Replay(..) => unreachable!(),
            };
            touched = touched.max(hub.documents().len());
            let mut view: BTreeMap<DocumentId, &mut SurveyDocument> = theirs
                .iter_mut()
                .filter(|(k, _)| hub.documents().contains(k))
                .map(|(k, v)| (k.clone(), v))
                .collect();
            let out = hub.apply(round, &mut view, &InputLimits::default(), 0, &Env).unwrap();
            let (_, response) = hub.finish(out, None);
            let done = client.handle_response(mine, response).unwrap();
            for (_, doc, state) in done.batch.sync_states {
                states.insert(doc, state);
            }
        }
        (spoken, touched)
    };
    let (spoken, touched) = exchange(&mut mine, &mut theirs, &mut states);
    assert_eq!((spoken.len(), touched), (6, 6), "a first exchange plays every document");
    // One edit on the device: only that document is played; the five others cost a digest each.
    mine.get_mut(&village(3))
        .unwrap()
        .apply(&[Edit::set(hh("hh-001"), "members", FieldValue::Int(2))], 9)
        .unwrap();
    let (spoken, touched) = exchange(&mut mine, &mut theirs, &mut states);
    assert_eq!(touched, 1, "only the edited document is loaded and locked");
    assert_eq!(spoken, BTreeSet::from([village(3).to_string()]), "the others sent a digest, no message");
    assert_eq!(theirs[&village(3)].heads(), mine[&village(3)].heads());
    // News on the hub: a digest no longer matches, so the document is played and the news arrives.
    theirs
        .get_mut(&village(5))
        .unwrap()
        .apply(&[Edit::set(hh("hh-002"), "members", FieldValue::Int(4))], 9)
        .unwrap();
    let (_, touched) = exchange(&mut mine, &mut theirs, &mut states);
    assert_eq!(touched, 1);
    assert_eq!(mine[&village(5)].heads(), theirs[&village(5)].heads(), "the hub's news reached the device");
    let (_, touched) = exchange(&mut mine, &mut theirs, &mut states);
    assert_eq!(touched, 0, "all in step: nothing is touched");
}

/// A round of three documents whose messages each bring changes that must
/// wait (their household genesis is left out), played with the documents
/// judged one after another (`apply`) and with every judgement run before
/// any is concluded (as the server runs them at once): the device's
/// allowance of waiting changes holds exactly the same, document by
/// document, and so does everything else the round produced.
#[test]
fn judging_a_rounds_documents_at_once_keeps_the_waiting_allowance_exact() {
    use base64::Engine as _;
    use sync_core::exchange::Prepared;
    let ids: Vec<DocumentId> = (1..=3).map(village).collect();
    // Two may wait per document, three over the device: the first document
    // keeps two, the second may keep only one and is refused, the third
    // (one waiting change) fits in what is left.
    let limits =
        InputLimits { max_waiting_per_document: 2, max_waiting_per_device: 3, ..InputLimits::default() };
    let mut messages = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        let mut dev = SurveyDocument::create(id.clone(), device_actor("tablet-a", [1; 8]));
        let edits = if n == 2 { 1 } else { 2 };
        for v in 0..edits {
            dev.apply(&[Edit::set(hh("hh-001"), "members", FieldValue::Int(v))], 1 + v).unwrap();
        }
        let changes = dev.automerge().get_changes(&[]);
        let waiting: Vec<_> = changes[2..].to_vec(); // after the document and household geneses
        assert_eq!(waiting.len(), edits as usize);
        let message = Message {
            heads: vec![waiting.last().unwrap().hash()],
            need: vec![],
            have: vec![],
            changes: waiting.iter().map(|c| c.raw_bytes().to_vec()).collect::<Vec<_>>().into(),
            flags: None,
            version: MessageVersion::V1,
        }
        .encode();
        messages.push((id.clone(), Some(base64::engine::general_purpose::STANDARD.encode(message))));
    }
    let req = request(1, &messages);

    let in_turn = {
        let mut docs = hub_docs(&ids);
        let mut hub = HubExchange::new(PeerId::new("tablet-a").unwrap(), "x-1".into(), 8, 8);
        let Begin::Round(round) = hub.begin(&req, &ids, &Env, 7).unwrap() else { panic!("a round") };
        let mut view: BTreeMap<DocumentId, &mut SurveyDocument> =
            docs.iter_mut().map(|(k, v)| (k.clone(), v)).collect();
        let out = hub.apply(round, &mut view, &limits, 0, &Env).unwrap();
        (
            out.waiting,
            out.batch.refused.iter().map(|r| r.document.clone()).collect::<Vec<_>>(),
            hub.finish(out, None),
        )
    };
    let at_once = {
        let mut docs = hub_docs(&ids);
        let mut hub = HubExchange::new(PeerId::new("tablet-a").unwrap(), "x-1".into(), 8, 8);
        let Begin::Round(mut round) = hub.begin(&req, &ids, &Env, 7).unwrap() else { panic!("a round") };
        let prepared: Vec<Prepared> =
            ids.iter().map(|id| hub.prepare(&mut round, id, &limits, 0, &Env).unwrap()).collect();
        let verdicts: Vec<_> = prepared
            .iter()
            .zip(&ids)
            .map(|(p, id)| match p {
                Prepared::Judge(j) => j.run(&docs[id], &Env),
                other => panic!("every document has a message, got {other:?}"),
            })
            .collect();
        // Run before any is concluded, each judgement saw only its own
        // document's bound: the second document's two changes passed.
        assert!(verdicts.iter().all(Result::is_ok), "{verdicts:?}");
        for ((p, verdict), id) in prepared.into_iter().zip(verdicts).zip(&ids) {
            let Prepared::Judge(j) = p else { unreachable!() };
            hub.conclude(&mut round, *j, verdict, docs.get_mut(id).unwrap(), 0);
        }
        let out = hub.close(round);
        (
            out.waiting,
            out.batch.refused.iter().map(|r| r.document.clone()).collect::<Vec<_>>(),
            hub.finish(out, None),
        )
    };
    assert_eq!(in_turn.0, 3, "two waiting in the first document, one in the third");
    assert_eq!(in_turn.1, vec![Some(ids[1].to_string())], "the second document is refused");
    assert_eq!(at_once.0, in_turn.0);
    assert_eq!(at_once.1, in_turn.1);
    assert_eq!(serde_json::to_value(&at_once.2).unwrap(), serde_json::to_value(&in_turn.2).unwrap());
    let refusal = &in_turn.2 .1.documents[1].error.as_ref().expect("refused").clone();
    assert_eq!(refusal.code, ErrorCode::WaitingLimit);
}
