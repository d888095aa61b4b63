//! The sans-IO sync engine: automerge's sync protocol, one session per
//! (peer, document), with validation in front of every incoming change.
//!
//! Nothing here reads a clock, a socket or a disk. Callers hand in the bytes
//! a peer sent and the document they are about; they get back the changes to
//! store (a [`Received`]), the sync state to persist ([`DocSession::persisted`])
//! and the bytes to send ([`DocSession::generate`]). That makes every
//! exchange replayable from a seed in tests.
//!
//! **Invariant: every byte handed in is accounted for.** A message is
//! decoded, re-encoded and compared with what arrived; each change chunk
//! must parse whole. Anything else is a [`Refusal`], which callers keep
//! aside as a refused upload, never silently drop.
//!
//! **Invariant: a refused message changes nothing.** With
//! [`Trust::Validate`] the message is received into a fork with a copy of
//! the session state; only when every new change passes the input checks
//! ([`crate::inbound`]), the admission check and the type rules (and, on
//! the hub, the reply was made) do the fork, the state and the waiting
//! changes replace the originals.
//!
//! **Invariant: a waiting change belongs to its sender's session.** A
//! change whose dependencies are missing never enters the shared document;
//! it applies only in a later round of the session that received it.

use std::collections::{HashMap, HashSet};

use automerge::legacy::{ObjectId, OpId};
use automerge::sync::{Message, State, SyncDoc};
use automerge::{Automerge, Change, ChangeHash, ReadDoc};
use serde::{Deserialize, Serialize};

use crate::ids::DocumentId;
pub use crate::inbound::InputLimits;
use crate::inbound::{check_message, contained, Inbound};
use crate::survey::SurveyDocument;
use crate::validate::{check_change_among, RuleBreach};

/// Most rounds one exchange may take before the caller must stop it. Two
/// replicas converge in 2–4 rounds; lost messages or Bloom false positives
/// add a few.
pub const MAX_ROUNDS: u32 = 16;

/// Whether incoming changes are checked against the type rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trust {
    /// Check every change (the server, receiving from devices).
    Validate,
    /// Apply as received (a device, receiving from its server).
    Peer,
}

/// A change that must be stored durably before the exchange is acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeRecord {
    /// Document it belongs to.
    pub document: DocumentId,
    /// Change hash, hex.
    pub hash: String,
    /// The change's encoded bytes (`Change::try_from` reads them back).
    pub bytes: Vec<u8>,
    /// Actor that made it, hex.
    pub actor: String,
    /// Its sequence number for that actor.
    pub seq: u64,
    /// The time its author stamped on it, ms since 1970.
    pub time: i64,
    /// A deterministic genesis change (document or household), made by an
    /// actor derived from ids rather than by a device: many replicas make it,
    /// so it is never attributed to, or bound to, one surveyor.
    pub structural: bool,
}

impl ChangeRecord {
    /// Builds the record of one change.
    pub fn new(document: &DocumentId, change: Change) -> Self {
        Self::with_structural(document, crate::survey::is_structural(document, &change), change)
    }

    /// Builds the record of one change of `doc`, recognising its genesis
    /// changes with the document's own [`crate::survey::Genesis`].
    pub fn of(doc: &SurveyDocument, change: Change) -> Self {
        Self::with_structural(doc.id(), doc.genesis().is_structural(&change), change)
    }

    fn with_structural(document: &DocumentId, structural: bool, change: Change) -> Self {
        Self {
            structural,
            document: document.clone(),
            hash: change.hash().to_string(),
            actor: change.actor_id().to_hex_string(),
            seq: change.seq(),
            time: change.timestamp(),
            bytes: change.raw_bytes().to_vec(),
        }
    }
}

