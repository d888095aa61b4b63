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
//! the session state; only when every new change passes the type rules do
//! the fork and the state replace the originals.

use std::collections::BTreeMap;

use automerge::sync::{Message, State, SyncDoc};
use automerge::{Automerge, Change, ReadDoc};
use serde::{Deserialize, Serialize};

use crate::ids::DocumentId;
use crate::survey::SurveyDocument;
use crate::validate::{check_change, RuleBreach};

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
        Self {
            structural: crate::survey::is_structural(document, &change),
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
    /// entries than the document has changes, or more than one filter.
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
    /// Missing dependencies of changes that were received but cannot apply
    /// yet; those changes wait in the document's queue (unvalidated, never
    /// stored) and the peer is asked for what they need.
    pub pending: usize,
}

/// Automerge storage chunks start with these bytes.
const CHUNK_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];

/// Splits a run of concatenated automerge chunks (what a sync message's
/// `changes` carry and `load_incremental` reads) into whole chunks, refusing
/// anything that is not exactly a sequence of chunks: `load_incremental`
/// would silently drop such bytes.
fn split_chunks(mut bytes: &[u8]) -> Result<Vec<(u8, &[u8])>, String> {
    let mut chunks = Vec::new();
    while !bytes.is_empty() {
        let offset_note = || format!("at chunk {}", chunks.len());
        if bytes.len() < 9 || bytes[..4] != CHUNK_MAGIC {
            return Err(format!("bytes that are not an automerge chunk {}", offset_note()));
        }
        let kind = bytes[8];
        let (mut len, mut shift, mut pos) = (0u64, 0u32, 9usize);
        loop {
            let Some(&b) = bytes.get(pos) else {
                return Err(format!("truncated chunk header {}", offset_note()));
            };
            if shift > 56 {
                return Err(format!("chunk length too long {}", offset_note()));
            }
            len |= u64::from(b & 0x7f) << shift;
            shift += 7;
            pos += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        let end = usize::try_from(len).ok().and_then(|l| pos.checked_add(l)).filter(|&e| e <= bytes.len());
        let Some(end) = end else { return Err(format!("truncated chunk {}", offset_note())) };
        chunks.push((kind, &bytes[..end]));
        bytes = &bytes[end..];
    }
    Ok(chunks)
}

/// The changes one element of a sync message's change data carries,
/// checking that every byte belongs to a chunk that parses whole.
pub fn offered_changes(data: &[u8]) -> Result<Vec<Change>, String> {
    let mut out = Vec::new();
    for (kind, chunk) in split_chunks(data)? {
        match kind {
            1 | 2 => out.push(Change::try_from(chunk).map_err(|e| e.to_string())?),
            0 => out.extend(Automerge::load(chunk).map_err(|e| e.to_string())?.get_changes(&[])),
            3 => out.extend(
                automerge::Bundle::try_from(chunk)
                    .map_err(|e| e.to_string())?
                    .to_changes()
                    .map_err(|e| e.to_string())?,
            ),
            other => return Err(format!("unknown chunk type {other}")),
        }
    }
    Ok(out)
}

/// Runs automerge on untrusted input, turning a panic inside it (seen with
/// damaged bytes while fuzzing) into an error.
fn contained<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err("automerge failed on these bytes (they are damaged)".into()))
}

