//! The one writer: a thread that owns the writing store (SQLite or
//! PostgreSQL) and
//! commits the write batches of concurrent requests together (group commit),
//! so many devices share one fsync.
//!
//! **Invariant: order.** Jobs run in the order they were queued. A *group*
//! is a run of consecutive commits taken from the queue (at most
//! [`MAX_GROUP`]), written in one transaction; a [`Writer::run`] job
//! executes after every commit queued before it has committed and before
//! any commit queued after it.
//!
//! **Invariant: an answer means durable.** A caller hears `Ok` only after the
//! transaction holding its batch committed, and hears its own
//! [`CommitSummary`]: the changes its batch newly stored, the ids of its
//! refused uploads.
//!
//! **Invariant: failure isolation.** When a group's transaction fails (an
//! error or a panic), it is rolled back and the group is retried batch by
//! batch, each in its own transaction, so only a batch that fails on its own
//! fails its caller; that caller must evict what it changed in memory. A
//! panic, in a batch's commit or in a `run` job, fails only that job's caller
//! with `StoreError::Backend("the writer failed on this batch: …")` (or `…on
//! this job: …`); any transaction it left open is rolled back, and the thread
//! goes on with the next job.
//!
//! **Invariant: back-pressure.** The queue holds at most
//! `Limits::writer_queue` jobs; when it is full, `commit` and `run` block
//! until the writer takes a job, so a burst costs callers waiting, never
//! memory without end.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;

use sync_core::store::{CommitSummary, Store, StoreError, WriteBatch};

/// Where a commit's outcome goes.
type Reply = mpsc::SyncSender<Result<CommitSummary, StoreError>>;

/// A write run alone on the writer's store; returns whether it panicked.
type RunJob = Box<dyn FnOnce(&mut dyn Store) -> bool + Send>;

/// Work for the writer thread.
enum Job {
    /// A batch to commit, with the time to stamp and where to send the outcome.
    Commit(WriteBatch, i64, Reply),
    /// Any other write (registry, settings), run alone in order; it sends its
    /// own outcome and returns whether it panicked.
    Run(RunJob),
}

/// Most jobs taken from the queue at once, so one group cannot grow without end.
pub const MAX_GROUP: usize = 256;

/// Jobs the queue holds by default before callers wait.
pub const DEFAULT_QUEUE: usize = 1024;

/// Handle to the writer thread; cloning shares the same thread.
#[derive(Clone)]
pub struct Writer {
    /// Bounded queue to the thread; the thread stops when every sender is dropped.
    jobs: mpsc::SyncSender<Job>,
    /// What the metrics read: the queue's depth and the last group's size.
    stats: Arc<WriterStats>,
}

/// Counts the writer keeps for the metrics (`GET /metrics`).
#[derive(Debug, Default)]
struct WriterStats {
    /// Jobs queued, or waiting for a place in the full queue, not yet taken.
    queued: AtomicUsize,
    /// Jobs the writer took at once last time (a group commit's size).
    last_group: AtomicUsize,
}

/// The writer thread's join handle, kept by whoever shuts the server down.
pub struct WriterThread(thread::JoinHandle<()>);

impl WriterThread {
    /// Waits for the thread to finish its queue and close the database.
    pub fn join(self) {
        let _ = self.0.join();
    }
}

fn stopped() -> StoreError {
    StoreError::Backend("the writer has stopped".into())
}