/// Machine-readable reason for a refusal; the wire error codes reuse these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalCode {
    /// The bytes are not an automerge sync message.
    Undecodable,
    /// A valid message followed by bytes that belong to nothing.
    TrailingBytes,
    /// A change chunk inside the message does not parse.
    BadChange,
    /// A change breaks a type rule of the survey model.
    RuleBroken,
    /// The message is for a document this replica does not know (not in its registry).
    UnknownDocument,
    /// The caller's admission check turned a change away.
    NotAdmitted,
    /// A change's actor id is not the uploading device's: another device's
    /// actor, a derived (genesis) actor writing anything but its genesis, or
    /// an actor of no device.
    ActorConflict,
    /// More fresh actor ids in one message than a device ever needs.
    TooManyActors,
    /// A `have` Bloom filter with parameters automerge never writes, more
    /// than one filter, or a hash list out of order or with a hash twice.
    BadFilter,
    /// Change data that inflates past the limit, or a change whose commit
    /// message or extra bytes are over theirs.
    TooLarge,
    /// Changes waiting for a dependency over the per-document or per-device limit.
    WaitingLimit,
    /// Changes that waited for a dependency that never came (the exchange
    /// ended or expired); kept here instead of being dropped.
    WaitingExpired,
}

/// Why an incoming message was refused. The caller keeps the bytes aside.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{document}: {message}")]
pub struct Refusal {
    /// Kind of refusal.
    pub code: RefusalCode,
    /// The document the message was for.
    pub document: DocumentId,
    /// For person.
    pub message: String,
    /// The broken rule, for [`RefusalCode::RuleBroken`].
    pub breach: Option<RuleBreach>,
}

/// What receiving one message did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// Changes now in the document that were not before: store them.
    pub new_changes: Vec<ChangeRecord>,
    /// Changes of this peer waiting for a dependency, held in its session
    /// (never in the shared document, never stored): they apply only in this
    /// session's later rounds, judged and attributed as this peer's.
    pub pending: usize,
    /// Device actors (hex) among the new changes, to record the binding of
    /// each to its device in the same commit.
    pub actors: Vec<String>,
    /// The reply to send, generated from the new state before anything was
    /// kept (only from [`DocSession::receive_from`]).
    pub reply: Option<Vec<u8>>,
}

/// A message judged on the hub and found acceptable, not yet kept
/// ([`DocSession::judge_from`]): the caller keeps it with
/// [`DocSession::keep`], or drops it and nothing changed.
#[derive(Debug)]
pub struct Judged {
    /// What receiving the message does.
    pub received: Received,
    /// The document with the message's changes applied.
    pub doc: SurveyDocument,
    /// The session after the message.
    pub session: DocSession,
    /// Changes the message brought that wait for a dependency.
    pub newly_waiting: usize,
}

impl Refusal {
    /// The refusal of a message that would leave `waiting` changes waiting
    /// for a dependency in `document`, `newly` of them its own, when at most
    /// `allowance` may wait there (and never more than the limits' per
    /// document): none for a message that adds no waiting change.
    pub fn for_waiting(
        document: &DocumentId,
        newly: usize,
        waiting: usize,
        allowance: usize,
        limits: &InputLimits,
    ) -> Option<Self> {
        (newly > 0 && waiting > allowance.min(limits.max_waiting_per_document)).then(|| Refusal {
            code: RefusalCode::WaitingLimit,
            document: document.clone(),
            message: format!(
                "{waiting} changes would wait for dependencies this document does not have; at most {} may wait in one document, {} over all of a device's exchanges",
                limits.max_waiting_per_document, limits.max_waiting_per_device
            ),
            breach: None,
        })
    }
}

/// A check run on every change a message brings, before anything applies.
type Admit<'a> = dyn FnMut(&ChangeRecord) -> Result<(), (RefusalCode, String)> + 'a;

/// Who sent a message to the hub, and the limits their input is held to.
pub struct Uploader<'a> {
    /// The device whose token the message came with.
    pub device: &'a str,
    /// Bounds on the input.
    pub limits: &'a InputLimits,
    /// The device a legacy actor (not of the device shape, see
    /// [`crate::actors`]) is bound to in the store, if any.
    pub legacy_owner: &'a dyn Fn(&str) -> Result<Option<String>, String>,
}

impl Uploader<'_> {
    /// Whether the uploader may write under `record`'s actor.
    fn admit(&self, record: &ChangeRecord) -> Result<(), (RefusalCode, String)> {
        if record.structural {
            return Ok(());
        }
        let conflict = |why: String| Err((RefusalCode::ActorConflict, why));
        let (actor, hash) = (&record.actor, &record.hash);
        match crate::actors::hex_actor_device(actor) {
            Some(d) if d == self.device => Ok(()),
            Some(other) => conflict(format!(
                "change {hash} is written under actor {actor}, which is device {other}'s; a device uploads only its own changes"
            )),
            None => match (self.legacy_owner)(actor) {
                Ok(Some(d)) if d == self.device => Ok(()),
                Ok(Some(other)) => {
                    conflict(format!("change {hash} is written under actor {actor}, which is bound to device {other}"))
                }
                Ok(None) => conflict(format!(
                    "change {hash} is written under actor {actor}, which is no device's: a derived (genesis) \
                     actor writes only its genesis, and a device writes under its own device actor \
                     (tsd/<device>/<instance>)"
                )),
                Err(e) => Err((RefusalCode::NotAdmitted, format!("the actor of change {hash} could not be checked: {e}"))),
            },
        }
    }
}

