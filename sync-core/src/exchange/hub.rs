//! The hub's side of an exchange: one state machine per (device, exchange).
//!
//! A round goes [`HubExchange::begin`] (numbering, replay, decoding, which
//! documents are known) → for each of [`HubExchange::documents`], in order,
//! the shell locks and loads it and calls [`HubExchange::apply_document`]
//! (receive or reply; a document that did not change may be released at
//! once) → [`HubExchange::close`] → the shell commits [`RoundOutput::batch`]
//! and releases the rest → [`HubExchange::finish`] (the response, kept for a
//! replay). Nothing is answered before the commit, and a round whose commit
//! failed is never finished: the shell drops the exchange.

use std::collections::{BTreeMap, BTreeSet};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use crate::ids::{DocumentId, PeerId};
use crate::store::{NewRefusedUpload, WriteBatch};
use crate::survey::SurveyDocument;
use crate::sync::{DocSession, InputLimits, Judged, Refusal, RefusalCode, Uploader};
use crate::wire::{heads_digest, DocumentReply, ErrorBody, SyncRequest, SyncResponse};

/// Answers of the store and the registry the hub needs during a round.
/// Failures are strings: the shell logs them and answers "store unavailable".
pub trait HubEnv: Sync {
    /// Whether a document may be synced: it is stored, or it may be created
    /// (its place is in the registry and its round is open).
    fn is_known(&self, id: &DocumentId) -> Result<bool, String>;
    /// The persisted sync state of the exchange's device for a document.
    fn persisted_state(&self, id: &DocumentId) -> Result<Option<Vec<u8>>, String>;
    /// The device a legacy actor is bound to (see [`crate::actors`]).
    fn legacy_owner(&self, actor: &str) -> Result<Option<String>, String>;
    /// The document's heads if they are at hand without loading it (the
    /// document is in memory); `None` makes a device's heads digest count
    /// for nothing, and the document is played as usual.
    fn current_heads(&self, _id: &DocumentId) -> Option<Vec<automerge::ChangeHash>> {
        None
    }
}

/// Why a round cannot be played at all (nothing of it applies).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    /// The round is behind the exchange: played already, and not the last
    /// (which is replayed). A round ahead of the last is played: the rounds
    /// between were played elsewhere (see [`HubExchange::begin`]).
    #[error(
        "round {round} of exchange {exchange} was not expected (last answered: {last}); start a new exchange"
    )]
    OutOfStep {
        /// The exchange.
        exchange: String,
        /// The round asked for.
        round: u32,
        /// The last round answered.
        last: u32,
    },
    /// The exchange used up its rounds.
    #[error("an exchange may take at most {max} rounds; start a new exchange to continue")]
    TooManyRounds {
        /// The cap.
        max: u32,
    },
    /// The exchange would hold more documents than allowed.
    #[error("an exchange may hold at most {max} documents; split them across exchanges")]
    TooManyDocuments {
        /// The cap.
        max: usize,
    },
    /// The store could not answer.
    #[error("the store could not answer: {0}")]
    Store(String),
}

/// What [`HubExchange::begin`] decided.
#[derive(Debug)]
pub enum Begin {
    /// The same round again: answer it exactly as before, change nothing.
    Replay(u16, SyncResponse),
    /// A new round to play.
    Round(HubRound),
}

/// A round in progress, from [`HubExchange::begin`] to [`HubExchange::close`].
#[derive(Debug)]
pub struct HubRound {
    /// Decoded messages of known documents not yet applied.
    incoming: BTreeMap<DocumentId, Vec<u8>>,
    /// What the round produced so far.
    out: RoundOutput,
    /// The time of the round, stamped on refused uploads.
    now: i64,
}

impl HubRound {
    /// Whether the round carries a message for `id`.
    pub fn has_message(&self, id: &DocumentId) -> bool {
        self.incoming.contains_key(id)
    }
}

/// What a round produced, before its commit.
#[derive(Debug, Default)]
pub struct RoundOutput {
    /// Everything to commit, in one transaction, before answering.
    pub batch: WriteBatch,
    /// Every refusal of the round, for the shell's log and audit.
    pub refusals: Vec<Refusal>,
    /// Changes of the device waiting for a dependency in this exchange, after the round.
    pub waiting: usize,
    replies: BTreeMap<DocumentId, DocumentReply>,
    /// (document, index in `batch.refused`) of each refused message.
    refused_at: Vec<(DocumentId, usize)>,
    messages: usize,
    number: u32,
}

