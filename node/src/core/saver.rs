//! The store writer: a thread that makes the core's batches durable (the
//! folders of renamed-in files fsynced, then one SQLite transaction with its
//! own fsync), so the core goes on deciding and installing while the disk
//! catches up. One batch at a time: while one is written, the core gathers
//! the next, so a slow disk means fewer, larger commits instead of a queue.
//!
//! The core publishes a sequence number to peers only once every batch up
//! to it is written (see [`CoreMsg::Saved`]): a crash must not renumber
//! what a peer has already seen. A batch that cannot be written is kept and
//! tried again, in order, before the next one; until then peers are sent
//! nothing newer, and the core sends the next batch only after a pause.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::thread::JoinHandle;

use crate::store::{Encoded, Store};

use super::CoreMsg;

/// One batch to make durable.
pub(super) struct Job {
    /// Folders whose entries changed (renamed-in files): synced first, so a
    /// crash after the commit cannot find a recorded install undone.
    pub dirs: Vec<PathBuf>,
    /// The store's part.
    pub batch: Encoded,
    /// The index's sequence number once this batch is written.
    pub seq: u64,
}

/// Batches not written yet, oldest first.
pub(super) type Backlog = VecDeque<Job>;

/// Writes the batches of `backlog` to `store` in order, removing each one
/// written, and stops at the first that fails (logged; it stays, to be
/// tried again). Returns the sequence number of the last batch written.
pub(super) fn write_backlog(store: &mut Store, backlog: &mut Backlog) -> Option<u64> {
    let mut saved = None;
    while let Some(job) = backlog.front() {
        sync_dirs(&job.dirs);
        // A panic in the database layer is a failed write, not a dead
        // writer that would leave the core waiting for it.
        let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            store.write_encoded(&job.batch)
        }));
        let n = job.batch.records();
        match written {
            Ok(Ok(())) => {
                saved = Some(job.seq);
                backlog.pop_front();
            }
            Ok(Err(e)) => {
                tracing::error!(
                    "cannot save {n} index entries: {e}; trying again (peers are sent no newer changes until this succeeds)"
                );
                break;
            }
            Err(_) => {
                tracing::error!(
                    "saving {n} index entries failed (panicked); trying again (peers are sent no newer changes until this succeeds)"
                );
                break;
            }
        }
    }
    saved
}

/// Syncs the entries of `dirs` (before a commit that records installs in
/// them).
pub(super) fn sync_dirs(dirs: &[PathBuf]) {
    for d in dirs {
        if let Ok(f) = std::fs::File::open(d) {
            let _ = f.sync_all();
        }
    }
}

/// The writer thread, and whether it is busy with a batch.
pub(super) struct Saver {
    jobs: Option<Sender<Job>>,
    thread: Option<JoinHandle<Option<(Store, Backlog)>>>,
    /// A batch was handed over and its [`CoreMsg::Saved`] has not come
    /// back yet.
    pub busy: bool,
}

impl Saver {
    /// Moves `store` and the batches not yet written to a thread of their
    /// own, which reports each batch to `core`; gives them back if no
    /// thread can be made.
    pub fn start(
        store: Store,
        backlog: Backlog,
        core: Sender<CoreMsg>,
    ) -> Result<Saver, Box<(Store, Backlog, std::io::Error)>> {
        // The store goes over once the thread exists, so a failed spawn
        // does not take it along.
        let (give, take) = std::sync::mpsc::channel::<(Store, Backlog)>();
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let spawned = std::thread::Builder::new()
            .name("tandem-store".into())
            .spawn(move || {
                let (mut store, mut backlog) = take.recv().ok()?;
                for job in rx {
                    backlog.push_back(job);
                    let saved = write_backlog(&mut store, &mut backlog);
                    let msg = CoreMsg::Saved {
                        upto: saved,
                        failing: !backlog.is_empty(),
                    };
                    if core.send(msg).is_err() {
                        break;
                    }
                }
                Some((store, backlog))
            });
        let thread = match spawned {
            Ok(t) => t,
            Err(e) => return Err(Box::new((store, backlog, e))),
        };
        if let Err(e) = give.send((store, backlog)) {
            let (store, backlog) = e.0;
            let e = std::io::Error::other("the store writer thread ended at once");
            return Err(Box::new((store, backlog, e)));
        }
        Ok(Saver {
            jobs: Some(tx),
            thread: Some(thread),
            busy: false,
        })
    }

    /// Hands `job` over; if the thread is gone, says how many index
    /// records it held (they are not saved).
    pub fn send(&mut self, job: Job) -> Result<(), usize> {
        let Some(jobs) = &self.jobs else {
            return Err(job.batch.records());
        };
        jobs.send(job).map_err(|e| e.0.batch.records())?;
        self.busy = true;
        Ok(())
    }

    /// Lets the thread finish what it was given and takes the store and
    /// what is still unwritten back (`None` if the thread died).
    pub fn stop(mut self) -> Option<(Store, Backlog)> {
        drop(self.jobs.take());
        self.thread.take()?.join().ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Batch;
    use crate::store::tests::record;

    fn job(path: &str, seq: u64) -> Job {
        let r = record(path, seq, false);
        Job {
            dirs: Vec::new(),
            batch: Encoded::of(&Batch {
                records: &[r],
                ..Batch::default()
            })
            .unwrap(),
            seq,
        }
    }

    #[test]
    fn a_batch_that_cannot_be_written_stays_and_goes_first_when_it_can() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("index.db");
        let mut store = Store::open(&db).unwrap();
        // Another connection takes the table away: every write fails.
        let other = rusqlite::Connection::open(&db).unwrap();
        other.execute_batch("DROP TABLE files").unwrap();
        let mut backlog = Backlog::new();
        backlog.push_back(job("a", 1));
        assert_eq!(write_backlog(&mut store, &mut backlog), None);
        backlog.push_back(job("b", 2));
        assert_eq!(write_backlog(&mut store, &mut backlog), None);
        assert_eq!(backlog.len(), 2, "nothing unwritten is dropped");
        // Opening the store again makes the table: both go, in order.
        drop(Store::open(&db).unwrap());
        assert_eq!(write_backlog(&mut store, &mut backlog), Some(2));
        assert!(backlog.is_empty());
        let mut got: Vec<(String, u64)> = store
            .load()
            .unwrap()
            .into_iter()
            .map(|r| (r.entry.path.to_string(), r.seq))
            .collect();
        got.sort();
        assert_eq!(got, vec![("a".into(), 1), ("b".into(), 2)]);
    }
}