/// The message a panic carried, for the caller it failed.
fn panic_text(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

impl Writer {
    /// Starts the writer thread on its own connection, with a queue of
    /// `capacity` jobs (at least one).
    pub fn start(store: Box<dyn Store>, capacity: usize) -> (Self, WriterThread) {
        let (tx, rx) = mpsc::sync_channel::<Job>(capacity.max(1));
        let stats = Arc::new(WriterStats::default());
        let seen = stats.clone();
        let handle = thread::Builder::new()
            .name("thonsync-writer".into())
            .spawn(move || {
                let mut store = store;
                while let Ok(first) = rx.recv() {
                    let mut jobs = vec![first];
                    while jobs.len() < MAX_GROUP {
                        match rx.try_recv() {
                            Ok(job) => jobs.push(job),
                            Err(_) => break,
                        }
                    }
                    seen.taken(jobs.len());
                    run_jobs(store.as_mut(), jobs);
                }
                tracing::debug!("writer stopped");
            })
            .expect("spawn writer thread");
        (Self { jobs: tx, stats }, WriterThread(handle))
    }

    /// Jobs queued for the writer (or waiting for a place in its full queue) now.
    pub fn queue_depth(&self) -> usize {
        self.stats.queued.load(Ordering::Relaxed)
    }

    /// Jobs the writer took at once last time: the size of its last group commit.
    pub fn last_group(&self) -> usize {
        self.stats.last_group.load(Ordering::Relaxed)
    }

    /// Queues a job, counted in the queue's depth until the writer takes it.
    fn send(&self, job: Job) -> Result<(), StoreError> {
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        self.jobs.send(job).map_err(|_| {
            self.stats.drop_one();
            stopped()
        })
    }

    /// Commits a batch durably; blocks until it is committed (or failed).
    pub fn commit(&self, batch: WriteBatch, now: i64) -> Result<CommitSummary, StoreError> {
        self.queue(batch, now)?.wait()
    }

    /// Queues a batch for commit (waiting while the queue is full) and
    /// returns at once: the caller may do other work, then [`Queued::wait`]
    /// for the outcome. Batches queued later commit in the same group or after.
    pub fn queue(&self, batch: WriteBatch, now: i64) -> Result<Queued, StoreError> {
        self.queue_commit(batch, now).map(Queued)
    }

    /// Runs another write on the writer's connection and returns its result.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.queue_run(f)?.recv().map_err(|_| stopped())?
    }

    /// Queues a batch (waiting while the queue is full) without waiting for its commit.
    fn queue_commit(
        &self,
        batch: WriteBatch,
        now: i64,
    ) -> Result<mpsc::Receiver<Result<CommitSummary, StoreError>>, StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Job::Commit(batch, now, tx))?;
        Ok(rx)
    }

    /// Queues a job (waiting while the queue is full) without waiting for it to run.
    fn queue_run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<mpsc::Receiver<Result<T, StoreError>>, StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let job = move |store: &mut dyn Store| {
            let outcome = panic::catch_unwind(AssertUnwindSafe(|| f(store)));
            let panicked = outcome.is_err();
            let result = outcome.unwrap_or_else(|p| {
                let what = panic_text(p.as_ref());
                tracing::error!(panic = %what, "a write job panicked");
                Err(StoreError::Backend(format!("the writer failed on this job: {what}")))
            });
            let _ = tx.send(result);
            panicked
        };
        self.send(Job::Run(Box::new(job)))?;
        Ok(rx)
    }
}

/// A batch in the writer's queue ([`Writer::queue`]).
#[must_use = "a queued batch is durable only once `wait` says so"]
pub struct Queued(mpsc::Receiver<Result<CommitSummary, StoreError>>);

impl Queued {
    /// Blocks until the batch is committed (or failed).
    pub fn wait(self) -> Result<CommitSummary, StoreError> {
        self.0.recv().map_err(|_| stopped())?
    }
}

impl WriterStats {
    /// The writer took `n` jobs from the queue at once.
    fn taken(&self, n: usize) {
        self.last_group.store(n, Ordering::Relaxed);
        let _ = self.queued.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| Some(q.saturating_sub(n)));
    }

    /// A job that never reached the queue.
    fn drop_one(&self) {
        let _ = self.queued.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| Some(q.saturating_sub(1)));
    }
}

/// A batch waiting for its group's transaction.
struct Pending {
    batch: WriteBatch,
    now: i64,
    reply: Reply,
}