/// One peer's sync session for one document.
#[derive(Debug, Clone, Default)]
pub struct DocSession {
    state: State,
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
        Self { state }
    }

    /// The part of the session worth keeping across exchanges: the heads
    /// both sides are known to have (about 34 bytes).
    pub fn persisted(&self) -> Vec<u8> {
        self.state.encode()
    }

    /// The next message to send for `doc`, or `None` when this side has
    /// nothing more to say.
    pub fn generate(&mut self, doc: &SurveyDocument) -> Option<Vec<u8>> {
        doc.automerge().generate_sync_message(&mut self.state).map(Message::encode)
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

    /// Receives one message for `doc`, asking `admit` about every new change
    /// before anything is applied (with [`Trust::Validate`]); an `Err(reason)`
    /// refuses the whole message with [`RefusalCode::NotAdmitted`].
    pub fn receive_admitting(
        &mut self,
        doc: &mut SurveyDocument,
        bytes: &[u8],
        trust: Trust,
        mut admit: impl FnMut(&ChangeRecord) -> Result<(), String>,
    ) -> Result<Received, Refusal> {
        let id = doc.id().clone();
        let refuse = |code, message: String| Refusal { code, document: id.clone(), message, breach: None };
        let message = Message::decode(bytes)
            .map_err(|e| refuse(RefusalCode::Undecodable, format!("not an automerge sync message: {e}")))?;
        let reencoded = message.clone().encode();
        if reencoded.len() != bytes.len() || reencoded != bytes {
            return Err(refuse(
                RefusalCode::TrailingBytes,
                format!(
                    "the sync message is {} bytes but {} bytes were sent; the rest belongs to nothing",
                    reencoded.len(),
                    bytes.len()
                ),
            ));
        }
        let mut offered = Vec::new();
        for (i, chunk) in message.changes.iter().enumerate() {
            offered.extend(contained(|| offered_changes(chunk)).map_err(|reason| {
                refuse(RefusalCode::BadChange, format!("change data {i} does not parse: {reason}"))
            })?);
        }
        let old_heads = doc.heads();
        if trust == Trust::Peer {
            let am = doc.automerge_mut();
            am.receive_sync_message(&mut self.state, message)
                .map_err(|e| refuse(RefusalCode::BadChange, e.to_string()))?;
            let new: Vec<Change> = am.get_changes(&old_heads);
            let pending = am.get_missing_deps(&[]).len();
            return Ok(Received {
                new_changes: new.into_iter().map(|c| ChangeRecord::new(&id, c)).collect(),
                pending,
            });
        }
        let mut state = self.state.clone();
        let mut fork = doc.automerge().fork();
        contained(|| fork.receive_sync_message(&mut state, message).map_err(|e| e.to_string()))
            .map_err(|reason| refuse(RefusalCode::BadChange, reason))?;
        // A change that parsed, is not waiting for a dependency, and still is
        // not in the document was dropped by automerge: refuse, never lose it.
        // (`get_change_meta_by_hash` is ~60× cheaper than rebuilding the change.)
        let known = |h: &automerge::ChangeHash| fork.get_change_meta_by_hash(h).is_some();
        if let Some(dropped) = offered.iter().find(|c| !known(&c.hash()) && c.deps().iter().all(known)) {
            return Err(refuse(
                RefusalCode::BadChange,
                format!(
                    "change {} parses but cannot be applied (its operations are damaged)",
                    dropped.hash()
                ),
            ));
        }
        let new: Vec<Change> = fork.get_changes(&old_heads);
        // Changes whose dependencies have not arrived stay queued inside the
        // document (not applied, not visible, not stored): the next message
        // then asks the peer for exactly what is missing. Dropping them would
        // make the peer's head look missing instead, and the peer would send
        // the same change again, forever. They are validated when they apply.
        let pending = fork.get_missing_deps(&[]).len();
        let mut candidate = SurveyDocument::from_automerge(id.clone(), fork);
        for change in &new {
            if let Err(breach) = check_change(&candidate, change) {
                return Err(Refusal {
                    code: RefusalCode::RuleBroken,
                    document: id.clone(),
                    message: breach.to_string(),
                    breach: Some(breach),
                });
            }
        }
        let new_changes: Vec<ChangeRecord> = new.into_iter().map(|c| ChangeRecord::new(&id, c)).collect();
        for record in &new_changes {
            if let Err(reason) = admit(record) {
                return Err(refuse(RefusalCode::NotAdmitted, reason));
            }
        }
        candidate.automerge_mut().set_actor(doc.automerge().get_actor().clone());
        *doc = candidate;
        self.state = state;
        Ok(Received { pending, new_changes })
    }
}

/// The sessions of one multi-document exchange with one peer.
///
/// Holds a [`DocSession`] per document for the length of the exchange and
/// counts rounds, so that no two peers can loop forever.
#[derive(Debug, Default)]
pub struct Exchange {
    sessions: BTreeMap<DocumentId, DocSession>,
    rounds: u32,
}

impl Exchange {
    /// A new exchange; sessions start from the states `persisted` returns.
    pub fn new() -> Self {
        Self::default()
    }

    /// The session for `id`, resumed from `persisted` on first use.
    pub fn session(
        &mut self,
        id: &DocumentId,
        persisted: impl FnOnce() -> Option<Vec<u8>>,
    ) -> &mut DocSession {
        self.sessions.entry(id.clone()).or_insert_with(|| DocSession::resume(persisted().as_deref()))
    }

    /// Counts a round; `false` once [`MAX_ROUNDS`] are used up.
    pub fn next_round(&mut self) -> bool {
        self.rounds += 1;
        self.rounds <= MAX_ROUNDS
    }

    /// Rounds taken so far.
    pub fn rounds(&self) -> u32 {
        self.rounds
    }
}
