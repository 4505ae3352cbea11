//! The node's persistent state in SQLite (WAL, `synchronous=FULL`): the index
//! of entries with their local sequence numbers and last-seen disk stat, and
//! small metadata (the node's id).
//!
//! Every batch of changes is one transaction, so `kill -9` at any moment
//! leaves the index either before or after the batch. The connection is
//! owned by the core thread alone (`rusqlite::Connection` is not `Sync`).

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};
use tandem_common::proto::IdentityRecord;
use tandem_common::{FileEntry, NodeId, RelPath, codec};
use uuid::Uuid;

use crate::held::Held;
use crate::index::{LocalStat, Record};

/// Schema version written into `meta`; bumped on incompatible changes.
/// 2: entries (bincode in `files`, `needed` and `held`) list the writes they
/// show and the live conflict losers (`FileEntry::written`, `losers`).
/// 3: `needed` holds the peer's entry as announced (the decision is made
/// again before it is carried out) and also remote deletes, folders and
/// metadata changes not yet applied. A schema-2 folder is migrated on
/// open: its pending downloads are dropped and every peer's progress is
/// reset, so peers announce everything again and it is decided anew.
/// 4: the node id is the id of the node's key; client identities carry a
/// role instead of a token. A schema-3 (or 2) folder is migrated on open:
/// client identities are dropped (clients are approved again; the first
/// client over loopback becomes admin) and peers' progress is reset, as
/// the node's id changes with its new key.
/// 5: no `locks` table: locks live in the lock cluster (`STATE/raft.db`).
/// A schema-4 folder is migrated on open by dropping the table (its locks
/// are forgotten, with a warning when there were any).
/// 6: entries may be symbolic links (`EntryKind::Link`), which a build that
/// knows only schema 5 could not decode: it refuses the folder by its
/// schema instead of calling a row corrupt. A schema-5 folder is taken as
/// it is (its links were never indexed; the start-up scan finds them).
/// 7: the block hashes of a file of more than one block are BLAKE3 chaining
/// values (see `tandem_common::hashing`; protocol 18). A schema-6 (or 5)
/// folder is migrated on open: peers' entries waiting here (`needed`,
/// `held`) are dropped and every peer's progress is reset, so peers
/// announce everything again, with lists of the new kind. Our own records'
/// lists of the older kind do not make their content hash: the index
/// finds them as it loads, and the start-up scan reads those files again
/// and records their new lists (same version; see `Index::relist`).
const SCHEMA_VERSION: i64 = 7;

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite reported an error.
    #[error("index database error: {0}")]
    Sql(#[from] rusqlite::Error),
    /// A stored row did not decode.
    #[error("index database row for {path:?} is corrupt: {reason}")]
    Corrupt {
        /// Which row.
        path: String,
        /// Why.
        reason: String,
    },
    /// A test's fail point (`TANDEM_FAIL_AT`, debug builds) made this fail.
    #[error("failed on purpose at fail point {0} (TANDEM_FAIL_AT)")]
    FailPoint(&'static str),
    /// The database was written by an incompatible version.
    #[error(
        "index database has schema version {0}, this build understands {SCHEMA_VERSION}; move the state folder aside to re-index"
    )]
    Schema(i64),
}

/// Ends a transaction a failed write left open on `conn`. rusqlite rolls a
/// dropped transaction back but ignores an error from that rollback (a
/// busy or failing disk), and the connection then stays inside the old
/// transaction: every later `BEGIN` would fail, and a statement outside one
/// would join it, reporting success for a write that is never committed.
/// So every use of a connection checks first.
pub(crate) fn end_open_transaction(conn: &Connection) -> rusqlite::Result<()> {
    if !conn.is_autocommit() {
        tracing::warn!(
            "a database transaction was left open (its rollback failed); rolling it back now"
        );
        conn.execute_batch("ROLLBACK")?;
    }
    Ok(())
}

