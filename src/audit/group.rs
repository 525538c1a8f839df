//! Group commit: one thread owns the [`AuditLog`] and turns many small
//! submissions into few transactions, since each commit costs an fsync.

use crossbeam_channel::{after, bounded, select, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::log::validate;
use super::{AuditError, AuditLog, NewEntry};

/// Messages queued ahead of the writer; with `max_batch` entries per commit
/// this is many commits of backlog before submitters are pushed back.
const QUEUE_CAPACITY: usize = 4096;
/// How long `submit` waits for queue space before giving up: a stuck disk must
/// surface as an error (and so as hold decisions), not as a frozen core thread.
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(2);

type Reply = Sender<Result<u64, AuditError>>;
/// Whether a checkpoint was written.
type Signed = Sender<Result<bool, AuditError>>;

enum Msg {
    Submit {
        entries: Vec<NewEntry>,
        reply: Reply,
    },
    Flush {
        reply: Reply,
    },
    /// `force`: sign whatever the bounds say ([`AuditLog::checkpoint_now`]).
    Checkpoint {
        now_wall_ms: i64,
        force: bool,
        reply: Sender<Result<bool, AuditError>>,
    },
    Shutdown,
}

pub struct GroupCommit {
    tx: Sender<Msg>,
    thread: Option<JoinHandle<Result<(), AuditError>>>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").field("queued", &self.tx.len()).finish_non_exhaustive()
    }
}

/// Resolves when the submitted entries are committed (or failed to be).
#[derive(Debug)]
#[must_use = "wait on the ticket before releasing what the entries record"]
pub struct Ticket {
    rx: Receiver<Result<u64, AuditError>>,
}

impl Ticket {
    /// Blocks until the entries are durable; returns the seq of the last one
    /// (for an empty submission: of the last entry before it).
    pub fn wait(self) -> Result<u64, AuditError> {
        self.rx.recv().map_err(|_| AuditError::Closed)?
    }
}

impl GroupCommit {
    /// Starts the writer thread. A batch is committed when `max_batch` entries
    /// are waiting, `max_delay` after its first submission, or on `flush`.
    ///
    /// Panics only if the OS cannot start a thread, like `std::thread::spawn`.
    pub fn start(log: AuditLog, max_delay: Duration, max_batch: usize) -> GroupCommit {
        let (tx, rx) = bounded(QUEUE_CAPACITY);
        let thread = std::thread::Builder::new()
            .name("audit-commit".into())
            .spawn(move || run(log, rx, max_delay, max_batch.max(1)))
            .expect("cannot start the audit commit thread");
        GroupCommit { tx, thread: Some(thread) }
    }

    /// Queues entries for the next batch. Invalid entries are refused here,
    /// so that they cannot fail the other submitters' batch.
    pub fn submit(&self, entries: Vec<NewEntry>) -> Result<Ticket, AuditError> {
        for e in &entries {
            validate(e)?;
        }
        let (reply, rx) = bounded(1);
        self.send(Msg::Submit { entries, reply })?;
        Ok(Ticket { rx })
    }

    /// Blocks until everything submitted before it is durable; returns the head seq.
    pub fn flush(&self) -> Result<u64, AuditError> {
        let (reply, rx) = bounded(1);
        self.send(Msg::Flush { reply })?;
        Ticket { rx }.wait()
    }

    /// Commits what is queued, then signs the head if the log's checkpoint
    /// interval has passed at `now_wall_ms` ([`AuditLog::checkpoint_if_due`]).
    /// Call it on a timer so an idle line's last entries get signed. Blocks
    /// until done; returns whether a checkpoint was written.
    pub fn checkpoint_if_due(&self, now_wall_ms: i64) -> Result<bool, AuditError> {
        self.checkpoint(now_wall_ms, false)
    }

    /// Commits what is queued, then signs the head whatever the bounds say
    /// ([`AuditLog::checkpoint_now`]): at a clean stop, so nothing is left unsigned.
    pub fn checkpoint_now(&self, now_wall_ms: i64) -> Result<bool, AuditError> {
        self.checkpoint(now_wall_ms, true)
    }

    fn checkpoint(&self, now_wall_ms: i64, force: bool) -> Result<bool, AuditError> {
        let (reply, rx) = bounded(1);
        self.send(Msg::Checkpoint { now_wall_ms, force, reply })?;
        rx.recv().map_err(|_| AuditError::Closed)?
    }