/// What [`HubExchange::prepare`] found for a document.
#[derive(Debug)]
pub enum Prepared {
    /// The document is not part of this exchange any more, or was refused in it.
    Nothing,
    /// The device sent a message: judge it ([`Judgement::run`]), then
    /// [`HubExchange::conclude`].
    Judge(Box<Judgement>),
    /// No message from the device: [`HubExchange::reply`].
    Reply,
}

/// One document's message of a round, to judge against the document as
/// loaded. Running it changes nothing, so the judgements of a round's
/// documents may run at once, on other threads; their verdicts are kept
/// in document order by [`HubExchange::conclude`].
#[derive(Debug)]
pub struct Judgement {
    id: DocumentId,
    session: DocSession,
    bytes: Vec<u8>,
    limits: InputLimits,
    /// Changes that may wait in this document at most, before the exact
    /// allowance is known (see [`HubExchange::conclude`]).
    allowance: usize,
    device: String,
}

impl Judgement {
    /// Judges the message against `doc`, the document it is for: the
    /// checks of [`DocSession::receive_from`], on a fork.
    pub fn run(&self, doc: &SurveyDocument, env: &dyn HubEnv) -> Result<Judged, Refusal> {
        let legacy_owner = |actor: &str| env.legacy_owner(actor);
        let uploader = Uploader { device: &self.device, limits: &self.limits, legacy_owner: &legacy_owner };
        self.session.judge_from(doc, &self.bytes, &uploader, self.allowance)
    }
}

/// One device's exchange on the hub.
#[derive(Debug)]
pub struct HubExchange {
    device: PeerId,
    id: String,
    max_documents: usize,
    max_rounds: u32,
    /// The last round answered (0 before the first).
    round: u32,
    /// Its answer, replayed when the same round arrives again.
    last: Option<(u16, SyncResponse)>,
    /// A session per document, fresh from the persisted state at first use.
    sessions: BTreeMap<DocumentId, DocSession>,
    /// The session bytes last persisted, so unchanged sessions are not rewritten.
    persisted: BTreeMap<DocumentId, Vec<u8>>,
    /// Documents refused in this exchange: no more messages for them.
    refused: BTreeSet<DocumentId>,
    /// Whether rounds of this exchange were played elsewhere: sessions then
    /// ask the device to send again what this side lacks.
    resumed: bool,
}

impl HubExchange {
    /// A new exchange `id` of `device`, holding at most `max_documents`
    /// documents over at most `max_rounds` rounds.
    pub fn new(device: PeerId, id: String, max_documents: usize, max_rounds: u32) -> Self {
        Self {
            device,
            id,
            max_documents,
            max_rounds,
            round: 0,
            last: None,
            sessions: BTreeMap::new(),
            persisted: BTreeMap::new(),
            refused: BTreeSet::new(),
            resumed: false,
        }
    }

