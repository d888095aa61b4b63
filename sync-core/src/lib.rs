//! Thôn Sync's replica core: survey documents that merge, the rules they
//! keep, sans-IO sync sessions, reports, and the storage they live in.
//!
//! # Layout
//! - [`actors`]: which device may write under which actor id.
//! - [`ids`]: validated ids of places, rounds, households, documents, peers.
//! - [`schema`]: the survey fields, their types and consistency rules.
//! - [`survey`]: one Automerge document per village or commune per round,
//!   with a typed edit and read API and deterministic shared structure.
//! - [`validate`]: type rules on incoming changes, data-quality issues, conflicts.
//! - [`inbound`]: a peer's sync message checked byte by byte before automerge sees it.
//! - [`exchange`]: the exchange of protocol v1, sans IO: the hub's and the device's state machines.
//! - [`sync`]: the sans-IO sync engine over automerge's sync protocol.
//! - [`store`]: the `Store` trait, its SQLite backend and its conformance suite.
//! - [`registry`]: places, the bundled Bắc Kạn sample, CSV loading.
//! - [`repo_url`]: a document's automerge-repo address (`automerge:…`).
//! - [`report`]: the indicators officers read.
//! - [`access`], [`devices`]: credentials and scopes; adding, enrolling,
//!   rotating and revoking devices on any store.
//! - [`wire`]: the JSON bodies of protocol v1 and its error codes.

pub mod access;
pub mod actors;
pub mod devices;
pub mod error;
pub mod exchange;
pub mod history;
pub mod ids;
pub mod inbound;
pub mod registry;
pub mod replica;
pub mod repo_url;
pub mod report;
pub mod schema;
pub mod store;
pub mod survey;
pub mod sync;
pub mod validate;
pub mod wire;

pub use automerge;