/// One peer's sync session for one document.
#[derive(Debug, Clone, Default)]
pub struct DocSession {
    state: State,
    /// Changes this peer sent that wait for a dependency, in arrival order.
    waiting: Vec<Change>,
    /// Whether the next message asks the peer to send again ([`DocSession::ask_to_resend`]).
    resend: bool,
}

impl DocSession {
    /// A fresh session, seeded with the shared heads persisted from an
    /// earlier exchange (if any), so only the difference since then moves.
    ///
    /// Sessions always start fresh from the persisted heads: a session state
    /// left over from an exchange that was cut can stall (see the notes on
    /// lost messages), a fresh one cannot.
    pub fn resume(persisted: Option<&[u8]>) -> Self {
        let state = persisted.and_then(|b| State::decode(b).ok()).unwrap_or_default();
        Self { state, waiting: Vec::new(), resend: false }
    }

    /// Makes the hub's next message ask the peer to forget what it believes
    /// it sent in this session, so it sends again whatever this side still
    /// lacks: for a session resumed in the middle of the peer's exchange,
    /// whose earlier rounds another hub played (changes that waited for a
    /// dependency there are not here). Only a message made while the peer's
    /// heads name a change this side lacks asks. It says so the way
    /// automerge's sync protocol has for a peer that lost its data: empty
    /// heads (the hub sends no flags, see [`DocSession::try_generate`]). The
    /// peer then forgets its shared heads too, so its next exchange of this
    /// document offers a Bloom filter of every change: more bytes, once.
    pub fn ask_to_resend(&mut self) {
        self.resend = true;
    }

    /// Opens a session that shares nothing yet with a hub as if the hub had
    /// already said that it holds the document's genesis and nothing after
    /// it. Every hub holds the genesis of every document it serves (it makes
    /// it; it refuses a document it does not know), so the first message
    /// carries every change after the genesis instead of a round spent
    /// learning what the hub has. A hub that holds more says so in its
    /// answer, and the session goes on from there; one that already held
    /// some of these changes keeps them once.
    ///
    /// Only for a session that shares nothing yet, of a document this side
    /// holds the genesis of (a copy still empty asks for everything as usual).
    pub fn open_on_genesis(&mut self, doc: &SurveyDocument) {
        let genesis = doc.genesis().hash();
        let fresh = self.state.shared_heads.is_empty() && self.state.their_heads.is_none();
        if !fresh || doc.automerge().get_change_meta_by_hash(&genesis).is_none() {
            return;
        }
        self.state.shared_heads = vec![genesis];
        self.state.their_heads = Some(vec![genesis]);
        self.state.their_need = Some(Vec::new());
        self.state.their_have =
            Some(vec![automerge::sync::Have { last_sync: vec![genesis], bloom: Default::default() }]);
    }

    /// The heads both sides are known to have.
    pub fn shared_heads(&self) -> &[ChangeHash] {
        &self.state.shared_heads
    }

    /// The part of the session worth keeping across exchanges: the heads
    /// both sides are known to have (about 34 bytes).
    pub fn persisted(&self) -> Vec<u8> {
        self.state.encode()
    }