    /// Starts a round of `request`, whose documents (`named`, parsed and
    /// checked against the device's scope by the shell) are in request order.
    ///
    /// The round number decides: the last round answered is replayed; the
    /// next one is played; one further ahead is played too, after the
    /// sessions resume from the persisted state (a device may reach another
    /// server on the same database for any round, and a server forgets an
    /// idle exchange); a round behind, or 0, is [`HubError::OutOfStep`].
    pub fn begin(
        &mut self,
        request: &SyncRequest,
        named: &[DocumentId],
        env: &dyn HubEnv,
        now: i64,
    ) -> Result<Begin, HubError> {
        if let Some((status, response)) = &self.last {
            if response.round == request.round {
                return Ok(Begin::Replay(*status, response.clone()));
            }
        }
        if request.round <= self.round || request.round == 0 {
            return Err(HubError::OutOfStep {
                exchange: self.id.clone(),
                round: request.round,
                last: self.round,
            });
        }
        if request.round > self.max_rounds {
            return Err(HubError::TooManyRounds { max: self.max_rounds });
        }
        // Rounds this hub did not play (another server on the same database
        // did, or this one forgot the exchange): go on from the store.
        let leftover = if request.round > self.round + 1 { self.resume(now) } else { WriteBatch::default() };
        let mut incoming = BTreeMap::new();
        let mut early = Vec::new();
        let mut messages = 0;
        let mut new_documents = BTreeSet::new();
        for (entry, id) in request.documents.iter().zip(named) {
            let refuse =
                |code, message: String| Refusal { code, document: id.clone(), message, breach: None };
            if let (None, Some(digest)) = (&entry.message, &entry.heads) {
                let in_step = env.current_heads(id).is_some_and(|heads| heads_digest(&heads) == *digest);
                if in_step && !self.sessions.contains_key(id) {
                    continue; // both sides hold the same heads: nothing to do, nothing to touch
                }
            }
            if !self.sessions.contains_key(id) {
                new_documents.insert(id.clone());
            }
            let Some(text) = &entry.message else { continue };
            messages += 1;
            let bytes = match B64.decode(text) {
                Ok(b) => b,
                Err(e) => {
                    new_documents.remove(id);
                    let r = refuse(RefusalCode::Undecodable, format!("the message is not base64: {e}"));
                    early.push((r, text.as_bytes().to_vec()));
                    continue;
                }
            };
            if !self.sessions.contains_key(id) && !env.is_known(id).map_err(HubError::Store)? {
                new_documents.remove(id);
                let r = refuse(
                    RefusalCode::UnknownDocument,
                    format!("{id} is not in this server's registry, or its survey round is not open; ask GET /v1/registry/communes/<commune> for the documents to sync"),
                );
                early.push((r, bytes));
                continue;
            }
            incoming.insert(id.clone(), bytes);
        }
        if self.sessions.len() + new_documents.len() > self.max_documents {
            return Err(HubError::TooManyDocuments { max: self.max_documents });
        }
        for id in new_documents {
            self.sessions.entry(id).or_default();
        }
        let out = RoundOutput { messages, number: request.round, batch: leftover, ..RoundOutput::default() };
        let mut round = HubRound { incoming, out, now };
        for (refusal, bytes) in early {
            self.refused.insert(refusal.document.clone());
            self.refuse(&mut round.out, refusal, bytes, now);
        }
        Ok(Begin::Round(round))
    }

    /// Makes the hub go on with an exchange whose last rounds were played
    /// elsewhere: every session starts again from the persisted state, as
    /// at a first round (the store holds whatever those rounds stored; the
    /// device's messages are answered like any peer's whose state this side
    /// lost, and the first answer asks the device to send again whatever this
    /// side lacks, see [`DocSession::ask_to_resend`]). Changes still waiting in the old sessions are handed back as
    /// refused uploads to keep (`waiting_expired`); documents refused in
    /// this exchange stay refused.
    fn resume(&mut self, now: i64) -> WriteBatch {
        let leftover = self.end(now);
        self.sessions.clear();
        self.persisted.clear();
        self.last = None;
        self.resumed = true;
        leftover
    }

    /// The documents of the exchange, in id order: the shell locks (in this
    /// order, so rounds cannot deadlock) and loads them for [`HubExchange::apply`].
    pub fn documents(&self) -> Vec<DocumentId> {
        self.sessions.keys().cloned().collect()
    }

    /// Drops a document that no longer exists (the registry was replaced).
    pub fn forget(&mut self, id: &DocumentId) {
        self.sessions.remove(id);
        self.persisted.remove(id);
    }

    /// Changes of the device waiting for a dependency in this exchange.
    pub fn waiting(&self) -> usize {
        self.sessions.values().map(DocSession::waiting).sum()
    }

    /// Plays a round on all the exchange's documents at once (`docs`, loaded
    /// and locked by the shell; one missing from it is skipped): the
    /// [`HubExchange::apply_document`] of each, then [`HubExchange::close`].
    pub fn apply(
        &mut self,
        mut round: HubRound,
        docs: &mut BTreeMap<DocumentId, &mut SurveyDocument>,
        limits: &InputLimits,
        waiting_elsewhere: usize,
        env: &dyn HubEnv,
    ) -> Result<RoundOutput, HubError> {
        for (id, doc) in docs.iter_mut() {
            self.apply_document(&mut round, id, doc, limits, waiting_elsewhere, env)?;
        }
        Ok(self.close(round))
    }

    /// Plays the round on one document, loaded and locked by the shell:
    /// receives its message (if any) or generates a reply. Returns whether
    /// the document changed: only then must the shell keep it locked until
    /// the round's commit (a document that did not change holds nothing
    /// uncommitted and may be released at once). `waiting_elsewhere` is what
    /// the device has waiting in its other exchanges.
    ///
    /// The same as [`HubExchange::prepare`], [`Judgement::run`] and
    /// [`HubExchange::conclude`] in turn; a shell that judges many
    /// documents at once calls those.
    pub fn apply_document(
        &mut self,
        round: &mut HubRound,
        id: &DocumentId,
        doc: &mut SurveyDocument,
        limits: &InputLimits,
        waiting_elsewhere: usize,
        env: &dyn HubEnv,
    ) -> Result<bool, HubError> {
        match self.prepare(round, id, limits, waiting_elsewhere, env)? {
            Prepared::Judge(judgement) => {
                let verdict = judgement.run(doc, env);
                Ok(self.conclude(round, *judgement, verdict, doc, waiting_elsewhere))
            }
            Prepared::Reply => {
                self.reply(round, id, doc);
                Ok(false)
            }
            Prepared::Nothing => Ok(false),
        }
    }

