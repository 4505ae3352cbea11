//! The store writer: a thread that makes the core's batches durable (the
//! folders of renamed-in files fsynced, then one SQLite transaction with its
//! own fsync), so the core goes on deciding and installing while the disk
//! catches up. One batch at a time: while one is written, the core gathers
//! the next, so a slow disk means fewer, larger commits instead of a queue.
//! The core publishes a sequence number to peers only once the batch that
//! holds it is written (see [`CoreMsg::Saved`]).

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

/// Writes `job` to `store`. A failure is logged and the node keeps running:
/// the disk is the truth, and the next start scans it again.
pub(super) fn write(store: &mut Store, job: Job) {
    for d in &job.dirs {
        if let Ok(f) = std::fs::File::open(d) {
            let _ = f.sync_all();
        }
    }
    let n = job.batch.records();
    if let Err(e) = store.write_encoded(job.batch) {
        tracing::error!("cannot save {n} index entries: {e}");
    }
}

/// The writer thread, and whether it is busy with a batch.
pub(super) struct Saver {
    jobs: Option<Sender<Job>>,
    thread: Option<JoinHandle<Option<Store>>>,
    /// A batch was handed over and its [`CoreMsg::Saved`] has not come
    /// back yet.
    pub busy: bool,
}

impl Saver {
    /// Moves `store` to a thread of its own, which reports each batch
    /// written to `core`; gives the store back if no thread can be made.
    pub fn start(store: Store, core: Sender<CoreMsg>) -> Result<Saver, (Store, std::io::Error)> {
        // The store goes over once the thread exists, so a failed spawn
        // does not take it along.
        let (give, take) = std::sync::mpsc::channel::<Store>();
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let spawned = std::thread::Builder::new()
            .name("tandem-store".into())
            .spawn(move || {
                let mut store = take.recv().ok()?;
                for job in rx {
                    let seq = job.seq;
                    write(&mut store, job);
                    if core.send(CoreMsg::Saved(seq)).is_err() {
                        break;
                    }
                }
                Some(store)
            });
        let thread = match spawned {
            Ok(t) => t,
            Err(e) => return Err((store, e)),
        };
        if let Err(e) = give.send(store) {
            return Err((
                e.0,
                std::io::Error::other("the store writer thread ended at once"),
            ));
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

    /// Lets the thread finish what it was given and takes the store back
    /// (`None` if the thread died).
    pub fn stop(mut self) -> Option<Store> {
        drop(self.jobs.take());
        self.thread.take()?.join().ok().flatten()
    }
}