    /// Changes of the peer waiting for a dependency in this session.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Takes the waiting changes out (the exchange ends: the caller keeps
    /// their bytes as refused uploads rather than drop them).
    pub fn take_waiting(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.waiting)
    }

    /// The next message to send for `doc`, or `None` when this side has
    /// nothing more to say.
    pub fn generate(&mut self, doc: &SurveyDocument) -> Option<Vec<u8>> {
        let message = doc.automerge().generate_sync_message(&mut self.state);
        self.ask_for_waiting(doc.automerge(), message)
    }

    /// [`DocSession::generate`] on the hub, where the session state holds
    /// what a peer said: a panic inside automerge is contained and the
    /// session is left as it was.
    pub fn try_generate(&mut self, doc: &SurveyDocument) -> Result<Option<Vec<u8>>, Refusal> {
        let mut state = self.state.clone();
        let am = doc.automerge();
        let message = contained(|| Ok(am.generate_sync_message(&mut state))).map_err(|reason| Refusal {
            code: RefusalCode::BadChange,
            document: doc.id().clone(),
            message: format!("the reply could not be made after this peer's messages: {reason}"),
            breach: None,
        })?;
        self.state = state;
        // The hub advertises no capabilities, so a device never sends it a
        // whole document in one chunk (a V2 message): every change arrives
        // as itself, ready to be judged, without loading a document to find it.
        // Asked only while the peer's heads name a change this side lacks
        // (one it may believe it sent): otherwise there is nothing to resend.
        let lacking = self
            .state
            .their_heads
            .as_ref()
            .is_some_and(|heads| heads.iter().any(|h| am.get_change_meta_by_hash(h).is_none()));
        let resend = self.resend && lacking && message.is_some();
        if resend || self.state.their_heads.is_some() && !lacking {
            self.resend = false;
        }
        let message = message.map(|mut m| {
            m.flags = None;
            if resend {
                m.heads = Vec::new();
            }
            m
        });
        Ok(self.ask_for_waiting(am, message))
    }

    /// Rewrites a reply so that it asks for the missing dependencies of the
    /// changes waiting here, never for the waiting changes themselves (the
    /// peer would resend them forever).
    fn ask_for_waiting(&self, doc: &Automerge, message: Option<Message>) -> Option<Vec<u8>> {
        if self.waiting.is_empty() {
            return message.map(Message::encode);
        }
        let waiting: HashSet<ChangeHash> = self.waiting.iter().map(Change::hash).collect();
        let mut missing: Vec<ChangeHash> = self
            .waiting
            .iter()
            .flat_map(|c| c.deps().iter().copied())
            .filter(|d| !waiting.contains(d) && doc.get_change_meta_by_hash(d).is_none())
            .collect();
        missing.sort();
        missing.dedup();
        let mut message = message.unwrap_or_else(|| Message {
            heads: doc.get_heads(),
            need: Vec::new(),
            have: Vec::new(),
            changes: Vec::<Vec<u8>>::new().into(),
            flags: None,
            version: automerge::sync::MessageVersion::V1,
        });
        message.need.retain(|h| !waiting.contains(h));
        message.need.extend(missing);
        message.need.sort();
        message.need.dedup();
        Some(message.encode())
    }

    /// Receives one message for `doc`.
    pub fn receive(
        &mut self,
        doc: &mut SurveyDocument,
        bytes: &[u8],
        trust: Trust,
    ) -> Result<Received, Refusal> {
        self.receive_admitting(doc, bytes, trust, |_| Ok(()))
    }

    /// Receives one message for `doc`, asking `admit` about every change it
    /// brings before anything is applied (with [`Trust::Validate`]); an
    /// `Err(reason)` refuses the whole message with [`RefusalCode::NotAdmitted`].
    /// Input is held to the default [`InputLimits`].
    pub fn receive_admitting(
        &mut self,
        doc: &mut SurveyDocument,
        bytes: &[u8],
        trust: Trust,
        mut admit: impl FnMut(&ChangeRecord) -> Result<(), String>,
    ) -> Result<Received, Refusal> {
        if trust == Trust::Peer {
            return self.receive_trusted(doc, bytes);
        }
        let limits = InputLimits::default();
        let mut admit = |r: &ChangeRecord| admit(r).map_err(|why| (RefusalCode::NotAdmitted, why));
        let judged = self.judge(doc, bytes, &limits, limits.max_waiting_per_document, &mut admit, false)?;
        Ok(self.keep(doc, judged))
    }

    /// Receives one message on the hub from `uploader`: the input checks of
    /// [`crate::inbound`], the actor rule of [`crate::actors`], the type
    /// rules, then the reply, all on a fork. One verdict for the message:
    /// either all of it is kept (its changes, its actors, its waiting
    /// changes, the new session state) or none of it is. At most
    /// `limits.max_waiting_per_document` of its changes may wait.
    pub fn receive_from(
        &mut self,
        doc: &mut SurveyDocument,
        bytes: &[u8],
        uploader: &Uploader<'_>,
    ) -> Result<Received, Refusal> {
        let judged = self.judge_from(doc, bytes, uploader, uploader.limits.max_waiting_per_document)?;
        Ok(self.keep(doc, judged))
    }

    /// [`DocSession::receive_from`] without keeping anything: the verdict on
    /// one message, with the document and session it would leave, so that
    /// the messages of many documents can be judged at once (on other
    /// threads: nothing here is mutated) and kept in order after. At most
    /// `allowance` changes may wait in this document after the message.
    pub fn judge_from(
        &self,
        doc: &SurveyDocument,
        bytes: &[u8],
        uploader: &Uploader<'_>,
        allowance: usize,
    ) -> Result<Judged, Refusal> {
        let mut actors: HashSet<String> = HashSet::new();
        let limit = uploader.limits.max_new_actors_per_message;
        let mut admit = |r: &ChangeRecord| {
            uploader.admit(r)?;
            if !r.structural && actors.insert(r.actor.clone()) && actors.len() > limit {
                return Err((
                    RefusalCode::TooManyActors,
                    format!(
                        "the message's changes use more than {limit} actor ids; a device needs one at a time"
                    ),
                ));
            }
            Ok(())
        };
        self.judge(doc, bytes, uploader.limits, allowance, &mut admit, true)
    }

    /// Keeps a judged message: the document and the session become what
    /// it left.
    pub fn keep(&mut self, doc: &mut SurveyDocument, judged: Judged) -> Received {
        *doc = judged.doc;
        *self = judged.session;
        judged.received
    }

    /// A device receiving from its server: applied as received, with
    /// automerge's panics contained all the same.
    fn receive_trusted(&mut self, doc: &mut SurveyDocument, bytes: &[u8]) -> Result<Received, Refusal> {
        let id = doc.id().clone();
        let refuse = |code, message: String| Refusal { code, document: id.clone(), message, breach: None };
        let message = Message::decode(bytes)
            .map_err(|e| refuse(RefusalCode::Undecodable, format!("not an automerge sync message: {e}")))?;
        let claimed = claimed_genesis(doc, &message);
        let mut state = self.state.clone();
        if message.changes.is_empty() {
            // Heads and filters only: the document stays as it is (automerge
            // applies nothing from such a message), so no fork is needed.
            let am = doc.automerge_mut();
            contained(|| am.receive_sync_message(&mut state, message).map_err(|e| e.to_string()))
                .map_err(|reason| refuse(RefusalCode::BadChange, reason))?;
            share_genesis(&mut state, doc.automerge(), claimed);
            self.state = state;
            return Ok(Received {
                pending: doc.automerge().get_missing_deps(&[]).len(),
                ..Received::default()
            });
        }
        let old_heads = doc.heads();
        let mut fork = doc.automerge().fork();
        let new = contained(|| {
            fork.receive_sync_message(&mut state, message).map_err(|e| e.to_string())?;
            Ok(fork.get_changes(&old_heads))
        })
        .map_err(|reason| refuse(RefusalCode::BadChange, reason))?;
        share_genesis(&mut state, &fork, claimed);
        let pending = fork.get_missing_deps(&[]).len();
        fork.set_actor(doc.automerge().get_actor().clone());
        *doc = doc.with_automerge(fork);
        self.state = state;
        Ok(Received {
            new_changes: new.into_iter().map(|c| ChangeRecord::of(doc, c)).collect(),
            pending,
            ..Received::default()
        })
    }

    fn judge(
        &self,
        doc: &SurveyDocument,
        bytes: &[u8],
        limits: &InputLimits,
        allowance: usize,
        admit: &mut Admit<'_>,
        reply: bool,
    ) -> Result<Judged, Refusal> {
        let id = doc.id().clone();
        let refuse = |code, message: String| Refusal { code, document: id.clone(), message, breach: None };
        let Inbound { message, changes: offered } =
            check_message(bytes, limits).map_err(|e| refuse(e.code, e.message))?;

        // What is new: the message's changes, then those already waiting here.
        let am = doc.automerge();
        let known = |h: &ChangeHash| am.get_change_meta_by_hash(h).is_some();
        let mut seen: HashSet<ChangeHash> = HashSet::new();
        let brought: Vec<Change> =
            offered.into_iter().filter(|c| !known(&c.hash()) && seen.insert(c.hash())).collect();
        let held = self.waiting.iter().filter(|c| !known(&c.hash()) && seen.insert(c.hash())).cloned();
        let brought_hashes: HashSet<ChangeHash> = brought.iter().map(Change::hash).collect();

        // Judge every change this message brought by its sender, now,
        // whether it applies now or waits.
        // (The records are kept: recognising a genesis is the costly part.)
        let mut records: HashMap<ChangeHash, ChangeRecord> = HashMap::with_capacity(brought.len());
        for change in &brought {
            let record = ChangeRecord::of(doc, change.clone());
            admit(&record).map_err(|(code, why)| refuse(code, why))?;
            records.insert(change.hash(), record);
        }
        let candidates: Vec<Change> = brought.into_iter().chain(held).collect();
        let (ready, waiting) = order_ready(candidates, known);
        let newly_waiting = waiting.iter().filter(|c| brought_hashes.contains(&c.hash())).count();
        if let Some(refusal) = Refusal::for_waiting(&id, newly_waiting, waiting.len(), allowance, limits) {
            return Err(refusal);
        }

        // Apply only what is ready, on a fork.
        let mut state = self.state.clone();
        let mut fork = doc.automerge().fork();
        let claimed = claimed_genesis(doc, &message);
        contained(|| {
            receive_parsed(&mut fork, &mut state, message, ready.clone()).map_err(|e| e.to_string())
        })
        .map_err(|reason| refuse(RefusalCode::BadChange, reason))?;
        share_genesis(&mut state, &fork, claimed);
        if let Some(dropped) = ready.iter().find(|c| fork.get_change_meta_by_hash(&c.hash()).is_none()) {
            return Err(refuse(
                RefusalCode::BadChange,
                format!(
                    "change {} parses but cannot be applied (its operations are damaged)",
                    dropped.hash()
                ),
            ));
        }
        let mut candidate = doc.with_automerge(fork);
        let new_changes: Vec<ChangeRecord> = ready
            .iter()
            .map(|c| records.remove(&c.hash()).unwrap_or_else(|| ChangeRecord::of(&candidate, c.clone())))
            .collect();
        // The record objects of the households whose genesis this message
        // brought: their edits are located without walking the document.
        let genesis_hash = candidate.genesis().hash();
        let households: HashSet<ObjectId> = ready
            .iter()
            .zip(&new_changes)
            .filter(|(c, r)| r.structural && c.hash() != genesis_hash)
            .map(|(c, _)| ObjectId::Id(OpId::new(c.start_op().get(), c.actor_id())))
            .collect();
        for (change, record) in ready.iter().zip(&new_changes) {
            if record.structural {
                continue; // a byte-identical genesis keeps every rule by construction
            }
            let verdict = contained(|| Ok(check_change_among(&candidate, change, &households)))
                .map_err(|reason| refuse(RefusalCode::BadChange, reason))?;
            if let Err(breach) = verdict {
                return Err(Refusal {
                    code: RefusalCode::RuleBroken,
                    document: id.clone(),
                    message: breach.to_string(),
                    breach: Some(breach),
                });
            }
        }
        candidate.automerge_mut().set_actor(doc.automerge().get_actor().clone());
        let mut next = DocSession { state, waiting, resend: self.resend };
        let reply = if reply { next.try_generate(&candidate)? } else { None };
        let mut actors: Vec<String> = new_changes
            .iter()
            .filter(|r| !r.structural && crate::actors::hex_actor_device(&r.actor).is_some())
            .map(|r| r.actor.clone())
            .collect();
        actors.sort();
        actors.dedup();
        let pending = next.waiting.len();
        Ok(Judged {
            received: Received { new_changes, pending, actors, reply },
            doc: candidate,
            session: next,
            newly_waiting,
        })
    }
}

