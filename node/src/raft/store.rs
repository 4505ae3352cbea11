//! The lock table's Raft log and state machine, persisted in SQLite
//! (`STATE/raft.db`, WAL), implementing openraft's storage-v2 traits
//! ([`RaftLogStorage`], [`RaftStateMachine`], [`RaftSnapshotBuilder`]).
//!
//! What is kept, and how durably:
//! - **vote and log** (log connection, `synchronous=FULL`): `save_vote` and
//!   `append` return only once their transaction is on disk, and `append`
//!   calls its flush callback after that; `truncate` removes entries from a
//!   log id on, `purge` records the purged id and removes entries up to it,
//!   each in one transaction, so the log never has a hole.
//! - **state machine** (its own connection, `synchronous=NORMAL`): each
//!   batch of applied entries writes the changed lock rows, the last applied
//!   log id and the membership in one transaction. `NORMAL` is safe here: a
//!   process kill loses nothing (WAL), and a power loss can only lose a
//!   suffix of applied batches, whose entries are still in the log (it is
//!   purged only behind a snapshot, and the snapshot's `FULL` commit syncs
//!   the WAL before it) and are applied again.
//! - **snapshot**: the whole table serialized, with its header, one row,
//!   written `FULL`; a snapshot built from an older state never replaces a
//!   newer one (building runs concurrently with applying and installing).
//!
//! Every stored value goes through `tandem_common::codec::{encode_stored,
//! decode_stored}`; a row that does not decode is a [`RaftStoreError::Corrupt`]
//! (openraft then stops this member: it refuses to run on a damaged log).
//! `rusqlite::Connection` is not `Sync`: each lives in a mutex and is used
//! only inside `spawn_blocking`.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine};
use openraft::{
    AnyError, EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader,
    RaftSnapshotBuilder, StorageIOError,
};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tandem_common::RelPath;
use tandem_common::codec::{decode_stored, encode_stored};

use super::machine::{LockTable, PathLock};
use super::types::{
    Applied, Entry, LogId, MemberId, Snapshot, SnapshotMeta, StorageError, StoredMembership,
    TypeConfig, Vote,
};

/// File name of the Raft database in the node's state folder.
pub const RAFT_DB: &str = "raft.db";

/// Schema version written into `meta`; bumped on incompatible changes.
const SCHEMA_VERSION: i64 = 1;

/// What can go wrong with the Raft database.
#[derive(Debug, thiserror::Error)]
pub enum RaftStoreError {
    /// SQLite reported an error.
    #[error("raft database error: {0}")]
    Sql(#[from] rusqlite::Error),
    /// A stored row did not decode.
    #[error("raft database row {what} is corrupt: {reason}")]
    Corrupt {
        /// Which row.
        what: String,
        /// Why.
        reason: String,
    },
    /// A value could not be encoded for storing.
    #[error("cannot encode {what} for the raft database: {reason}")]
    Encode {
        /// Which value.
        what: String,
        /// Why.
        reason: String,
    },
    /// The database was written by an incompatible version.
    #[error(
        "raft database has schema version {0}, this build understands {SCHEMA_VERSION}; move raft.db aside and join the cluster again"
    )]
    Schema(i64),
    /// The database belongs to another node id (a copied state folder).
    #[error("raft database belongs to node {stored}, not to this node ({me}); move raft.db aside")]
    OtherMember {
        /// The id recorded in the database.
        stored: MemberId,
        /// This node's id.
        me: MemberId,
    },
    /// A log index does not fit SQLite's signed 64-bit integers.
    #[error("log index {0} is out of range")]
    Index(u64),
    /// A thread panicked while holding the database.
    #[error("raft database is unusable after a panic")]
    Poisoned,
    /// The blocking task running a database operation failed.
    #[error("raft database task failed: {0}")]
    Task(String),
}

