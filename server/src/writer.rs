//! The one SQLite writer: a thread that owns the writing connection and
//! commits the write batches of concurrent requests together (group commit),
//! so many devices share one fsync.
//!
//! **Invariant: a caller hears `Ok` only after the transaction holding its
//! batch committed.** When a merged commit fails, every caller in the group
//! hears the error and must evict what it changed in memory.

use std::sync::mpsc;
use std::thread;

use sync_core::store::{CommitSummary, SqliteStore, Store, StoreError, WriteBatch};

/// Work for the writer thread.
enum Job {
    /// A batch to commit, with the time to stamp and where to send the outcome.
    Commit(WriteBatch, i64, mpsc::SyncSender<Result<CommitSummary, StoreError>>),
    /// Any other write (registry, settings), run alone in order.
    Run(Box<dyn FnOnce(&mut SqliteStore) + Send>),
}

/// Most batches merged into one transaction, so one slow group cannot grow without end.
const MAX_GROUP: usize = 256;

/// Handle to the writer thread; cloning shares the same thread.
#[derive(Clone)]
pub struct Writer {
    /// Queue to the thread; the thread stops when every sender is dropped.
    jobs: mpsc::Sender<Job>,
}

/// The writer thread's join handle, kept by whoever shuts the server down.
pub struct WriterThread(thread::JoinHandle<()>);

impl WriterThread {
    /// Waits for the thread to finish its queue and close the database.
    pub fn join(self) {
        let _ = self.0.join();
    }
}

impl Writer {
    /// Starts the writer thread on its own connection.
    pub fn start(mut store: SqliteStore) -> (Self, WriterThread) {
        let (tx, rx) = mpsc::channel::<Job>();
        let handle = thread::Builder::new()
            .name("thonsync-writer".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut group = vec![first];
                    while group.len() < MAX_GROUP {
                        match rx.try_recv() {
                            Ok(job) => group.push(job),
                            Err(_) => break,
                        }
                    }
                    run_group(&mut store, group);
                }
                tracing::debug!("writer stopped");
            })
            .expect("spawn writer thread");
        (Self { jobs: tx }, WriterThread(handle))
    }

    /// Commits a batch durably; blocks until it is committed (or failed).
    pub fn commit(&self, batch: WriteBatch, now: i64) -> Result<CommitSummary, StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.jobs
            .send(Job::Commit(batch, now, tx))
            .map_err(|_| StoreError::Backend("the writer has stopped".into()))?;
        rx.recv().map_err(|_| StoreError::Backend("the writer has stopped".into()))?
    }

    /// Runs another write on the writer's connection and returns its result.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut SqliteStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.jobs
            .send(Job::Run(Box::new(move |s| {
                let _ = tx.send(f(s));
            })))
            .map_err(|_| StoreError::Backend("the writer has stopped".into()))?;
        rx.recv().map_err(|_| StoreError::Backend("the writer has stopped".into()))?
    }
}

fn run_group(store: &mut SqliteStore, group: Vec<Job>) {
    let mut merged = WriteBatch::default();
    let mut waiting = Vec::new();
    let mut now = 0;
    for job in group {
        match job {
            Job::Run(f) => f(store),
            Job::Commit(batch, t, reply) => {
                now = now.max(t);
                let refused = batch.refused.len();
                let changes = batch.changes.len();
                merged.extend(batch);
                waiting.push((reply, refused, changes));
            }
        }
    }
    if waiting.is_empty() {
        return;
    }
    let callers = waiting.len();
    match store.commit(&merged, now) {
        Ok(summary) => {
            tracing::trace!(callers, changes = merged.changes.len(), "group committed");
            let mut next_refused = summary.first_refused_id;
            for (reply, refused, _) in waiting {
                let mine = CommitSummary {
                    // Duplicates are ignored per row; the group total is not split exactly.
                    new_changes: summary.new_changes,
                    first_refused_id: if refused > 0 { next_refused } else { None },
                };
                next_refused = next_refused.map(|id| id + refused as i64);
                let _ = reply.send(Ok(mine));
            }
        }
        Err(e) => {
            let text = e.to_string();
            tracing::error!(error = %text, callers, "group commit failed");
            for (reply, _, _) in waiting {
                let _ = reply.send(Err(StoreError::Backend(text.clone())));
            }
        }
    }
}