/// `doc`'s genesis, if a peer's message shows that the peer holds it: among
/// its heads, or in what its `have` says it holds (the bloom filter may
/// err, rarely; see [`share_genesis`] for what an error costs).
fn claimed_genesis(doc: &SurveyDocument, message: &Message) -> Option<ChangeHash> {
    let genesis = doc.genesis().hash();
    let named = message.heads.contains(&genesis)
        || message.have.iter().any(|h| h.last_sync.contains(&genesis) || h.bloom.contains_hash(&genesis));
    named.then_some(genesis)
}

/// Counts a document's genesis as shared with a peer that holds it
/// (`claimed`, by [`claimed_genesis`]), when this side (`doc`) holds it too
/// (a copy still empty does not).
///
/// Every survey document begins with the one genesis change its id makes,
/// so both sides of a sync hold it from the start; automerge cannot know
/// that. A fresh sync state shares no heads, so the bloom filter it sends
/// covers the genesis alone, and a one-entry filter answers "maybe" for
/// about one change in 120: the peer withholds that change, every change
/// after it waits here a round for it, and the rest applies in a second,
/// costlier batch. With the genesis shared, the filter covers only what
/// came after it (nothing, on a first sync). A peer that claimed the
/// genesis without holding it answers with a sync reset and is sent
/// everything, as automerge does for any peer that lost its data.
fn share_genesis(state: &mut State, doc: &Automerge, claimed: Option<ChangeHash>) {
    let Some(genesis) = claimed else { return };
    if state.shared_heads.is_empty() && doc.get_change_meta_by_hash(&genesis).is_some() {
        state.shared_heads = vec![genesis];
    }
}