/// Begins a transaction on `conn` (after [`end_open_transaction`]).
fn begin(conn: &mut Connection) -> rusqlite::Result<rusqlite::Transaction<'_>> {
    end_open_transaction(conn)?;
    conn.transaction()
}

/// `PRAGMA cache_size` of the store: a negative number is KiB (256 KiB).
const CACHE_SIZE: i64 = -256;

/// The open database.
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        // SQLite's page cache at most 256 KiB (its default is 2 MB). The
        // store's writes go in path and sequence order and its reads are
        // whole-table loads at start, which a bigger cache does not speed:
        // 100,000 files indexed cold or warm took the same time with it,
        // and the default cache held 1.6-2 MiB more (bench/SYNC.md,
        // session 28).
        conn.pragma_update(None, "cache_size", CACHE_SIZE)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS files(
                 path TEXT PRIMARY KEY,
                 seq INTEGER NOT NULL,
                 entry BLOB NOT NULL,
                 inode INTEGER, size INTEGER, mtime_ns INTEGER, mode INTEGER);
             CREATE INDEX IF NOT EXISTS files_seq ON files(seq);
             CREATE TABLE IF NOT EXISTS peers(id BLOB PRIMARY KEY, seq INTEGER NOT NULL, name TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS needed(path TEXT PRIMARY KEY, wanted BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS identities(id BLOB PRIMARY KEY, record BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS held(n INTEGER PRIMARY KEY, item BLOB NOT NULL);",
        )?;
        let store = Store { conn };
        match store.meta_i64("schema")? {
            None => store.set_meta("schema", &SCHEMA_VERSION.to_be_bytes())?,
            Some(SCHEMA_VERSION) => {}
            Some(v @ (5 | 6)) => {
                tracing::warn!(
                    "migrating the index database from schema {v} to {SCHEMA_VERSION}: files larger than one block are read again at start-up for their new block lists, and peers will announce everything again"
                );
                store.conn.execute_batch(&format!(
                    "BEGIN;
                     DELETE FROM needed; DELETE FROM held; UPDATE peers SET seq = 0;
                     INSERT OR REPLACE INTO meta(key, value) VALUES ('schema', X'{:016X}');
                     COMMIT;",
                    SCHEMA_VERSION
                ))?;
            }
            Some(4) => {
                // Locks moved to the lock cluster (STATE/raft.db) in
                // protocol 7; the old vote's records mean nothing there.
                let n: i64 = store
                    .conn
                    .query_row("SELECT count(*) FROM locks", [], |r| r.get(0))
                    .unwrap_or(0);
                if n > 0 {
                    tracing::warn!(
                        "migrating the index database from schema 4 to {SCHEMA_VERSION}: locks taken before this version are forgotten (locks now live in the lock cluster); take them again"
                    );
                }
                store
                    .conn
                    .execute_batch("BEGIN; DROP TABLE IF EXISTS locks; COMMIT;")?;
                store.set_meta("schema", &SCHEMA_VERSION.to_be_bytes())?;
            }
            Some(v @ (2 | 3)) => {
                tracing::warn!(
                    "migrating the index database from schema {v} to {SCHEMA_VERSION}: peers will announce everything again, and client identities must be approved again (the first client over loopback becomes admin)"
                );
                let needed = if v == 2 { "DELETE FROM needed;" } else { "" };
                store.conn.execute_batch(&format!(
                    "BEGIN; {needed} UPDATE peers SET seq = 0; DELETE FROM identities; DROP TABLE IF EXISTS locks; COMMIT;"
                ))?;
                store.set_meta("schema", &SCHEMA_VERSION.to_be_bytes())?;
            }
            Some(v) => return Err(StoreError::Schema(v)),
        }
        Ok(store)
    }

    /// The connection, with no transaction left open on it (see
    /// [`end_open_transaction`]).
    fn db(&self) -> Result<&Connection, StoreError> {
        end_open_transaction(&self.conn)?;
        Ok(&self.conn)
    }

    /// The version counter a receive-only node's withheld writes are above
    /// (see [`crate::index::Index::withhold_above`]); `None` when it is not
    /// receive-only.
    pub fn receive_only_since(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.meta_i64("receive_only_since")?.map(|v| v as u64))
    }

    /// Records (or clears) [`Store::receive_only_since`].
    pub fn set_receive_only_since(&self, c: Option<u64>) -> Result<(), StoreError> {
        match c {
            Some(c) => self.set_meta("receive_only_since", &(c as i64).to_be_bytes()),
            None => {
                self.db()?
                    .execute("DELETE FROM meta WHERE key = 'receive_only_since'", [])?;
                Ok(())
            }
        }
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .db()?
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    fn meta_i64(&self, key: &str) -> Result<Option<i64>, StoreError> {
        Ok(self
            .meta(key)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map(i64::from_be_bytes))
    }

    fn set_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.db()?.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES (?1, ?2)",
            params![key, value],
        )?;
        Ok(())
    }

    /// Makes `id` (the id of the node's key) this store's node id. A store
    /// made under another id forgets every peer's progress, so peers
    /// announce everything again to the node under its new name.
    pub fn adopt_node_id(&self, id: NodeId) -> Result<(), StoreError> {
        let old = self.meta("node_id")?;
        if old.as_deref() == Some(id.0.as_bytes().as_slice()) {
            return Ok(());
        }
        if old.is_some() {
            tracing::warn!(
                "this node's id is now {id} (from its key); peers will announce everything again"
            );
            self.db()?.execute_batch("UPDATE peers SET seq = 0")?;
        }
        self.set_meta("node_id", id.0.as_bytes())
    }

    /// This node's id, generated and saved on first use.
    pub fn node_id(&self) -> Result<NodeId, StoreError> {
        if let Some(v) = self.meta("node_id")?
            && let Ok(u) = Uuid::from_slice(&v)
        {
            return Ok(NodeId(u));
        }
        let id = NodeId::random();
        self.set_meta("node_id", id.0.as_bytes())?;
        Ok(id)
    }

    /// Frees SQLite's caches (after the start-up scan's big transaction).
    pub fn release_memory(&self) {
        let _ = self.conn.execute_batch("PRAGMA shrink_memory");
    }

    /// Every stored record.
    pub fn load(&self) -> Result<Vec<Record>, StoreError> {
        let mut out = Vec::new();
        self.load_each(|r| out.push(r))?;
        Ok(out)
    }

    /// Hands every stored record to `f`, one at a time.
    pub fn load_each(&self, mut f: impl FnMut(Record)) -> Result<(), StoreError> {
        let mut stmt = self
            .db()?
            .prepare("SELECT path, seq, entry, inode, size, mtime_ns, mode FROM files")?;
        // Rows are read in place (no copy of each path and entry blob).
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let seq = r.get::<_, i64>(1)?;
            let (inode, size, mtime_ns, mode) = (
                r.get::<_, Option<i64>>(3)?,
                r.get::<_, Option<i64>>(4)?,
                r.get::<_, Option<i64>>(5)?,
                r.get::<_, Option<i64>>(6)?,
            );
            let blob = r.get_ref(2)?.as_blob().map_err(rusqlite::Error::from)?;
            let entry: FileEntry = codec::decode_stored(blob).map_err(|e| StoreError::Corrupt {
                path: r.get::<_, String>(0).unwrap_or_default(),
                reason: e.to_string(),
            })?;
            let stat = match (inode, size, mtime_ns, mode) {
                (Some(i), Some(s), Some(m), Some(md)) => Some(LocalStat {
                    inode: i as u64,
                    size: s as u64,
                    mtime_ns: m,
                    mode: md as u32,
                }),
                _ => None,
            };
            f(Record {
                entry,
                seq: seq as u64,
                stat,
            });
        }
        Ok(())
    }

    /// Every known peer: (id, highest of its sequence numbers applied, name).
    pub fn peers(&self) -> Result<Vec<(NodeId, u64, String)>, StoreError> {
        let mut stmt = self.db()?.prepare("SELECT id, seq, name FROM peers")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, seq, name) = row?;
            if let Ok(u) = Uuid::from_slice(&id) {
                out.push((NodeId(u), seq as u64, name));
            }
        }
        Ok(out)
    }

    fn blobs<T: serde::de::DeserializeOwned>(&self, sql: &str) -> Result<Vec<T>, StoreError> {
        let mut stmt = self.db()?.prepare(sql)?;
        let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
        let mut out = Vec::new();
        for row in rows {
            match codec::decode_stored::<T>(&row?) {
                Ok(v) => out.push(v),
                Err(e) => tracing::warn!("skipping an unreadable row ({sql}): {e}"),
            }
        }
        Ok(out)
    }

    /// Every client identity.
    pub fn identities(&self) -> Result<Vec<IdentityRecord>, StoreError> {
        self.blobs("SELECT record FROM identities")
    }

    /// Remote changes held by locks.
    pub fn held(&self) -> Result<Vec<Held>, StoreError> {
        self.blobs("SELECT item FROM held ORDER BY n")
    }

    /// Remote versions this node still has to fetch.
    pub fn needed(&self) -> Result<Vec<Wanted>, StoreError> {
        let mut stmt = self.db()?.prepare("SELECT path, wanted FROM needed")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (path, blob) = row?;
            match codec::decode_stored::<Wanted>(&blob) {
                Ok(w) => out.push(w),
                // Not fatal: the peer will announce the version again.
                Err(e) => tracing::warn!("dropping unreadable pending download {path:?}: {e}"),
            }
        }
        Ok(out)
    }

    /// Writes a batch in one transaction: changed records, peer progress,
    /// and additions/removals of pending downloads.
    pub fn save_batch(&mut self, batch: &Batch<'_>) -> Result<(), StoreError> {
        self.write_encoded(&Encoded::of(batch)?)
    }

    /// Writes a batch encoded by [`Encoded::of`] in one transaction (the
    /// encoding can be done on one thread and the writing on another).
    pub fn write_encoded(&mut self, batch: &Encoded) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let tx = begin(&mut self.conn)?;
        Self::write_parts(&tx, batch)?;
        tx.commit()?;
        Ok(())
    }

    /// Writes `head` and then the records of each of `chunks`, in one
    /// transaction: many records are encoded a chunk at a time as they are
    /// written, instead of all at once beforehand (a cold start's 20,000
    /// records took 4.8 MiB encoded). Nothing is written if any part fails.
    pub fn write_chunked<I>(&mut self, head: &Encoded, chunks: I) -> Result<(), StoreError>
    where
        I: IntoIterator<Item = Vec<Record>>,
    {
        let tx = begin(&mut self.conn)?;
        Self::write_parts(&tx, head)?;
        for chunk in chunks {
            Self::write_records(&tx, &chunk)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Writes every part of `batch` inside `tx`; its records last, so a
    /// path both forgotten and changed keeps its record.
    fn write_parts(tx: &rusqlite::Transaction<'_>, batch: &Encoded) -> Result<(), StoreError> {
        let mut stmt =
            tx.prepare_cached("INSERT OR REPLACE INTO identities(id, record) VALUES (?1, ?2)")?;
        for (id, blob) in &batch.identities {
            stmt.execute(params![id.as_bytes().as_slice(), blob.as_ref()])?;
        }
        if let Some(held) = &batch.held {
            tx.execute("DELETE FROM held", [])?;
            let mut stmt = tx.prepare_cached("INSERT INTO held(item) VALUES (?1)")?;
            for h in held {
                stmt.execute([h.as_ref()])?;
            }
        }
        let mut stmt = tx.prepare_cached("DELETE FROM files WHERE path = ?1")?;
        for p in &batch.forgotten {
            stmt.execute([p.as_str()])?;
        }
        let mut stmt =
            tx.prepare_cached("INSERT OR REPLACE INTO peers(id, seq, name) VALUES (?1, ?2, ?3)")?;
        for (id, seq, name) in &batch.peers {
            stmt.execute(params![id.0.as_bytes().as_slice(), *seq as i64, name])?;
        }
        let mut stmt =
            tx.prepare_cached("INSERT OR REPLACE INTO needed(path, wanted) VALUES (?1, ?2)")?;
        for (path, blob) in &batch.wanted {
            stmt.execute(params![path.as_str(), blob.as_ref()])?;
        }
        let mut stmt = tx.prepare_cached("DELETE FROM needed WHERE path = ?1")?;
        for p in &batch.unwanted {
            stmt.execute([p.as_str()])?;
        }
        Self::write_rows(tx, &batch.records)
    }

    /// Writes `records` in one transaction.
    pub fn save(&mut self, records: &[Record]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let tx = begin(&mut self.conn)?;
        Self::write_records(&tx, records)?;
        tx.commit()?;
        Ok(())
    }

    fn write_records(tx: &rusqlite::Transaction<'_>, records: &[Record]) -> Result<(), StoreError> {
        let rows = records
            .iter()
            .map(RecordRow::of)
            .collect::<Result<Vec<_>, _>>()?;
        Self::write_rows(tx, &rows)
    }

    fn write_rows(tx: &rusqlite::Transaction<'_>, rows: &[RecordRow]) -> Result<(), StoreError> {
        let mut stmt = tx.prepare_cached(
            "INSERT OR REPLACE INTO files(path, seq, entry, inode, size, mtime_ns, mode)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for r in rows {
            let s = r.stat.as_ref();
            stmt.execute(params![
                r.path.as_str(),
                r.seq as i64,
                r.entry.as_ref(),
                s.map(|s| s.inode as i64),
                s.map(|s| s.size as i64),
                s.map(|s| s.mtime_ns),
                s.map(|s| s.mode as i64),
            ])?;
        }
        Ok(())
    }
}

/// One index record, encoded for its row.
struct RecordRow {
    path: RelPath,
    seq: u64,
    entry: bytes::Bytes,
    stat: Option<crate::index::LocalStat>,
}

impl RecordRow {
    fn of(r: &Record) -> Result<RecordRow, StoreError> {
        Ok(RecordRow {
            path: r.entry.path.clone(),
            seq: r.seq,
            entry: encode(r.entry.path.as_str(), &r.entry)?,
            stat: r.stat,
        })
    }
}

/// Encodes `v` for the store; a failure names `what`.
fn encode(what: &str, v: &impl serde::Serialize) -> Result<bytes::Bytes, StoreError> {
    codec::encode_stored(v).map_err(|e| StoreError::Corrupt {
        path: what.to_string(),
        reason: e.to_string(),
    })
}

/// A [`Batch`] encoded, owning its bytes: it can be handed to another
/// thread to write while the one that made it goes on.
#[derive(Default)]
pub struct Encoded {
    records: Vec<RecordRow>,
    peers: Vec<(NodeId, u64, String)>,
    wanted: Vec<(RelPath, bytes::Bytes)>,
    unwanted: Vec<RelPath>,
    forgotten: Vec<RelPath>,
    identities: Vec<(uuid::Uuid, bytes::Bytes)>,
    held: Option<Vec<bytes::Bytes>>,
}

impl Encoded {
    /// Makes room for `n` more records at once (added a slice at a time,
    /// they would grow the list by doubling).
    pub fn reserve_records(&mut self, n: usize) {
        self.records.reserve_exact(n);
    }

    /// Adds changed index records to what is encoded (written before the
    /// batch's own records).
    pub fn add_records(&mut self, records: &[Record]) -> Result<(), StoreError> {
        self.records.reserve(records.len());
        for r in records {
            self.records.push(RecordRow::of(r)?);
        }
        Ok(())
    }

    /// Encodes `batch`.
    pub fn of(batch: &Batch<'_>) -> Result<Encoded, StoreError> {
        Ok(Encoded {
            records: batch
                .records
                .iter()
                .map(RecordRow::of)
                .collect::<Result<_, _>>()?,
            peers: batch.peers.to_vec(),
            wanted: batch
                .wanted
                .iter()
                .map(|w| Ok((w.entry.path.clone(), encode(w.entry.path.as_str(), *w)?)))
                .collect::<Result<_, StoreError>>()?,
            unwanted: batch.unwanted.to_vec(),
            forgotten: batch.forgotten.to_vec(),
            identities: batch
                .identities
                .iter()
                .map(|i| Ok((i.id, encode("identity", *i)?)))
                .collect::<Result<_, StoreError>>()?,
            held: batch
                .held
                .map(|held| {
                    held.iter()
                        .map(|h| encode(h.info.path.as_str(), h))
                        .collect::<Result<_, _>>()
                })
                .transpose()?,
        })
    }

    /// How many index records it holds.
    pub fn records(&self) -> usize {
        self.records.len()
    }

    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
            && self.peers.is_empty()
            && self.wanted.is_empty()
            && self.unwanted.is_empty()
            && self.forgotten.is_empty()
            && self.identities.is_empty()
            && self.held.is_none()
    }
}