/// Runs jobs in queue order: consecutive commits as one group, each `run`
/// job between the commits queued before and after it.
fn run_jobs(store: &mut dyn Store, jobs: Vec<Job>) {
    let mut group = Vec::new();
    for job in jobs {
        match job {
            Job::Commit(batch, now, reply) => group.push(Pending { batch, now, reply }),
            Job::Run(f) => {
                commit_group(store, std::mem::take(&mut group));
                if f(store) {
                    recover(store);
                }
            }
        }
    }
    commit_group(store, group);
}

/// Rolls back whatever a panic left open, so the next job starts clean.
fn recover(store: &mut dyn Store) {
    match store.recover() {
        Ok(true) => tracing::warn!("rolled back a transaction a panic left open"),
        Ok(false) => {}
        Err(e) => tracing::error!(error = %e, "could not roll back after a panic"),
    }
}

/// Commits batches in one transaction, turning a panic into an error after
/// rolling back.
fn commit_contained(
    store: &mut dyn Store,
    batches: &[&WriteBatch],
    now: i64,
) -> Result<Vec<CommitSummary>, StoreError> {
    match panic::catch_unwind(AssertUnwindSafe(|| store.commit_all(batches, now))) {
        Ok(outcome) => outcome,
        Err(p) => {
            let what = panic_text(p.as_ref());
            tracing::error!(panic = %what, batches = batches.len(), "a commit panicked");
            recover(store);
            Err(StoreError::Backend(format!("the writer failed on this batch: {what}")))
        }
    }
}