impl RaftStoreError {
    fn into_storage(self, subject: ErrorSubject<MemberId>, verb: ErrorVerb) -> StorageError {
        StorageIOError::new(subject, verb, AnyError::new(&self)).into()
    }
}

fn encode<T: Serialize>(what: &str, v: &T) -> Result<Vec<u8>, RaftStoreError> {
    encode_stored(v)
        .map(|b| b.to_vec())
        .map_err(|e| RaftStoreError::Encode {
            what: what.to_string(),
            reason: e.to_string(),
        })
}

fn decode<T: DeserializeOwned>(what: impl Into<String>, buf: &[u8]) -> Result<T, RaftStoreError> {
    decode_stored(buf).map_err(|e| RaftStoreError::Corrupt {
        what: what.into(),
        reason: e.to_string(),
    })
}

fn sql_index(i: u64) -> Result<i64, RaftStoreError> {
    i64::try_from(i).map_err(|_| RaftStoreError::Index(i))
}

/// One connection, used by one blocking task at a time.
struct Db {
    conn: Mutex<Connection>,
}

impl Db {
    fn open(path: &Path, synchronous: &str) -> Result<Db, RaftStoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", synchronous)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        Ok(Db {
            conn: Mutex::new(conn),
        })
    }

    /// The connection, with no transaction a failed write left open on it
    /// (see [`crate::store::end_open_transaction`]).
    fn lock(&self) -> Result<MutexGuard<'_, Connection>, RaftStoreError> {
        let conn = self.conn.lock().map_err(|_| RaftStoreError::Poisoned)?;
        crate::store::end_open_transaction(&conn)?;
        Ok(conn)
    }

    /// Runs `f` on the connection in a blocking task.
    async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T, RaftStoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, RaftStoreError> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || f(&mut *db.lock()?))
            .await
            .map_err(|e| RaftStoreError::Task(e.to_string()))?
    }
}

fn get_meta<T: DeserializeOwned>(
    conn: &Connection,
    key: &str,
) -> Result<Option<T>, RaftStoreError> {
    let v: Option<Vec<u8>> = conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?;
    v.map(|b| decode(format!("meta {key}"), &b)).transpose()
}

fn put_meta<T: Serialize>(conn: &Connection, key: &str, v: &T) -> Result<(), RaftStoreError> {
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, encode(key, v)?],
    )?;
    Ok(())
}

/// Opens (or creates) the Raft database at `path` for member `me`, returning
/// the log store and the state machine openraft runs on.
pub fn open(path: &Path, me: MemberId) -> Result<(LogStore, StateMachine), RaftStoreError> {
    let log = Db::open(path, "FULL")?;
    {
        let conn = log.lock()?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS log(idx INTEGER PRIMARY KEY, entry BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS locks(path TEXT PRIMARY KEY, lock BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS snapshot(
                 id INTEGER PRIMARY KEY CHECK (id = 1),
                 meta BLOB NOT NULL,
                 data BLOB NOT NULL);",
        )?;
        match get_meta::<i64>(&conn, "schema")? {
            None => put_meta(&conn, "schema", &SCHEMA_VERSION)?,
            Some(SCHEMA_VERSION) => {}
            Some(v) => return Err(RaftStoreError::Schema(v)),
        }
        match get_meta::<MemberId>(&conn, "member")? {
            None => put_meta(&conn, "member", &me)?,
            Some(stored) if stored == me => {}
            Some(stored) => return Err(RaftStoreError::OtherMember { stored, me }),
        }
    }
    let sm = Db::open(path, "NORMAL")?;
    let state = {
        let conn = sm.lock()?;
        let mut locks = BTreeMap::new();
        let mut stmt = conn.prepare("SELECT path, lock FROM locks")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let path: String = row.get(0)?;
            let blob: Vec<u8> = row.get(1)?;
            let rel = RelPath::new(path.clone()).map_err(|e| RaftStoreError::Corrupt {
                what: format!("lock {path:?}"),
                reason: e.to_string(),
            })?;
            locks.insert(rel, decode::<PathLock>(format!("lock {path:?}"), &blob)?);
        }
        SmState {
            table: LockTable::from_locks(locks),
            applied: get_meta(&conn, "applied")?.flatten(),
            membership: get_meta(&conn, "membership")?.unwrap_or_default(),
        }
    };
    Ok((
        LogStore { db: Arc::new(log) },
        StateMachine {
            db: Arc::new(sm),
            state: Arc::new(Mutex::new(state)),
        },
    ))
}

