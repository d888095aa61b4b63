//! `GET /metrics`: the server's counters in the Prometheus text format
//! (version 0.0.4), served only on its own address (`--metrics-listen`), never
//! beside the device API.
//!
//! The sync endpoint counts here ([`Metrics::round`], [`Metrics::refused`],
//! [`Metrics::round_seconds`]), `/v1/repo` its relayed and dropped
//! `ephemeral` frames; the gauges (cached documents, the writer's
//! queue depth and last group commit) are read from the server's state at
//! each scrape. Encoding is `prometheus-client`'s.

use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::error::ErrorCode;
use crate::state::Shared;
use crate::AppState;

/// The label set of a refusal: `code`, the error code's wire name.
type CodeLabel = Vec<(&'static str, String)>;

/// Every metric the server exports, registered once.
pub struct Metrics {
    registry: Registry,
    rounds: Counter,
    documents: Counter,
    changes: Counter,
    refusals: Family<CodeLabel, Counter>,
    round_seconds: Histogram,
    cached_documents: Gauge,
    writer_queue: Gauge,
    writer_group: Gauge,
    ephemeral_relayed: Counter,
    ephemeral_dropped: Family<ReasonLabel, Counter>,
}

/// The label set of a dropped `ephemeral` frame: `reason`.
type ReasonLabel = Vec<(&'static str, &'static str)>;

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// The metrics, all at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("thonsync");
        let rounds = Counter::default();
        let documents = Counter::default();
        let changes = Counter::default();
        let refusals = Family::<CodeLabel, Counter>::default();
        // 5 ms to about 20 s: a round in step takes milliseconds, a first
        // sync of a commune on a slow link seconds.
        let round_seconds = Histogram::new(exponential_buckets(0.005, 2.0, 13));
        let (cached_documents, writer_queue, writer_group) =
            (Gauge::default(), Gauge::default(), Gauge::default());
        registry.register("sync_rounds", "Sync rounds answered (POST /v1/sync)", rounds.clone());
        registry.register(
            "sync_documents",
            "Documents whose sync message devices sent in answered rounds",
            documents.clone(),
        );
        registry.register(
            "sync_changes_received",
            "Changes devices uploaded that the server accepted and committed",
            changes.clone(),
        );
        registry.register(
            "sync_refusals",
            "Sync requests and documents refused, by error code (wire name)",
            refusals.clone(),
        );
        registry.register(
            "sync_round_seconds",
            "Time from a sync request's arrival to its answer",
            round_seconds.clone(),
        );
        registry.register("cached_documents", "Documents loaded in memory", cached_documents.clone());
        registry.register(
            "writer_queue_depth",
            "Write jobs queued for the writer, or waiting for a place in its queue",
            writer_queue.clone(),
        );
        registry.register(
            "writer_last_batch",
            "Jobs the writer committed together in its last group",
            writer_group.clone(),
        );
        let ephemeral_relayed = Counter::default();
        let ephemeral_dropped = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "repo_ephemeral_relayed",
            "ephemeral frames of /v1/repo handed to another socket with the document open",
            ephemeral_relayed.clone(),
        );
        registry.register(
            "repo_ephemeral_dropped",
            "ephemeral frames of /v1/repo not relayed, by reason (too_large, rate, not_open, not_author, stale, queue_full)",
            ephemeral_dropped.clone(),
        );
        Self {
            registry,
            rounds,
            documents,
            changes,
            refusals,
            round_seconds,
            cached_documents,
            writer_queue,
            writer_group,
            ephemeral_relayed,
            ephemeral_dropped,
        }
    }

    /// `ephemeral` frames handed to `n` other sockets.
    pub fn ephemeral_relayed(&self, n: u64) {
        self.ephemeral_relayed.inc_by(n);
    }

    /// `n` `ephemeral` frames (or hand-overs) dropped for `reason`.
    pub fn ephemeral_dropped(&self, reason: &'static str, n: u64) {
        self.ephemeral_dropped.get_or_create(&vec![("reason", reason)]).inc_by(n);
    }

    /// An answered round: the documents whose message it brought and the
    /// devices' changes it committed.
    pub fn round(&self, documents: usize, changes: usize) {
        self.rounds.inc();
        self.documents.inc_by(documents as u64);
        self.changes.inc_by(changes as u64);
    }

    /// A refusal, of a whole request or of one document's message.
    pub fn refused(&self, code: &ErrorCode) {
        self.refusals.get_or_create(&vec![("code", code.as_str().to_owned())]).inc();
    }

    /// How long a sync request took to answer.
    pub fn round_seconds(&self, took: Duration) {
        self.round_seconds.observe(took.as_secs_f64());
    }

    /// The text of a scrape: the gauges read from `shared` now, then every metric.
    pub fn render(&self, shared: &Shared) -> String {
        self.cached_documents.set(shared.docs.len() as i64);
        self.writer_queue.set(shared.writer.queue_depth() as i64);
        self.writer_group.set(shared.writer.last_group() as i64);
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_text::encode(&mut text, &self.registry);
        text
    }
}

async fn scrape(State(state): State<AppState>) -> Response {
    let text = state.shared.metrics.render(&state.shared);
    ([(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)], text).into_response()
}

/// The router of the metrics address: `GET /metrics` only.
pub fn router(state: AppState) -> Router {
    Router::new().route("/metrics", get(scrape)).with_state(state)
}