/// One batch of state for [`Store::save_batch`].
#[derive(Default)]
pub struct Batch<'a> {
    /// Changed index records.
    pub records: &'a [Record],
    /// Peer progress: (id, highest sequence applied, name).
    pub peers: &'a [(NodeId, u64, String)],
    /// Pending downloads added or updated.
    pub wanted: &'a [&'a Wanted],
    /// Pending downloads finished or dropped.
    pub unwanted: &'a [RelPath],
    /// Index records to delete (before `records` are written).
    pub forgotten: &'a [RelPath],
    /// Identities added or changed.
    pub identities: &'a [&'a IdentityRecord],
    /// The whole list of held remote changes, when it changed.
    pub held: Option<&'a [Held]>,
}

/// A remote version this node has decided to take but not yet applied
/// (fetched and installed, deleted, made, or its metadata set). The
/// decision is made again, from this entry, just before it is carried out.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Wanted {
    /// The peer's entry as announced (its block list completed once known).
    pub entry: FileEntry,
    /// The peer that announced it.
    pub from: NodeId,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tandem_common::{ContentHash, EntryKind, VersionVector};

    #[test]
    fn peers_and_needed_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("index.db");
        let peer = NodeId::random();
        let w = Wanted {
            entry: record("x/y", 3, false).entry,
            from: peer,
        };
        {
            let mut s = Store::open(&db).unwrap();
            s.save_batch(&Batch {
                peers: &[(peer, 17, "B".into())],
                wanted: &[&w],
                ..Batch::default()
            })
            .unwrap();
        }
        let mut s = Store::open(&db).unwrap();
        assert_eq!(s.peers().unwrap(), vec![(peer, 17, "B".to_string())]);
        assert_eq!(s.needed().unwrap(), vec![w.clone()]);
        s.save_batch(&Batch {
            unwanted: std::slice::from_ref(&w.entry.path),
            ..Batch::default()
        })
        .unwrap();
        assert!(s.needed().unwrap().is_empty());
    }

    /// A file's record at `seq` (shared with other modules' tests).
    pub(crate) fn record(path: &str, seq: u64, deleted: bool) -> Record {
        let mut version = VersionVector::new();
        version.set(NodeId::random(), seq);
        Record {
            entry: FileEntry {
                path: RelPath::new(path).unwrap(),
                kind: EntryKind::File,
                size: 5,
                mtime_ns: 1_700_000_000_123_456_789,
                mode: 0o644,
                hash: ContentHash::of(b"hello"),
                blocks: vec![ContentHash::of(b"hello")],
                version,
                written: Default::default(),
                losers: Default::default(),
                deleted,
            },
            seq,
            stat: (!deleted).then_some(LocalStat {
                inode: 42,
                size: 5,
                mtime_ns: 1_700_000_000_123_456_789,
                mode: 0o644,
            }),
        }
    }

    #[test]
    fn a_transaction_left_open_does_not_stop_later_writes() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("index.db");
        let mut store = Store::open(&db).unwrap();
        // As a rollback that failed leaves it.
        store.conn.execute_batch("BEGIN").unwrap();
        store.save(&[record("a", 1, false)]).unwrap();
        assert!(store.conn.is_autocommit(), "the write was committed");
        // A write outside a transaction must not join one left open (it
        // would report success and be rolled back).
        store.conn.execute_batch("BEGIN").unwrap();
        store.set_receive_only_since(Some(5)).unwrap();
        drop(store);
        let store = Store::open(&db).unwrap();
        let got = store.load().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].entry.path.as_str(), "a");
        assert_eq!(store.receive_only_since().unwrap(), Some(5));
    }

    #[test]
    fn a_batch_written_chunk_by_chunk_is_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("index.db");
        let mut s = Store::open(&db).unwrap();
        let (kept, gone) = (record("kept", 1, false), record("gone", 2, false));
        s.save(&[kept.clone(), gone.clone()]).unwrap();
        let peer = NodeId::random();
        let forgotten = [gone.entry.path.clone(), RelPath::new("again").unwrap()];
        let head = Encoded::of(&Batch {
            peers: &[(peer, 9, "B".into())],
            forgotten: &forgotten,
            ..Batch::default()
        })
        .unwrap();
        let sorted = |mut v: Vec<Record>| {
            v.sort_by(|x, y| x.entry.path.cmp(&y.entry.path));
            v
        };

        // A chunk that cannot be written undoes the whole batch.
        rusqlite::Connection::open(&db)
            .unwrap()
            .execute_batch(
                "CREATE TRIGGER refuse BEFORE INSERT ON files WHEN NEW.path = 'c/bad'
                 BEGIN SELECT RAISE(ABORT, 'refused'); END;",
            )
            .unwrap();
        let chunks = vec![
            vec![record("c/0", 3, false)],
            vec![record("c/bad", 4, false)],
        ];
        assert!(s.write_chunked(&head, chunks).is_err());
        assert_eq!(sorted(s.load().unwrap()), vec![gone.clone(), kept.clone()]);
        assert!(s.peers().unwrap().is_empty());

        // A panic while the chunks are made (caught, as the core does)
        // leaves nothing written and the store usable.
        let panicking = (0..2).map(|i| {
            assert!(i == 0, "no second chunk");
            vec![record("c/0", 3, false)]
        });
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            s.write_chunked(&head, panicking)
        }));
        assert!(caught.is_err());
        assert_eq!(sorted(s.load().unwrap()), vec![gone.clone(), kept.clone()]);
        assert!(s.peers().unwrap().is_empty());

        // Written whole: what the head forgets goes first, so a path both
        // forgotten and in a chunk keeps its record.
        let (c0, again, c1) = (
            record("c/0", 3, false),
            record("again", 5, false),
            record("c/1", 6, true),
        );
        let chunks = vec![vec![c0.clone(), again.clone()], vec![c1.clone()]];
        s.write_chunked(&head, chunks).unwrap();
        drop(s);
        let s = Store::open(&db).unwrap();
        assert_eq!(sorted(s.load().unwrap()), vec![again, c0, c1, kept]);
        assert_eq!(s.peers().unwrap(), vec![(peer, 9, "B".to_string())]);
    }

    #[test]
    fn round_trip_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("index.db");
        let (a, b) = (record("a.txt", 1, false), record("d/b", 2, true));
        let id = {
            let mut s = Store::open(&db).unwrap();
            s.save(&[a.clone(), b.clone()]).unwrap();
            s.node_id().unwrap()
        };
        let s = Store::open(&db).unwrap();
        assert_eq!(s.node_id().unwrap(), id, "node id must be stable");
        let mut got = s.load().unwrap();
        got.sort_by(|x, y| x.entry.path.cmp(&y.entry.path));
        assert_eq!(got, vec![a, b]);
    }

    #[test]
    fn an_entry_larger_than_a_frame_is_saved_and_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("index.db");
        let mut r = record("huge.bin", 1, false);
        // 600,000 block hashes (a 73 GiB file): 19 MB, past the 16 MiB frame.
        r.entry.blocks = vec![ContentHash::of(b"x"); 600_000];
        r.entry.size = 600_000 * tandem_common::model::BLOCK_SIZE;
        let mut s = Store::open(&db).unwrap();
        s.save(std::slice::from_ref(&r)).unwrap();
        drop(s);
        let got = Store::open(&db).unwrap().load().unwrap();
        assert_eq!(got, vec![r]);
    }

    #[test]
    fn an_older_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("index.db");
        Store::open(&db)
            .unwrap()
            .set_meta("schema", &1i64.to_be_bytes())
            .unwrap();
        let err = Store::open(&db).err().expect("refused");
        assert!(matches!(err, StoreError::Schema(1)), "{err}");
    }

    #[test]
    fn schema_5_is_taken_and_a_newer_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("index.db");
        let set = |v: i64| {
            Store::open(&db)
                .unwrap()
                .set_meta("schema", &v.to_be_bytes())
                .unwrap()
        };
        set(5);
        let s = Store::open(&db).expect("schema 5 opens");
        assert_eq!(s.meta_i64("schema").unwrap(), Some(SCHEMA_VERSION));
        drop(s);
        set(SCHEMA_VERSION + 1);
        let err = Store::open(&db).err().expect("refused");
        assert!(
            matches!(err, StoreError::Schema(v) if v == SCHEMA_VERSION + 1),
            "{err}"
        );
    }

    /// Schema 6 held block lists of the older kind: what peers sent must
    /// come again (their lists with it); our own records are kept as they
    /// are (the index finds their lists of the older kind as it loads).
    #[test]
    fn schema_6_drops_what_peers_sent_and_keeps_our_records() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("index.db");
        let small = record("small.txt", 1, false);
        let mut big = record("big.bin", 2, false);
        let bs = tandem_common::model::BLOCK_SIZE;
        big.entry.size = 3 * bs;
        big.entry.blocks = vec![
            ContentHash::of(b"a"),
            ContentHash::of(b"b"),
            ContentHash::of(b"c"),
        ];
        let gone = record("gone.bin", 3, true);
        let mut s = Store::open(&db).unwrap();
        s.save(&[small.clone(), big.clone(), gone.clone()]).unwrap();
        let peer = NodeId::random();
        s.conn
            .execute_batch(&format!(
                "INSERT INTO peers(id, seq, name) VALUES (X'{}', 41, 'B');
                 INSERT INTO needed(path, wanted) VALUES ('x', X'00');
                 INSERT INTO held(item) VALUES (X'00');",
                data_encoding::HEXUPPER.encode(peer.0.as_bytes())
            ))
            .unwrap();
        s.set_meta("schema", &6i64.to_be_bytes()).unwrap();
        drop(s);
        let s = Store::open(&db).expect("schema 6 opens");
        assert_eq!(s.meta_i64("schema").unwrap(), Some(SCHEMA_VERSION));
        let mut got = s.load().unwrap();
        got.sort_by_key(|a| a.seq);
        assert_eq!(got, vec![small, big, gone]);
        assert_eq!(s.peers().unwrap()[0].1, 0, "the peer's progress is reset");
        let left: i64 = s
            .conn
            .query_row(
                "SELECT (SELECT count(*) FROM needed) + (SELECT count(*) FROM held)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(left, 0, "peers' waiting entries are dropped");
    }

    #[test]
    fn corrupt_row_is_reported_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("index.db");
        let s = Store::open(&db).unwrap();
        s.conn
            .execute(
                "INSERT INTO files(path, seq, entry) VALUES ('x', 1, X'FFFF')",
                [],
            )
            .unwrap();
        let err = s.load().unwrap_err().to_string();
        assert!(err.contains("\"x\""), "{err}");
    }
}