/// The Raft log and vote. Clones share the connection (a clone is also the
/// log reader replication tasks use).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Db>,
}

fn read_entries(
    conn: &Connection,
    start: u64,
    end: Option<u64>,
) -> Result<Vec<Entry>, RaftStoreError> {
    let start = sql_index(start)?;
    let end = match end {
        Some(e) => sql_index(e)?,
        None => i64::MAX,
    };
    let mut stmt = conn
        .prepare_cached("SELECT idx, entry FROM log WHERE idx >= ?1 AND idx < ?2 ORDER BY idx")?;
    let mut rows = stmt.query(params![start, end])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let idx: i64 = row.get(0)?;
        let blob: Vec<u8> = row.get(1)?;
        out.push(decode::<Entry>(format!("log entry {idx}"), &blob)?);
    }
    Ok(out)
}

fn range_to_bounds(range: &impl RangeBounds<u64>) -> (u64, Option<u64>) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => Some(e.saturating_add(1)),
        Bound::Excluded(&e) => Some(e),
        Bound::Unbounded => None,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = range_to_bounds(&range);
        self.db
            .run(move |conn| read_entries(conn, start, end))
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Read))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        self.db
            .run(|conn| {
                let last_purged_log_id: Option<LogId> = get_meta(conn, "purged")?;
                let last: Option<(i64, Vec<u8>)> = conn
                    .query_row(
                        "SELECT idx, entry FROM log ORDER BY idx DESC LIMIT 1",
                        [],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                let last_log_id = match last {
                    Some((idx, blob)) => {
                        Some(decode::<Entry>(format!("log entry {idx}"), &blob)?.log_id)
                    }
                    None => last_purged_log_id,
                };
                Ok(LogState {
                    last_purged_log_id,
                    last_log_id,
                })
            })
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Read))
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let vote = *vote;
        self.db
            .run(move |conn| put_meta(conn, "vote", &vote))
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Vote, ErrorVerb::Write))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.db
            .run(|conn| get_meta(conn, "vote"))
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Vote, ErrorVerb::Read))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let rows = entries
            .into_iter()
            .map(|e| Ok((sql_index(e.log_id.index)?, encode("log entry", &e)?)))
            .collect::<Result<Vec<_>, RaftStoreError>>();
        let res = match rows {
            Ok(rows) => {
                self.db
                    .run(move |conn| {
                        let tx = conn.transaction()?;
                        {
                            let mut stmt = tx.prepare_cached(
                                "INSERT OR REPLACE INTO log(idx, entry) VALUES (?1, ?2)",
                            )?;
                            for (idx, blob) in &rows {
                                stmt.execute(params![idx, blob])?;
                            }
                        }
                        tx.commit()?;
                        Ok(())
                    })
                    .await
            }
            Err(e) => Err(e),
        };
        // The transaction is committed with synchronous=FULL: durable now.
        match res {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(e.into_storage(ErrorSubject::Logs, ErrorVerb::Write))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.db
            .run(move |conn| {
                conn.execute(
                    "DELETE FROM log WHERE idx >= ?1",
                    [sql_index(log_id.index)?],
                )?;
                Ok(())
            })
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Delete))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.db
            .run(move |conn| {
                let tx = conn.transaction()?;
                put_meta(&tx, "purged", &log_id)?;
                tx.execute(
                    "DELETE FROM log WHERE idx <= ?1",
                    [sql_index(log_id.index)?],
                )?;
                tx.commit()?;
                Ok(())
            })
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Delete))
    }
}

