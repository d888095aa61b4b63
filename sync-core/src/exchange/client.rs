//! A field device's side of an exchange: rounds within a byte budget until
//! both sides are quiet, what to store after each answer, and the recovery
//! of a document the server refused.
//!
//! The shell loops: [`ClientExchange::poll_request`] → send it →
//! [`ClientExchange::handle_response`] → commit [`ClientRound::batch`] and
//! [`set_aside`] each refused document → poll again, until `poll_request`
//! returns `None`.

use std::collections::{BTreeMap, BTreeSet};

use automerge::sync::State;
use automerge::ActorId;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use crate::ids::{DocumentId, PeerId};
use crate::store::WriteBatch;
use crate::survey::SurveyDocument;
use crate::sync::{DocSession, Trust};
use crate::wire::{heads_digest, DocumentMessage, ErrorBody, SyncRequest, SyncResponse};

use super::MAX_EXCHANGE_ROUNDS;

/// Why an exchange cannot go on (the shell starts a new one, or gives up).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// Both sides still had something to say after every round.
    #[error("the exchange did not settle in {0} rounds")]
    TooManyRounds(u32),
    /// The server's answer does not belong to this exchange or round.
    #[error("the answer is for exchange {exchange} round {round}, not this one")]
    WrongAnswer {
        /// The exchange the answer names.
        exchange: String,
        /// The round it names.
        round: u32,
    },
    /// The server sent bytes that are not a sync message it could have made.
    #[error("the server's message for {document} is damaged: {reason}")]
    Garbled {
        /// The document.
        document: String,
        /// What was wrong.
        reason: String,
    },
}

/// What one answer gave the device.
#[derive(Debug, Default)]
pub struct ClientRound {
    /// The server's changes and the sessions' states: store in one transaction.
    pub batch: WriteBatch,
    /// Documents the server refused, with its reason: set each aside.
    pub refused: Vec<(DocumentId, ErrorBody)>,
    /// Documents that received changes.
    pub touched: Vec<DocumentId>,
    /// Changes of this device the server stored in this round.
    pub stored_by_server: usize,
    /// Changes received from the server.
    pub received_changes: usize,
    /// Bytes of the server's sync messages, decoded.
    pub message_bytes_received: usize,
}

/// One device's exchange with its server.
#[derive(Debug)]
pub struct ClientExchange {
    id: String,
    device: Option<String>,
    server: PeerId,
    budget_bytes: usize,
    round: u32,
    sessions: BTreeMap<DocumentId, DocSession>,
    refused: BTreeSet<DocumentId>,
    server_spoke: bool,
    /// Bytes of the device's own sync messages sent so far.
    message_bytes_sent: usize,
    /// Documents sent as a heads digest in the last request: a document the
    /// answer leaves out is in step, and done for this exchange.
    quiet: BTreeSet<DocumentId>,
}

impl ClientExchange {
    /// A new exchange `id` for the documents with their persisted states
    /// (under peer `server`), sending at most `budget_bytes` of messages per round.
    pub fn new(
        id: String,
        device: Option<String>,
        server: PeerId,
        states: impl IntoIterator<Item = (DocumentId, Option<Vec<u8>>)>,
        budget_bytes: usize,
    ) -> Self {
        let sessions = states.into_iter().map(|(id, s)| (id, DocSession::resume(s.as_deref()))).collect();
        Self {
            id,
            device,
            server,
            budget_bytes,
            round: 0,
            sessions,
            refused: BTreeSet::new(),
            server_spoke: true,
            message_bytes_sent: 0,
            quiet: BTreeSet::new(),
        }
    }

    /// Bytes of the device's own sync messages sent so far.
    pub fn message_bytes_sent(&self) -> usize {
        self.message_bytes_sent
    }