/// Receives `message` into `doc` as automerge's `receive_sync_message`
/// would if the message carried exactly `ready`, but applies those changes
/// as already parsed and checked (by [`crate::inbound`]) instead of
/// parsing their bytes a second time.
///
/// `ready` must be in dependency order, each change's dependencies known.
fn receive_parsed(
    doc: &mut Automerge,
    state: &mut State,
    message: Message,
    ready: Vec<Change>,
) -> Result<(), automerge::AutomergeError> {
    let heads_only = Message { changes: Vec::<Vec<u8>>::new().into(), ..message };
    if ready.is_empty() {
        return doc.receive_sync_message(state, heads_only);
    }
    let before: HashSet<ChangeHash> = doc.get_heads().into_iter().collect();
    doc.apply_changes(ready)?;
    let after = doc.get_heads();
    // What automerge does after applying a message's changes: the shared
    // heads advance by our new heads, keeping the old shared ones still heads.
    let mut shared: Vec<ChangeHash> = after
        .iter()
        .filter(|h| !before.contains(h))
        .chain(state.shared_heads.iter().filter(|h| after.contains(h)))
        .copied()
        .collect();
    shared.sort();
    shared.dedup();
    state.shared_heads = shared;
    // With changes in the message automerge never takes the sender's heads
    // as heads already sent to it; without them it does when they equal
    // ours, which they may now be. Keep what a message with changes keeps.
    let last_sent = std::mem::take(&mut state.last_sent_heads);
    doc.receive_sync_message(state, heads_only)?;
    state.last_sent_heads = last_sent;
    Ok(())
}