/// The applied state: the table, how far it is applied, the membership.
struct SmState {
    table: LockTable,
    applied: Option<LogId>,
    membership: StoredMembership,
}

/// A read-only handle on the committed lock table of this member (what it
/// has applied; a follower may be behind the leader).
#[derive(Clone)]
pub struct LockView {
    state: Arc<Mutex<SmState>>,
}

impl LockView {
    fn with<T>(&self, f: impl FnOnce(&SmState) -> T) -> Result<T, RaftStoreError> {
        let s = self.state.lock().map_err(|_| RaftStoreError::Poisoned)?;
        Ok(f(&s))
    }

    /// Every lock, in path order.
    pub fn locks(&self) -> Result<BTreeMap<RelPath, PathLock>, RaftStoreError> {
        self.with(|s| s.table.locks().clone())
    }

    /// The lock on `path`, if any.
    pub fn get(&self, path: &RelPath) -> Result<Option<PathLock>, RaftStoreError> {
        self.with(|s| s.table.get(path).cloned())
    }

    /// The last applied log id.
    pub fn applied(&self) -> Result<Option<LogId>, RaftStoreError> {
        self.with(|s| s.applied)
    }
}

/// The lock table as openraft's state machine. Clones share everything
/// (a clone is the snapshot builder).
#[derive(Clone)]
pub struct StateMachine {
    db: Arc<Db>,
    state: Arc<Mutex<SmState>>,
}

impl StateMachine {
    /// A read handle on the applied table.
    pub fn view(&self) -> LockView {
        LockView {
            state: self.state.clone(),
        }
    }

    fn lock_state(state: &Mutex<SmState>) -> Result<MutexGuard<'_, SmState>, RaftStoreError> {
        state.lock().map_err(|_| RaftStoreError::Poisoned)
    }
}

fn write_snapshot(
    conn: &Connection,
    meta: &SnapshotMeta,
    data: &[u8],
    only_if_newer: bool,
) -> Result<bool, RaftStoreError> {
    if only_if_newer {
        let stored: Option<Vec<u8>> = conn
            .query_row("SELECT meta FROM snapshot WHERE id = 1", [], |r| r.get(0))
            .optional()?;
        if let Some(b) = stored {
            let old: SnapshotMeta = decode("snapshot meta", &b)?;
            if old.last_log_id >= meta.last_log_id {
                return Ok(false);
            }
        }
    }
    conn.execute(
        "INSERT INTO snapshot(id, meta, data) VALUES (1, ?1, ?2)
         ON CONFLICT(id) DO UPDATE SET meta = excluded.meta, data = excluded.data",
        params![encode("snapshot meta", meta)?, data],
    )?;
    Ok(true)
}

