//! The exchange of protocol v1, sans IO: one multi-document sync attempt
//! between a device and the hub, in rounds (`POST /v1/sync` carries one).
//!
//! Two state machines, one per side, written once and shared by every
//! shell that speaks the protocol:
//!
//! - [`HubExchange`] (the server): round numbering and duplicate replay,
//!   the round cap, base64 and unknown-document refusals, a [`DocSession`]
//!   per document receiving through the one verdict of
//!   [`DocSession::receive_from`], the reply, the sync states worth
//!   persisting, and the response. It is handed the documents (loaded and
//!   locked by the shell), the answers of the store it needs
//!   ([`HubEnv`]) and the time; it hands back a [`WriteBatch`] and, once the
//!   shell has committed it, the response.
//! - [`ClientExchange`] (a field device): which documents speak in a round
//!   within the byte budget, when both sides are done, what to store after
//!   each answer, and which documents the server refused; [`set_aside`] is
//!   the recovery of a refused document.
//!
//! Neither reads a clock, a socket or a disk: inputs in, outputs out, so
//! an exchange replays from a seed in tests (`tests/exchange.rs`).
//!
//! [`DocSession`]: crate::sync::DocSession
//! [`DocSession::receive_from`]: crate::sync::DocSession::receive_from
//! [`WriteBatch`]: crate::store::WriteBatch

mod client;
mod hub;

pub use client::{set_aside, ClientError, ClientExchange, ClientRound, SetAside};
pub use hub::{Begin, HubEnv, HubError, HubExchange, HubRound, Judgement, Prepared, RoundOutput};

/// Most rounds an exchange may take on the hub; the device gives up at the same count.
pub const MAX_EXCHANGE_ROUNDS: u32 = 2 * crate::sync::MAX_ROUNDS;