    /// The next request, or `None` when both sides are done. Documents whose
    /// messages would go over the round's byte budget wait for later rounds.
    pub fn poll_request(
        &mut self,
        docs: &BTreeMap<DocumentId, SurveyDocument>,
    ) -> Result<Option<SyncRequest>, ClientError> {
        let round = self.round + 1;
        if round > MAX_EXCHANGE_ROUNDS {
            return Err(ClientError::TooManyRounds(MAX_EXCHANGE_ROUNDS));
        }
        let mut documents = Vec::new();
        let mut budget = self.budget_bytes;
        let mut deferred = false;
        for (id, session) in self.sessions.iter_mut() {
            if self.refused.contains(id) {
                continue;
            }
            if budget == 0 {
                deferred = true;
                continue;
            }
            let Some(doc) = docs.get(id) else { continue };
            if round == 1 && !session.shared_heads().is_empty() && session.shared_heads() == doc.heads() {
                // Nothing new here since the last exchange: say so in a few
                // bytes; the server answers only if it has something new.
                self.quiet.insert(id.clone());
                let heads = Some(heads_digest(&doc.heads()));
                documents.push(DocumentMessage { document: id.to_string(), message: None, heads });
                continue;
            }
            if round == 1 {
                session.open_on_genesis(doc);
            }
            let message = session.generate(doc);
            if let Some(m) = &message {
                self.message_bytes_sent += m.len();
                budget = budget.saturating_sub(m.len());
            }
            if message.is_some() || round == 1 {
                let message = message.map(|m| B64.encode(m));
                documents.push(DocumentMessage { document: id.to_string(), message, heads: None });
            }
        }
        let said_something = documents.iter().any(|d| d.message.is_some());
        if round > 1 && !said_something && !self.server_spoke && !deferred {
            return Ok(None);
        }
        self.round = round;
        Ok(Some(SyncRequest { device: self.device.clone(), exchange: self.id.clone(), round, documents }))
    }

    /// Takes the server's answer to the last request into `docs`.
    pub fn handle_response(
        &mut self,
        docs: &mut BTreeMap<DocumentId, SurveyDocument>,
        response: SyncResponse,
    ) -> Result<ClientRound, ClientError> {
        if response.exchange != self.id || response.round != self.round {
            return Err(ClientError::WrongAnswer { exchange: response.exchange, round: response.round });
        }
        self.server_spoke = false;
        let mut out = ClientRound::default();
        // A document sent as a digest and left out of the answer is in step.
        let answered: BTreeSet<String> = response.documents.iter().map(|d| d.document.clone()).collect();
        for id in std::mem::take(&mut self.quiet) {
            if !answered.contains(&id.to_string()) {
                self.sessions.remove(&id);
            }
        }
        for reply in response.documents {
            let Ok(id) = reply.document.parse::<DocumentId>() else { continue };
            let Some(session) = self.sessions.get_mut(&id) else { continue };
            out.stored_by_server += reply.stored;
            if let Some(error) = reply.error {
                self.refused.insert(id.clone());
                out.refused.push((id, error));
                continue;
            }
            let Some(text) = reply.message else { continue };
            self.server_spoke = true;
            let garbled = |reason: String| ClientError::Garbled { document: id.to_string(), reason };
            let bytes = B64.decode(&text).map_err(|e| garbled(e.to_string()))?;
            out.message_bytes_received += bytes.len();
            let Some(doc) = docs.get_mut(&id) else { continue };
            let received = session.receive(doc, &bytes, Trust::Peer).map_err(|r| garbled(r.message))?;
            out.received_changes += received.new_changes.len();
            if !received.new_changes.is_empty() {
                out.touched.push(id.clone());
            }
            out.batch.changes.extend(received.new_changes);
        }
        for (id, session) in &self.sessions {
            if !self.refused.contains(id) {
                out.batch.sync_states.push((self.server.clone(), id.clone(), session.persisted()));
            }
        }
        Ok(out)
    }
}

/// A refused document set aside: what the device keeps, and what it starts over from.
#[derive(Debug)]
pub struct SetAside {
    /// The local version as it was (`Automerge::save()`), kept readable.
    pub local_version: Vec<u8>,
    /// Hashes of every change of the local version (their rows give way to `fresh`'s snapshot).
    pub covered: Vec<String>,
    /// The document started over: its genesis only, writing as the new actor.
    pub fresh: SurveyDocument,
    /// The session state to store for the document: empty, so the next
    /// exchange brings back the server's version.
    pub reset_state: Vec<u8>,
}

/// Recovers from a refusal of `doc`: keeps its local version, and starts it
/// over under `new_actor` (a fresh device actor, so no sequence number of
/// the refused change is ever reused). The shell stores the result and
/// re-enters what the surveyor still wants.
pub fn set_aside(doc: &SurveyDocument, new_actor: ActorId) -> SetAside {
    SetAside {
        local_version: doc.automerge().save(),
        covered: doc.automerge().get_changes(&[]).iter().map(|c| c.hash().to_string()).collect(),
        fresh: SurveyDocument::create(doc.id().clone(), new_actor),
        reset_state: State::new().encode(),
    }
}