/// Runs `f` with `synchronous=FULL`: a snapshot's commit also syncs every
/// applied batch before it (those run with `NORMAL`).
fn fully_synced<T>(
    conn: &mut Connection,
    f: impl FnOnce(&mut Connection) -> Result<T, RaftStoreError>,
) -> Result<T, RaftStoreError> {
    conn.pragma_update(None, "synchronous", "FULL")?;
    let res = f(conn);
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    res
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let state = self.state.clone();
        let res = self
            .db
            .run(move |conn| {
                let (meta, data) = {
                    let s = Self::lock_state(&state)?;
                    let data = encode("lock table", s.table.locks())?;
                    let id = match &s.applied {
                        Some(l) => format!("{}-{}-{}", l.leader_id, l.index, uuid::Uuid::new_v4()),
                        None => format!("none-{}", uuid::Uuid::new_v4()),
                    };
                    let meta = SnapshotMeta {
                        last_log_id: s.applied,
                        last_membership: s.membership.clone(),
                        snapshot_id: id,
                    };
                    (meta, data)
                };
                fully_synced(conn, |conn| write_snapshot(conn, &meta, &data, true))?;
                Ok(Snapshot {
                    meta,
                    snapshot: Box::new(Cursor::new(data)),
                })
            })
            .await;
        res.map_err(|e| e.into_storage(ErrorSubject::Snapshot(None), ErrorVerb::Write))
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let s = Self::lock_state(&self.state)
            .map_err(|e| e.into_storage(ErrorSubject::StateMachine, ErrorVerb::Read))?;
        Ok((s.applied, s.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let state = self.state.clone();
        self.db
            .run(move |conn| {
                let mut s = Self::lock_state(&state)?;
                let mut replies = Vec::with_capacity(entries.len());
                let mut changed = Vec::new();
                let mut membership_changed = false;
                for entry in entries {
                    s.applied = Some(entry.log_id);
                    match entry.payload {
                        EntryPayload::Blank => replies.push(Applied::Nothing),
                        EntryPayload::Normal(cmd) => {
                            replies.push(Applied::Lock(s.table.apply(&cmd)));
                            changed.push(cmd.path().clone());
                        }
                        EntryPayload::Membership(m) => {
                            s.membership = StoredMembership::new(Some(entry.log_id), m);
                            membership_changed = true;
                            replies.push(Applied::Nothing);
                        }
                    }
                }
                changed.sort();
                changed.dedup();
                let tx = conn.transaction()?;
                for path in &changed {
                    match s.table.get(path) {
                        Some(lock) => {
                            tx.execute(
                                "INSERT INTO locks(path, lock) VALUES (?1, ?2)
                                 ON CONFLICT(path) DO UPDATE SET lock = excluded.lock",
                                params![path.as_str(), encode("lock", lock)?],
                            )?;
                        }
                        None => {
                            tx.execute("DELETE FROM locks WHERE path = ?1", [path.as_str()])?;
                        }
                    }
                }
                put_meta(&tx, "applied", &s.applied)?;
                if membership_changed {
                    put_meta(&tx, "membership", &s.membership)?;
                }
                tx.commit()?;
                Ok(replies)
            })
            .await
            .map_err(|e| e.into_storage(ErrorSubject::StateMachine, ErrorVerb::Write))
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let meta = meta.clone();
        let subject = ErrorSubject::Snapshot(Some(meta.signature()));
        let data = snapshot.into_inner();
        let state = self.state.clone();
        self.db
            .run(move |conn| {
                let locks: BTreeMap<RelPath, PathLock> = decode("received snapshot", &data)?;
                let mut s = Self::lock_state(&state)?;
                fully_synced(conn, |conn| {
                    let tx = conn.transaction()?;
                    tx.execute("DELETE FROM locks", [])?;
                    {
                        let mut stmt =
                            tx.prepare_cached("INSERT INTO locks(path, lock) VALUES (?1, ?2)")?;
                        for (path, lock) in &locks {
                            stmt.execute(params![path.as_str(), encode("lock", lock)?])?;
                        }
                    }
                    put_meta(&tx, "applied", &meta.last_log_id)?;
                    put_meta(&tx, "membership", &meta.last_membership)?;
                    write_snapshot(&tx, &meta, &data, false)?;
                    tx.commit()?;
                    Ok(())
                })?;
                *s = SmState {
                    table: LockTable::from_locks(locks),
                    applied: meta.last_log_id,
                    membership: meta.last_membership.clone(),
                };
                Ok(())
            })
            .await
            .map_err(|e| e.into_storage(subject, ErrorVerb::Write))
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        self.db
            .run(|conn| {
                let row: Option<(Vec<u8>, Vec<u8>)> = conn
                    .query_row("SELECT meta, data FROM snapshot WHERE id = 1", [], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .optional()?;
                row.map(|(meta, data)| {
                    Ok(Snapshot {
                        meta: decode("snapshot meta", &meta)?,
                        snapshot: Box::new(Cursor::new(data)),
                    })
                })
                .transpose()
            })
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Snapshot(None), ErrorVerb::Read))
    }
}