/// Splits changes into those that can apply now, in an order where each
/// comes after its dependencies, and those still missing one (Kahn's
/// algorithm: linear in changes and dependencies).
fn order_ready(candidates: Vec<Change>, known: impl Fn(&ChangeHash) -> bool) -> (Vec<Change>, Vec<Change>) {
    let index: HashMap<ChangeHash, usize> =
        candidates.iter().enumerate().map(|(i, c)| (c.hash(), i)).collect();
    let mut missing = vec![0usize; candidates.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); candidates.len()];
    let mut queue: Vec<usize> = Vec::new();
    for (i, change) in candidates.iter().enumerate() {
        for dep in change.deps() {
            if let Some(&j) = index.get(dep) {
                missing[i] += 1;
                dependents[j].push(i);
            } else if !known(dep) {
                missing[i] += 1; // not satisfiable in this round
            }
        }
        if missing[i] == 0 {
            queue.push(i);
        }
    }
    let mut order = Vec::with_capacity(candidates.len());
    while let Some(i) = queue.pop() {
        order.push(i);
        for &k in &dependents[i] {
            missing[k] -= 1;
            if missing[k] == 0 {
                queue.push(k);
            }
        }
    }
    let mut slots: Vec<Option<Change>> = candidates.into_iter().map(Some).collect();
    let ready: Vec<Change> = order.iter().filter_map(|&i| slots[i].take()).collect();
    let waiting: Vec<Change> = slots.into_iter().flatten().collect();
    (ready, waiting)
}
