//! The `ephemeral` relay of `/v1/repo`: which sockets have which document
//! open, and a bounded channel to each, so a peer's presence or cursor
//! message reaches the others that have the document open. Nothing here is
//! stored; a socket whose channel is full misses the message (counted).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sync_core::ids::DocumentId;
use tokio::sync::mpsc;

/// Relayed messages a socket may have waiting before it misses more.
pub const QUEUE: usize = 64;

/// An `ephemeral` message on its way to another socket.
#[derive(Debug, Clone)]
pub struct Relayed {
    /// The document it is about.
    pub document: DocumentId,
    /// Its author's peer id, session and number in the session, as sent.
    pub sender_id: String,
    /// The author's session.
    pub session_id: String,
    /// The message's number in the session.
    pub count: u64,
    /// The message (CBOR, opaque).
    pub data: Vec<u8>,
}

/// Every open socket's documents, for the relay.
#[derive(Default)]
pub struct Relay {
    next: AtomicU64,
    open: Mutex<HashMap<DocumentId, HashMap<u64, mpsc::Sender<Relayed>>>>,
}

impl Relay {
    /// A socket's place: its number and the receiving end of its channel.
    pub fn join(&self) -> (u64, mpsc::Sender<Relayed>, mpsc::Receiver<Relayed>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(QUEUE);
        (id, tx, rx)
    }

    /// Socket `id` has `document` open.
    pub fn open(&self, id: u64, document: &DocumentId, tx: &mpsc::Sender<Relayed>) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.entry(document.clone()).or_default().insert(id, tx.clone());
    }

    /// Socket `id` no longer has `document` open (refused on it).
    pub fn close(&self, id: u64, document: &DocumentId) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sockets) = open.get_mut(document) {
            sockets.remove(&id);
            if sockets.is_empty() {
                open.remove(document);
            }
        }
    }

    /// Socket `id` is gone: every document it had open.
    pub fn leave<'a>(&self, id: u64, documents: impl IntoIterator<Item = &'a DocumentId>) {
        for document in documents {
            self.close(id, document);
        }
    }

    /// Hands `message` to every other socket with its document open:
    /// (handed, missed because a socket's channel was full). A socket whose
    /// channel is gone (its connection ended without leaving) is forgotten.
    pub fn publish(&self, from: u64, message: Relayed) -> (u64, u64) {
        let targets: Vec<(u64, mpsc::Sender<Relayed>)> = {
            let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            open.get(&message.document)
                .map(|sockets| {
                    sockets.iter().filter(|(id, _)| **id != from).map(|(id, tx)| (*id, tx.clone())).collect()
                })
                .unwrap_or_default()
        };
        let (mut handed, mut missed) = (0, 0);
        for (id, tx) in targets {
            match tx.try_send(message.clone()) {
                Ok(()) => handed += 1,
                Err(mpsc::error::TrySendError::Full(_)) => missed += 1,
                Err(mpsc::error::TrySendError::Closed(_)) => self.close(id, &message.document),
            }
        }
        (handed, missed)
    }
}

/// A token bucket: `per_second` messages a second on average, as many at once.
#[derive(Debug)]
pub struct Rate {
    tokens: f64,
    last: Instant,
}

impl Rate {
    /// A full bucket.
    pub fn new(per_second: u32) -> Self {
        Self { tokens: f64::from(per_second), last: Instant::now() }
    }

    /// Takes a token if there is one.
    pub fn take(&mut self, per_second: u32, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).min(Duration::from_secs(60));
        self.last = now;
        let capacity = f64::from(per_second.max(1));
        self.tokens = (self.tokens + elapsed.as_secs_f64() * capacity).min(capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(document: &DocumentId, count: u64) -> Relayed {
        Relayed {
            document: document.clone(),
            sender_id: "a".into(),
            session_id: "s".into(),
            count,
            data: vec![0xa0],
        }
    }

    #[test]
    fn a_message_reaches_the_other_sockets_with_the_document_open_and_no_more() {
        let relay = Relay::default();
        let doc: DocumentId = "village:nhu-co-01:2024-1".parse().unwrap();
        let other: DocumentId = "village:nhu-co-02:2024-1".parse().unwrap();
        let (a, a_tx, mut a_rx) = relay.join();
        let (b, b_tx, mut b_rx) = relay.join();
        let (c, c_tx, mut c_rx) = relay.join();
        relay.open(a, &doc, &a_tx);
        relay.open(b, &doc, &b_tx);
        relay.open(c, &other, &c_tx);
        assert_eq!(relay.publish(a, message(&doc, 1)), (1, 0));
        assert_eq!(b_rx.try_recv().unwrap().count, 1);
        assert!(a_rx.try_recv().is_err(), "not back to its author");
        assert!(c_rx.try_recv().is_err(), "not to a socket without the document");
        relay.close(b, &doc);
        assert_eq!(relay.publish(a, message(&doc, 2)), (0, 0));
        relay.open(b, &doc, &b_tx);
        for n in 0..QUEUE as u64 + 3 {
            relay.publish(a, message(&doc, n));
        }
        assert_eq!(relay.publish(a, message(&doc, 99)), (0, 1), "a full channel misses it");
        relay.leave(b, [&doc]);
        drop((c_tx, c_rx));
        let (d, d_tx, d_rx) = relay.join();
        relay.open(d, &doc, &d_tx);
        drop((d_tx, d_rx));
        assert_eq!(relay.publish(a, message(&doc, 100)), (0, 0), "a socket gone is forgotten");
        relay.leave(a, [&doc]);
        relay.leave(c, [&other]);
        assert!(relay.open.lock().unwrap().is_empty(), "nothing left behind");
    }

    #[test]
    fn the_rate_allows_a_burst_then_its_pace() {
        let start = Instant::now();
        let mut rate = Rate::new(5);
        let allowed = (0..20).filter(|_| rate.take(5, start)).count();
        assert_eq!(allowed, 5, "a burst of the capacity");
        assert!(rate.take(5, start + Duration::from_millis(250)), "a token back after 1/5 s");
        assert!(!rate.take(5, start + Duration::from_millis(260)));
    }
}