#[cfg(test)]
mod tests {
    use openraft::storage::RaftLogStorageExt;
    use openraft::testing::{StoreBuilder, Suite};
    use openraft::{CommittedLeaderId, Membership};
    use uuid::Uuid;

    use super::*;
    use crate::raft::machine::{Claim, LockCommand, LockOutcome};

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
        async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
            let dir = tempfile::tempdir().expect("temp dir");
            let (log, sm) = open(&dir.path().join(RAFT_DB), MemberId::from(0))
                .map_err(|e| e.into_storage(ErrorSubject::Store, ErrorVerb::Read))?;
            Ok((dir, log, sm))
        }
    }

    /// openraft's own compliance suite for storage-v2 implementations.
    #[test]
    fn openraft_storage_suite_passes() {
        Suite::test_all(Builder).unwrap();
    }

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, MemberId::from(1)), index)
    }

    fn lock_entry(term: u64, index: u64, path: &str, owner: u128) -> Entry {
        Entry {
            log_id: log_id(term, index),
            payload: EntryPayload::Normal(LockCommand::Lock {
                path: RelPath::new(path).unwrap(),
                claim: Claim {
                    owner: Uuid::from_u128(owner),
                    owner_name: format!("user{owner}"),
                    via: tandem_common::NodeId(Uuid::from_u128(7)),
                    at_ns: index as i64,
                },
            }),
        }
    }

    fn membership_entry(term: u64, index: u64) -> Entry {
        let voters = BTreeSet::from([MemberId::from(1), MemberId::from(2), MemberId::from(3)]);
        Entry {
            log_id: log_id(term, index),
            payload: EntryPayload::Membership(Membership::new(vec![voters], None)),
        }
    }

    use std::collections::BTreeSet;

    #[tokio::test]
    async fn log_vote_table_and_snapshot_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RAFT_DB);
        let me = MemberId::from(1);
        {
            let (mut log, mut sm) = open(&path, me).unwrap();
            let vote = Vote::new(3, me);
            log.save_vote(&vote).await.unwrap();
            let entries = vec![
                membership_entry(1, 1),
                lock_entry(1, 2, "a", 1),
                lock_entry(1, 3, "a", 2),
                lock_entry(2, 4, "b", 2),
                lock_entry(2, 5, "c", 3),
            ];
            log.blocking_append(entries.clone()).await.unwrap();
            let replies = sm.apply(entries[..4].to_vec()).await.unwrap();
            assert_eq!(replies[0], Applied::Nothing);
            assert!(matches!(replies[1], Applied::Lock(LockOutcome::Granted(_))));
            assert!(matches!(
                replies[2],
                Applied::Lock(LockOutcome::Refused { .. })
            ));
            sm.get_snapshot_builder()
                .await
                .build_snapshot()
                .await
                .unwrap();
            log.purge(log_id(1, 2)).await.unwrap();
            log.truncate(log_id(2, 5)).await.unwrap();
        }
        let (mut log, mut sm) = open(&path, me).unwrap();
        assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(3, me)));
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 2)));
        assert_eq!(state.last_log_id, Some(log_id(2, 4)));
        let kept = log.try_get_log_entries(0..100).await.unwrap();
        let idx: Vec<u64> = kept.iter().map(|e| e.log_id.index).collect();
        assert_eq!(idx, vec![3, 4]);
        let (applied, membership) = sm.applied_state().await.unwrap();
        assert_eq!(applied, Some(log_id(2, 4)));
        assert_eq!(membership.log_id(), &Some(log_id(1, 1)));
        let view = sm.view();
        let locks = view.locks().unwrap();
        assert_eq!(locks.len(), 2);
        assert_eq!(
            locks[&RelPath::new("a").unwrap()].holder.owner,
            Uuid::from_u128(1)
        );
        let snap = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(snap.meta.last_log_id, Some(log_id(2, 4)));
    }

    #[tokio::test]
    async fn an_installed_snapshot_replaces_the_table_and_an_older_build_does_not_replace_it() {
        let dir = tempfile::tempdir().unwrap();
        let me = MemberId::from(1);
        let (_, mut leader) = open(&dir.path().join("leader.db"), me).unwrap();
        leader
            .apply(vec![
                membership_entry(1, 1),
                lock_entry(1, 2, "x", 1),
                lock_entry(1, 3, "y", 2),
            ])
            .await
            .unwrap();
        let snap = leader
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();

        let path = dir.path().join("follower.db");
        let (_, mut follower) = open(&path, MemberId::from(2)).unwrap();
        follower
            .apply(vec![lock_entry(1, 1, "old", 9)])
            .await
            .unwrap();
        let mut older = follower.get_snapshot_builder().await;
        follower
            .install_snapshot(&snap.meta, snap.snapshot)
            .await
            .unwrap();
        // A build that started before the install must not replace it.
        let _ = older.build_snapshot().await.unwrap();
        let cur = follower.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(cur.meta.last_log_id, Some(log_id(1, 3)));
        drop(follower);
        let (_, mut follower) = open(&path, MemberId::from(2)).unwrap();
        let locks = follower.view().locks().unwrap();
        let names: Vec<&str> = locks.keys().map(|p| p.as_str()).collect();
        assert_eq!(names, vec!["x", "y"]);
        assert_eq!(
            follower.applied_state().await.unwrap().0,
            Some(log_id(1, 3))
        );
    }

    #[tokio::test]
    async fn corrupt_rows_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RAFT_DB);
        let me = MemberId::from(1);
        {
            let (mut log, _) = open(&path, me).unwrap();
            log.blocking_append(vec![lock_entry(1, 1, "a", 1)])
                .await
                .unwrap();
        }
        let conn = Connection::open(&path).unwrap();
        conn.execute("UPDATE log SET entry = x'ff00ff' WHERE idx = 1", [])
            .unwrap();
        conn.execute("INSERT INTO locks(path, lock) VALUES ('a', x'01')", [])
            .unwrap();
        drop(conn);
        // The table row is read at open: refused with a reason.
        let err = open(&path, me)
            .err()
            .expect("a corrupt lock row is refused");
        assert!(matches!(err, RaftStoreError::Corrupt { .. }), "{err}");
        let conn = Connection::open(&path).unwrap();
        conn.execute("DELETE FROM locks", []).unwrap();
        conn.execute("INSERT INTO locks(path, lock) VALUES ('../up', x'01')", [])
            .unwrap();
        drop(conn);
        assert!(matches!(
            open(&path, me),
            Err(RaftStoreError::Corrupt { .. })
        ));
        let conn = Connection::open(&path).unwrap();
        conn.execute("DELETE FROM locks", []).unwrap();
        drop(conn);
        // The log row is read on demand: an error, not a panic.
        let (mut log, mut sm) = open(&path, me).unwrap();
        assert!(log.try_get_log_entries(0..10).await.is_err());
        assert!(log.get_log_state().await.is_err());
        // A received snapshot that does not decode is refused.
        let meta = SnapshotMeta {
            last_log_id: Some(log_id(1, 5)),
            last_membership: StoredMembership::default(),
            snapshot_id: "bad".into(),
        };
        let bad = Box::new(Cursor::new(vec![0xff, 0xff, 0xff]));
        assert!(sm.install_snapshot(&meta, bad).await.is_err());
        assert!(sm.view().locks().unwrap().is_empty());
    }

    #[test]
    fn another_nodes_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RAFT_DB);
        drop(open(&path, MemberId::from(1)).unwrap());
        let err = open(&path, MemberId::from(2)).err().unwrap();
        assert!(matches!(err, RaftStoreError::OtherMember { .. }), "{err}");
    }
}