    /// The first step of playing the round on one document: its session
    /// (from the persisted state at first use), and its message, if the
    /// round carries one, as a [`Judgement`] to run.
    pub fn prepare(
        &mut self,
        round: &mut HubRound,
        id: &DocumentId,
        limits: &InputLimits,
        waiting_elsewhere: usize,
        env: &dyn HubEnv,
    ) -> Result<Prepared, HubError> {
        if !self.sessions.contains_key(id) {
            return Ok(Prepared::Nothing);
        }
        if !self.persisted.contains_key(id) {
            let saved = env.persisted_state(id).map_err(HubError::Store)?;
            let mut session = DocSession::resume(saved.as_deref());
            if self.resumed {
                // The device believes it sent what the earlier rounds carried;
                // what waited there for a dependency is not here.
                session.ask_to_resend();
            }
            self.sessions.insert(id.clone(), session);
            self.persisted.insert(id.clone(), saved.unwrap_or_default());
        }
        if let Some(bytes) = round.incoming.remove(id) {
            // What may wait here at most, whatever the exchange's other
            // documents do in this round (their changes may all apply):
            // [`HubExchange::conclude`] holds the message to the exact
            // allowance once the documents before it are kept.
            let allowance = limits.max_waiting_per_device.saturating_sub(waiting_elsewhere);
            return Ok(Prepared::Judge(Box::new(Judgement {
                id: id.clone(),
                session: self.sessions[id].clone(),
                bytes,
                limits: limits.clone(),
                allowance,
                device: self.device.to_string(),
            })));
        }
        if self.refused.contains(id) {
            return Ok(Prepared::Nothing);
        }
        Ok(Prepared::Reply)
    }

    /// The last step for a document whose message was judged: keeps the
    /// verdict (the document becomes what the message left, or the bytes
    /// are kept as refused). Called in the order of [`HubExchange::documents`],
    /// so each message is held to what the device's earlier documents in
    /// the round left it of its allowance of waiting changes, exactly as if
    /// the documents had been judged one after another. Returns whether
    /// the document changed.
    pub fn conclude(
        &mut self,
        round: &mut HubRound,
        judgement: Judgement,
        verdict: Result<Judged, Refusal>,
        doc: &mut SurveyDocument,
        waiting_elsewhere: usize,
    ) -> bool {
        let Judgement { id, bytes, limits, .. } = judgement;
        let now = round.now;
        let Some(session) = self.sessions.get(&id) else { return false };
        let others = waiting_elsewhere + self.waiting() - session.waiting();
        let allowance = limits.max_waiting_per_device.saturating_sub(others);
        let verdict = verdict.and_then(|judged| {
            let waiting = judged.session.waiting();
            match Refusal::for_waiting(&id, judged.newly_waiting, waiting, allowance, &limits) {
                Some(refusal) => Err(refusal),
                None => Ok(judged),
            }
        });
        match verdict {
            Ok(judged) => {
                let session = self.sessions.get_mut(&id).expect("a session");
                let received = session.keep(doc, judged);
                let changed = !received.new_changes.is_empty();
                let out = &mut round.out;
                let device = self.device.to_string();
                let reply = DocumentReply {
                    document: id.to_string(),
                    message: received.reply.map(|m| B64.encode(m)),
                    stored: received.new_changes.len(),
                    error: None,
                };
                out.batch.changes.extend(received.new_changes);
                out.batch.actor_bindings.extend(received.actors.into_iter().map(|a| (a, device.clone())));
                persist(&mut out.batch, &mut self.persisted, &self.device, &id, session);
                out.replies.insert(id, reply);
                changed
            }
            Err(refusal) => {
                self.refused.insert(id);
                self.refuse(&mut round.out, refusal, bytes, now);
                false
            }
        }
    }