    /// Commits what is queued and stops the thread.
    pub fn shutdown(mut self) -> Result<(), AuditError> {
        self.stop()
    }

    fn send(&self, msg: Msg) -> Result<(), AuditError> {
        use crossbeam_channel::SendTimeoutError;
        self.tx.send_timeout(msg, SUBMIT_TIMEOUT).map_err(|e| match e {
            SendTimeoutError::Timeout(_) => AuditError::QueueFull,
            SendTimeoutError::Disconnected(_) => AuditError::Closed,
        })
    }

    fn stop(&mut self) -> Result<(), AuditError> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        // If the thread is gone already, join tells us why.
        let _ = self.tx.send(Msg::Shutdown);
        match thread.join() {
            Ok(result) => result,
            Err(_) => {
                tracing::error!("audit commit thread panicked");
                Err(AuditError::Closed)
            }
        }
    }
}

impl Drop for GroupCommit {
    /// Dropping without `shutdown` still commits what was queued.
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::error!(error = %e, "audit commit thread stopped with an error");
        }
    }
}

#[derive(Default)]
struct Batch {
    entries: Vec<NewEntry>,
    /// (reply, index past the submission's last entry in `entries`)
    submits: Vec<(Reply, usize)>,
    flushes: Vec<Reply>,
    checkpoints: Vec<(i64, bool, Signed)>,
}

fn run(mut log: AuditLog, rx: Receiver<Msg>, max_delay: Duration, max_batch: usize) -> Result<(), AuditError> {
    tracing::debug!(?max_delay, max_batch, "audit commit thread started");
    let mut batch = Batch::default();
    loop {
        // Wait for the first message of the next batch; all handles gone means stop.
        let Ok(first) = rx.recv() else {
            return Ok(());
        };
        let mut stop = batch.add(first);
        let mut urgent = batch.urgent();
        let timer = after(max_delay);
        while !stop && !urgent && batch.entries.len() < max_batch {
            select! {
                recv(rx) -> msg => match msg {
                    Ok(msg) => {
                        stop = batch.add(msg);
                        urgent = batch.urgent();
                    }
                    Err(_) => stop = true,
                },
                recv(timer) -> _ => break,
            }
        }
        let result = batch.commit(&mut log);
        if stop {
            tracing::debug!("audit commit thread stopped");
            return result;
        }
    }
}

impl Batch {
    /// Someone waits for this batch now: no point waiting for more submissions.
    fn urgent(&self) -> bool {
        !self.flushes.is_empty() || !self.checkpoints.is_empty()
    }

    /// Returns true on shutdown.
    fn add(&mut self, msg: Msg) -> bool {
        match msg {
            Msg::Submit { mut entries, reply } => {
                self.entries.append(&mut entries);
                self.submits.push((reply, self.entries.len()));
                false
            }
            Msg::Flush { reply } => {
                self.flushes.push(reply);
                false
            }
            Msg::Checkpoint { now_wall_ms, force, reply } => {
                self.checkpoints.push((now_wall_ms, force, reply));
                false
            }
            Msg::Shutdown => true,
        }
    }

    /// One transaction for the whole batch, then every ticket is answered.
    fn commit(&mut self, log: &mut AuditLog) -> Result<(), AuditError> {
        let base_seq = log.head().0;
        let result = log.append(&self.entries).map_err(Arc::new);
        self.entries.clear();
        let head = log.head().0;
        let answer = |ok: u64| match &result {
            Ok(_) => Ok(ok),
            Err(e) => Err(AuditError::Batch(e.clone())),
        };
        // Receivers may have dropped their ticket; that is their choice.
        for (reply, end) in self.submits.drain(..) {
            let _ = reply.send(answer(base_seq + end as u64));
        }
        for reply in self.flushes.drain(..) {
            let _ = reply.send(answer(head));
        }
        for (now_wall_ms, force, reply) in self.checkpoints.drain(..) {
            let signed = if force { log.checkpoint_now(now_wall_ms) } else { log.checkpoint_if_due(now_wall_ms) };
            let _ = reply.send(signed);
        }
        result.map(|_| ()).map_err(AuditError::Batch)
    }
}