/// Commits a group in one transaction and answers each caller with its own
/// summary; if the group fails, retries its batches one by one so that only
/// a batch failing alone fails its caller.
fn commit_group(store: &mut dyn Store, group: Vec<Pending>) {
    if group.is_empty() {
        return;
    }
    // One stamp for the group (the latest caller's), so receipt times follow insertion order.
    let now = group.iter().map(|p| p.now).max().unwrap_or(0);
    let batches: Vec<&WriteBatch> = group.iter().map(|p| &p.batch).collect();
    let callers = group.len();
    match commit_contained(store, &batches, now) {
        Ok(summaries) => {
            tracing::trace!(callers, "group committed");
            let mut summaries = summaries.into_iter();
            // Every caller hears first; the batches are freed after, so no
            // caller waits for the memory of the batches before its own.
            let mut committed = Vec::with_capacity(callers);
            for Pending { batch, reply, .. } in group {
                let mine = summaries.next().ok_or_else(|| {
                    StoreError::Backend("the store returned fewer summaries than batches".into())
                });
                let _ = reply.send(mine);
                committed.push(batch);
            }
            drop(committed);
        }
        Err(e) if callers == 1 => {
            tracing::error!(error = %e, "commit failed");
            let _ = group.into_iter().next().map(|p| p.reply.send(Err(e)));
        }
        Err(e) => {
            tracing::warn!(error = %e, callers, "group commit failed; committing its batches one by one");
            for p in group {
                let alone = commit_contained(store, &[&p.batch], now).and_then(|mut s| {
                    s.pop().ok_or_else(|| StoreError::Backend("the store returned no summary".into()))
                });
                if let Err(e) = &alone {
                    tracing::error!(error = %e, "commit failed");
                }
                let _ = p.reply.send(alone);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use sync_core::ids::DocumentId;
    use sync_core::store::{NewRefusedUpload, SqliteStore};
    use sync_core::sync::{ChangeRecord, RefusalCode};

    /// Only a guard against a hung test, never a timing assertion.
    const LONG: Duration = Duration::from_secs(60);

    fn doc(id: &str) -> DocumentId {
        id.parse().expect("valid id")
    }

    /// The genesis change of a commune document.
    fn change(commune: &str) -> ChangeRecord {
        let id = doc(&format!("commune:{commune}:2024-1"));
        let survey = sync_core::survey::SurveyDocument::create(
            id.clone(),
            sync_core::automerge::ActorId::from([3; 16]),
        );
        ChangeRecord::new(&id, survey.automerge().get_changes(&[]).pop().expect("genesis"))
    }

    fn batch(changes: &[&ChangeRecord]) -> WriteBatch {
        WriteBatch { changes: changes.iter().map(|c| (*c).clone()).collect(), ..Default::default() }
    }

    fn refusal(reason: &str) -> NewRefusedUpload {
        NewRefusedUpload {
            source: None,
            document: None,
            code: RefusalCode::Undecodable,
            reason: reason.into(),
            bytes: vec![1, 2, 3],
            received_at: 1,
        }
    }

    fn stored(writer: &Writer, c: &ChangeRecord) -> bool {
        let (id, hash) = (c.document.clone(), c.hash.clone());
        writer.run(move |s| s.has_change(&id, &hash)).expect("read")
    }

    fn start(store: SqliteStore, capacity: usize) -> (Writer, WriterThread) {
        Writer::start(Box::new(store), capacity)
    }

    /// Occupies the writer with a job until the returned sender is used (or
    /// dropped), so that jobs queued meanwhile are taken together.
    fn hold(writer: &Writer) -> (mpsc::Sender<()>, mpsc::Receiver<Result<(), StoreError>>) {
        let (started_tx, started_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let done = writer
            .queue_run(move |_| {
                started_tx.send(()).expect("test waits");
                let _ = release_rx.recv_timeout(LONG);
                Ok(())
            })
            .expect("queued");
        started_rx.recv_timeout(LONG).expect("the writer takes the job");
        (release_tx, done)
    }

    fn wait<T>(rx: mpsc::Receiver<Result<T, StoreError>>) -> Result<T, StoreError> {
        rx.recv_timeout(LONG).expect("an answer")
    }

    #[test]
    fn a_panicking_job_fails_only_its_caller_and_the_writer_goes_on() {
        let (writer, thread) = start(SqliteStore::in_memory().expect("store"), 8);
        let err = writer.run::<()>(|_| panic!("job fault")).expect_err("the job panicked");
        assert!(
            err.to_string().contains("the writer failed on this job: job fault"),
            "the caller hears what happened: {err}"
        );
        let a = change("nhu-co");
        let summary = writer.commit(batch(&[&a]), 1).expect("the next commit succeeds");
        assert_eq!(summary.new_changes, 1);
        assert!(stored(&writer, &a));
        drop(writer);
        thread.join();
    }

    #[test]
    fn a_batch_panicking_mid_commit_is_rolled_back_and_fails_alone() {
        let (bad, good) = (change("song-cau"), change("nhu-co"));
        let mut store = SqliteStore::in_memory().expect("store");
        store.set_commit_fault_for_tests(Some(bad.document.clone()));
        let (writer, thread) = start(store, 8);

        let err = writer.commit(batch(&[&bad]), 1).expect_err("the batch panicked");
        assert!(err.to_string().contains("the writer failed on this batch"), "{err}");
        assert!(!stored(&writer, &bad), "the panicking transaction was rolled back");
        assert_eq!(writer.commit(batch(&[&good]), 2).expect("next commit").new_changes, 1);

        // In one group, the panicking batch fails and the others commit.
        let other = change("ban-thi");
        let (release, held) = hold(&writer);
        let before = writer.queue_commit(batch(&[&other]), 3).expect("queued");
        let failing = writer.queue_commit(batch(&[&bad, &other]), 3).expect("queued");
        let mut after = batch(&[&good]);
        after.refused.push(refusal("kept"));
        let after = writer.queue_commit(after, 3).expect("queued");
        release.send(()).expect("release");
        wait(held).expect("held job");
        assert_eq!(wait(before).expect("its own batch is fine").new_changes, 1);
        assert!(wait(failing).is_err(), "the panicking batch fails");
        let id = wait(after).expect("its own batch is fine").first_refused_id.expect("an id");
        assert!(stored(&writer, &other));
        assert!(!stored(&writer, &bad));
        let kept = writer.run(move |s| s.refused_by_id(id)).expect("read").expect("kept");
        assert_eq!(kept.upload.reason, "kept");
        drop(writer);
        thread.join();
    }

    #[test]
    fn a_job_runs_after_the_commits_queued_before_it_and_before_those_after() {
        let (writer, thread) = start(SqliteStore::in_memory().expect("store"), 8);
        let (a, b) = (change("nhu-co"), change("song-cau"));
        let (release, held) = hold(&writer);
        let first = writer.queue_commit(batch(&[&a]), 1).expect("queued");
        let (ra, rb) = (a.clone(), b.clone());
        let seen = writer
            .queue_run(move |s| {
                Ok((s.has_change(&ra.document, &ra.hash)?, s.has_change(&rb.document, &rb.hash)?))
            })
            .expect("queued");
        let last = writer.queue_commit(batch(&[&b]), 1).expect("queued");
        release.send(()).expect("release");
        wait(held).expect("held job");
        assert_eq!(wait(seen).expect("read"), (true, false), "the job sees A and not B");
        wait(first).expect("A committed");
        wait(last).expect("B committed");
        drop(writer);
        thread.join();
    }

    #[test]
    fn each_caller_of_a_group_hears_its_own_summary() {
        let (writer, thread) = start(SqliteStore::in_memory().expect("store"), 8);
        let (x, y, z) = (change("nhu-co"), change("song-cau"), change("ban-thi"));
        let (release, held) = hold(&writer);
        let first = writer.queue_commit(batch(&[&x, &y]), 1).expect("queued");
        let mut second = batch(&[&y, &z]);
        second.refused = vec![refusal("second-1"), refusal("second-2")];
        let second = writer.queue_commit(second, 1).expect("queued");
        let third = writer.queue_commit(batch(&[&x]), 1).expect("queued");
        release.send(()).expect("release");
        wait(held).expect("held job");
        let first = wait(first).expect("committed");
        let second = wait(second).expect("committed");
        let third = wait(third).expect("committed");
        assert_eq!((first.new_changes, second.new_changes, third.new_changes), (2, 1, 0));
        assert_eq!((first.first_refused_id, third.first_refused_id), (None, None));
        let id = second.first_refused_id.expect("ids for its refusals");
        let reasons = writer
            .run(move |s| Ok([s.refused_by_id(id)?, s.refused_by_id(id + 1)?]))
            .expect("read")
            .map(|r| r.expect("kept").upload.reason);
        assert_eq!(reasons, ["second-1".to_string(), "second-2".to_string()]);
        drop(writer);
        thread.join();
    }

    #[test]
    fn a_full_queue_makes_callers_wait_until_the_writer_frees_a_place() {
        let (writer, thread) = start(SqliteStore::in_memory().expect("store"), 1);
        let (a, b) = (change("nhu-co"), change("song-cau"));
        let (release, held) = hold(&writer);
        let queued = writer.queue_commit(batch(&[&a]), 1).expect("the one place");
        assert!(
            matches!(writer.jobs.try_send(Job::Run(Box::new(|_| false))), Err(mpsc::TrySendError::Full(_))),
            "a full queue takes no more"
        );
        let (sent_tx, sent_rx) = mpsc::channel();
        let waiting = {
            let writer = writer.clone();
            let b = b.clone();
            thread::spawn(move || {
                let outcome = writer.commit(batch(&[&b]), 2);
                sent_tx.send(()).expect("test waits");
                outcome
            })
        };
        assert!(sent_rx.try_recv().is_err(), "the caller is still waiting while the writer is held");
        release.send(()).expect("release");
        wait(held).expect("held job");
        assert_eq!(wait(queued).expect("committed").new_changes, 1);
        sent_rx.recv_timeout(LONG).expect("the waiting caller went through");
        assert_eq!(waiting.join().expect("no panic").expect("committed").new_changes, 1);
        assert!(stored(&writer, &b));
        drop(writer);
        thread.join();
    }
}