    /// Plays the round on a document the device sent no message for: the
    /// server's message, if it has something to say.
    pub fn reply(&mut self, round: &mut HubRound, id: &DocumentId, doc: &SurveyDocument) {
        let Some(session) = self.sessions.get_mut(id) else { return };
        match session.try_generate(doc) {
            Ok(message) => {
                let reply = DocumentReply {
                    document: id.to_string(),
                    message: message.map(|m| B64.encode(m)),
                    stored: 0,
                    error: None,
                };
                persist(&mut round.out.batch, &mut self.persisted, &self.device, id, session);
                round.out.replies.insert(id.clone(), reply);
            }
            Err(refusal) => {
                self.refused.insert(id.clone());
                self.refuse(&mut round.out, refusal, Vec::new(), round.now);
            }
        }
    }

    /// Ends the round's play: what it produced, for the shell to commit.
    pub fn close(&mut self, round: HubRound) -> RoundOutput {
        let HubRound { incoming, mut out, now } = round;
        // A message for a document the shell could not hand in (it is gone
        // from the registry since the exchange began) is kept, not dropped.
        for (id, bytes) in incoming {
            let message = format!("{id} is no longer in this server's registry");
            self.refused.insert(id.clone());
            self.sessions.remove(&id);
            let refusal = Refusal { code: RefusalCode::UnknownDocument, document: id, message, breach: None };
            self.refuse(&mut out, refusal, bytes, now);
        }
        out.waiting = self.waiting();
        out
    }

    /// Records a refusal: its bytes kept, its reply the error.
    fn refuse(&self, out: &mut RoundOutput, refusal: Refusal, bytes: Vec<u8>, now: i64) {
        let id = refusal.document.clone();
        out.refused_at.push((id.clone(), out.batch.refused.len()));
        out.batch.refused.push(NewRefusedUpload {
            source: Some(self.device.to_string()),
            document: Some(id.to_string()),
            code: refusal.code,
            reason: refusal.message.clone(),
            bytes,
            received_at: now,
        });
        let error = ErrorBody::from_refusal(&refusal);
        out.replies.insert(
            id.clone(),
            DocumentReply { document: id.to_string(), message: None, stored: 0, error: Some(error) },
        );
        out.refusals.push(refusal);
    }

    /// The answer to a round whose batch was committed (`first_refused_id`:
    /// the store's id of the batch's first refused upload); kept for a replay.
    pub fn finish(&mut self, out: RoundOutput, first_refused_id: Option<i64>) -> (u16, SyncResponse) {
        let RoundOutput { mut replies, refused_at, messages, number, refusals, .. } = out;
        if let Some(first) = first_refused_id {
            for (doc, pos) in &refused_at {
                if let Some(e) = replies.get_mut(doc).and_then(|r| r.error.as_mut()) {
                    e.refused_upload = Some(first + *pos as i64);
                }
            }
        }
        let error = (messages > 0 && refusals.len() >= messages)
            .then(|| refusals.first().and_then(|r| replies.get(&r.document)).and_then(|r| r.error.clone()))
            .flatten();
        let status = if error.is_some() { 422 } else { 200 };
        let response = SyncResponse {
            exchange: self.id.clone(),
            round: number,
            documents: replies.into_values().collect(),
            error,
        };
        self.round = number;
        self.last = Some((status, response.clone()));
        (status, response)
    }

    /// Ends the exchange: the changes still waiting in its sessions, as
    /// refused uploads to keep (`waiting_expired`), never dropped.
    pub fn end(&mut self, now: i64) -> WriteBatch {
        let mut batch = WriteBatch::default();
        for (id, session) in self.sessions.iter_mut() {
            for change in session.take_waiting() {
                let deps: Vec<String> = change.deps().iter().map(|d| d.to_string()).collect();
                batch.refused.push(NewRefusedUpload {
                    source: Some(self.device.to_string()),
                    document: Some(id.to_string()),
                    code: RefusalCode::WaitingExpired,
                    reason: format!(
                        "change {} waited for {} that never arrived in exchange {}",
                        change.hash(),
                        deps.join(", "),
                        self.id
                    ),
                    bytes: change.raw_bytes().to_vec(),
                    received_at: now,
                });
            }
        }
        batch
    }
}

/// Queues the session's shared heads when they changed since last persisted.
fn persist(
    batch: &mut WriteBatch,
    persisted: &mut BTreeMap<DocumentId, Vec<u8>>,
    device: &PeerId,
    id: &DocumentId,
    session: &DocSession,
) {
    let state = session.persisted();
    if persisted.get(id) != Some(&state) {
        batch.sync_states.push((device.clone(), id.clone(), state.clone()));
        persisted.insert(id.clone(), state);
    }
}
