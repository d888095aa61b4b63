//! The SQLite backend of [`Store`]: one file, WAL, `synchronous=FULL`.
//!
//! Schema changes are numbered migrations recorded in `PRAGMA user_version`;
//! a database newer than the program is refused rather than misread.
//! SQL here is kept portable (no SQLite-only column types); `store-postgres`
//! writes the same tables and columns, in the same numbered migrations, for
//! PostgreSQL.

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::columns::{
    code_from, code_name, communes_from, communes_text, credential_kind, kind_from, kind_name,
};
use super::export::{ChangeRow, CredentialRow, Export, TABLES};
use super::{
    ChangeAt, ChangeMeta, CommitSummary, NewRefusedUpload, PeerSummary, RefusedUpload, Store, StoreError,
    StoredDocument, WriteBatch,
};
use crate::access::{AuditEvent, CredentialKind, DeviceRecord};
use crate::ids::{DocumentId, PeerId};
use crate::registry::Place;

const MIGRATIONS: &[&str] = &[
    // 1: documents, changes, snapshots, sync sessions, refused uploads, places, settings.
    "CREATE TABLE changes (
        document   TEXT NOT NULL,
        hash       TEXT NOT NULL,
        bytes      BLOB,
        actor      TEXT NOT NULL,
        seq        BIGINT NOT NULL,
        time       BIGINT NOT NULL,
        stored_at  BIGINT NOT NULL,
        PRIMARY KEY (document, hash)
    );
    CREATE INDEX changes_by_document ON changes (document, stored_at);
    CREATE TABLE snapshots (
        document   TEXT PRIMARY KEY,
        bytes      BLOB NOT NULL,
        made_at    BIGINT NOT NULL
    );
    CREATE TABLE sync_states (
        peer       TEXT NOT NULL,
        document   TEXT NOT NULL,
        state      BLOB NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (peer, document)
    );
    CREATE TABLE refused_uploads (
        id          INTEGER PRIMARY KEY,
        source      TEXT,
        document    TEXT,
        code        TEXT NOT NULL,
        reason      TEXT NOT NULL,
        bytes       BLOB NOT NULL,
        received_at BIGINT NOT NULL
    );
    CREATE TABLE places (
        id          TEXT PRIMARY KEY,
        kind        TEXT NOT NULL,
        name        TEXT NOT NULL,
        parent      TEXT,
        expected_households BIGINT
    );
    CREATE TABLE settings (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );",
    // 2: devices, their credentials and actors; administrators; the audit log.
    "CREATE TABLE devices (
        id          TEXT PRIMARY KEY,
        name        TEXT NOT NULL,
        communes    TEXT NOT NULL,
        created_at  BIGINT NOT NULL,
        enrolled_at BIGINT,
        revoked_at  BIGINT,
        last_seen   BIGINT,
        app_version TEXT
    );
    CREATE TABLE credentials (
        device      TEXT NOT NULL,
        kind        TEXT NOT NULL,
        hash        TEXT NOT NULL UNIQUE,
        expires_at  BIGINT,
        PRIMARY KEY (device, kind)
    );
    CREATE TABLE actors (
        actor       TEXT PRIMARY KEY,
        device      TEXT NOT NULL,
        bound_at    BIGINT NOT NULL
    );
    CREATE TABLE admin_tokens (
        hash        TEXT PRIMARY KEY,
        name        TEXT NOT NULL,
        created_at  BIGINT NOT NULL
    );
    CREATE TABLE audit_log (
        id          INTEGER PRIMARY KEY,
        at          BIGINT NOT NULL,
        who         TEXT NOT NULL,
        action      TEXT NOT NULL,
        subject     TEXT NOT NULL,
        detail      TEXT NOT NULL
    );",
];

/// The newest schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// A [`Store`] in one SQLite file.
pub struct SqliteStore {
    conn: Connection,
    /// A document whose changes make `commit_all` panic inside its
    /// transaction, after the batch's rows are written: how tests prove that
    /// a panic mid-commit rolls back and leaves the store usable. Never set
    /// outside tests.
    commit_fault: Option<DocumentId>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.conn.path()).finish()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(backend)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(backend)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(backend)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(backend)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(backend)?;
        let mut store = Self { conn, commit_fault: None };
        store.migrate()?;
        Ok(store)
    }

    /// Opens an existing database for reading only, never disturbing a
    /// server that writes it (WAL lets readers and one writer coexist).
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        if !path.exists() {
            return Err(StoreError::NotFound(format!("database {}", path.display())));
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(backend)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(backend)?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(backend)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew { found: version, supported: SCHEMA_VERSION });
        }
        if version < SCHEMA_VERSION {
            return Err(StoreError::Corrupt(format!(
                "{} is not a Thôn Sync database of this version (schema {version}); open it once with the server to migrate it",
                path.display()
            )));
        }
        Ok(Self { conn, commit_fault: None })
    }

    /// An in-memory store, for tests.
    pub fn in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory().map_err(backend)?;
        let mut store = Self { conn, commit_fault: None };
        store.migrate()?;
        Ok(store)
    }

    /// Makes `commit_all` panic, inside its transaction, on a batch holding a
    /// change of `document` (or never, with `None`). For tests only.
    #[doc(hidden)]
    pub fn set_commit_fault_for_tests(&mut self, document: Option<DocumentId>) {
        self.commit_fault = document;
    }

    /// A read transaction, so that several reads see one snapshot; none
    /// when a transaction is already open (a unit of work), whose snapshot
    /// they share.
    fn read_snapshot(&self) -> Result<Option<rusqlite::Transaction<'_>>, StoreError> {
        if self.conn.is_autocommit() {
            self.conn.unchecked_transaction().map(Some).map_err(backend)
        } else {
            Ok(None)
        }
    }

    /// Ends the unit of work begun by `unit_of_work`: commits it (or
    /// releases its savepoint, when it is inside another), or rolls it back.
    fn end_unit(&self, outermost: bool, commit: bool) -> Result<(), StoreError> {
        let sql = match (outermost, commit) {
            (true, true) => "COMMIT",
            (true, false) => "ROLLBACK",
            (false, true) => "RELEASE unit_of_work",
            (false, false) => "ROLLBACK TO unit_of_work; RELEASE unit_of_work",
        };
        if outermost && self.conn.is_autocommit() {
            // SQLite already rolled the transaction back (after some errors it does).
            return if commit {
                Err(StoreError::Backend("the unit of work's transaction ended early".into()))
            } else {
                Ok(())
            };
        }
        let ended = self.conn.execute_batch(sql).map_err(backend);
        if ended.is_err() && commit && outermost && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        ended
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let version: i64 =
            self.conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(backend)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew { found: version, supported: SCHEMA_VERSION });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = self.conn.transaction().map_err(backend)?;
            tx.execute_batch(sql).map_err(backend)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64).map_err(backend)?;
            tx.commit().map_err(backend)?;
            tracing::info!(version = i + 1, "database migrated");
        }
        Ok(())
    }
}

fn refused_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RefusedRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
}

type RefusedRow = (i64, Option<String>, Option<String>, String, String, Vec<u8>, i64);

fn to_refused(row: RefusedRow) -> Result<RefusedUpload, StoreError> {
    let (id, source, document, code, reason, bytes, received_at) = row;
    Ok(RefusedUpload {
        id,
        upload: NewRefusedUpload { source, document, code: code_from(&code)?, reason, bytes, received_at },
    })
}

const DEVICE_COLUMNS: &str =
    "id, name, communes, created_at, enrolled_at, revoked_at, last_seen, app_version";

type DeviceRow = (String, String, String, i64, Option<i64>, Option<i64>, Option<i64>, Option<String>);

fn device_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeviceRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?))
}

fn to_device(row: DeviceRow) -> Result<DeviceRecord, StoreError> {
    let (id, name, communes, created_at, enrolled_at, revoked_at, last_seen, app_version) = row;
    let communes = communes_from(&id, &communes)?;
    Ok(DeviceRecord { id, name, communes, created_at, enrolled_at, revoked_at, last_seen, app_version })
}

/// Writes one batch's rows inside an open transaction.
fn write_batch(tx: &Connection, batch: &WriteBatch, now: i64) -> Result<CommitSummary, StoreError> {
    let mut summary = CommitSummary::default();
    let mut put_change = tx
        .prepare_cached(
            "INSERT INTO changes (document, hash, bytes, actor, seq, time, stored_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (document, hash) DO NOTHING",
        )
        .map_err(backend)?;
    // A batch holds a document's changes together: its key is written once per run.
    let mut key: Option<(&DocumentId, String)> = None;
    for c in &batch.changes {
        if key.as_ref().is_none_or(|(d, _)| *d != &c.document) {
            key = Some((&c.document, c.document.to_string()));
        }
        let document = key.as_ref().map(|(_, k)| k.as_str());
        summary.new_changes += put_change
            .execute(params![document, c.hash, c.bytes, c.actor, c.seq as i64, c.time, now])
            .map_err(backend)?;
    }
    let mut put_state = tx
        .prepare_cached(
            "INSERT INTO sync_states (peer, document, state, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (peer, document) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
        )
        .map_err(backend)?;
    for (peer, doc, state) in &batch.sync_states {
        put_state.execute(params![peer.as_str(), doc.to_string(), state, now]).map_err(backend)?;
    }
    let mut put_refused = tx
        .prepare_cached(
            "INSERT INTO refused_uploads (source, document, code, reason, bytes, received_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(backend)?;
    for r in &batch.refused {
        put_refused
            .execute(params![r.source, r.document, code_name(r.code), r.reason, r.bytes, r.received_at])
            .map_err(backend)?;
        summary.first_refused_id.get_or_insert(tx.last_insert_rowid());
    }
    let mut bind = tx
        .prepare_cached(
            "INSERT INTO actors (actor, device, bound_at) VALUES (?1, ?2, ?3) ON CONFLICT (actor) DO NOTHING",
        )
        .map_err(backend)?;
    for (actor, device) in &batch.actor_bindings {
        bind.execute(params![actor, device, now]).map_err(backend)?;
    }
    Ok(summary)
}

/// Reads every row of a query with `f`.
fn all_rows<T>(
    conn: &Connection,
    sql: &str,
    f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare(sql).map_err(backend)?;
    let rows = stmt.query_map([], f).map_err(backend)?;
    rows.collect::<Result<_, _>>().map_err(backend)
}

const REFUSED_COLUMNS: &str = "id, source, document, code, reason, bytes, received_at";

impl Store for SqliteStore {
    /// `BEGIN IMMEDIATE`: the write lock is taken before the first read, so
    /// concurrent units of work on one file (other processes, other handles)
    /// wait for each other (up to the busy timeout) and never interleave.
    /// The methods called inside write through savepoints (or the open
    /// transaction), never a transaction of their own.
    fn unit_of_work(
        &mut self,
        work: &mut dyn FnMut(&mut dyn Store) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let outermost = self.conn.is_autocommit();
        let begin = if outermost { "BEGIN IMMEDIATE" } else { "SAVEPOINT unit_of_work" };
        self.conn.execute_batch(begin).map_err(backend)?;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&mut *self))) {
            Ok(Ok(())) => self.end_unit(outermost, true),
            Ok(Err(e)) => {
                if let Err(rollback) = self.end_unit(outermost, false) {
                    tracing::warn!(error = %rollback, "rolling back a unit of work failed");
                }
                Err(e)
            }
            Err(panic) => {
                if let Err(rollback) = self.end_unit(outermost, false) {
                    tracing::warn!(error = %rollback, "rolling back a unit of work failed");
                }
                std::panic::resume_unwind(panic)
            }
        }
    }

    fn commit_all(&mut self, batches: &[&WriteBatch], now: i64) -> Result<Vec<CommitSummary>, StoreError> {
        let tx = self.conn.savepoint().map_err(backend)?;
        let mut summaries = Vec::with_capacity(batches.len());
        for batch in batches {
            summaries.push(write_batch(&tx, batch, now)?);
            if let Some(doc) = &self.commit_fault {
                if batch.changes.iter().any(|c| &c.document == doc) {
                    panic!("commit fault injected for document {doc}");
                }
            }
        }
        tx.commit().map_err(backend)?;
        Ok(summaries)
    }

    fn recover(&mut self) -> Result<bool, StoreError> {
        if self.conn.is_autocommit() {
            return Ok(false);
        }
        self.conn.execute_batch("ROLLBACK").map_err(backend)?;
        Ok(true)
    }

    fn load_document(&self, id: &DocumentId) -> Result<Option<StoredDocument>, StoreError> {
        let key = id.to_string();
        // One read transaction for both reads, so a compaction committing
        // between them cannot hide the changes it folded.
        let _snapshot = self.read_snapshot()?;
        let snapshot: Option<Vec<u8>> = self
            .conn
            .query_row("SELECT bytes FROM snapshots WHERE document = ?1", [&key], |r| r.get(0))
            .optional()
            .map_err(backend)?;
        let mut stmt = self
            .conn
            .prepare_cached("SELECT bytes FROM changes WHERE document = ?1 AND bytes IS NOT NULL ORDER BY stored_at, rowid")
            .map_err(backend)?;
        let changes = stmt
            .query_map([&key], |r| r.get::<_, Vec<u8>>(0))
            .map_err(backend)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(backend)?;
        if snapshot.is_none() && changes.is_empty() {
            return Ok(None);
        }
        Ok(Some(StoredDocument { snapshot, changes }))
    }

    fn document_ids(&self) -> Result<Vec<DocumentId>, StoreError> {
        let mut stmt =
            self.conn.prepare("SELECT DISTINCT document FROM changes ORDER BY document").map_err(backend)?;
        let ids = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(backend)?;
        ids.map(|id| {
            let id = id.map_err(backend)?;
            id.parse().map_err(|e| StoreError::Corrupt(format!("document id {id:?}: {e}")))
        })
        .collect()
    }

    fn has_change(&self, id: &DocumentId, hash: &str) -> Result<bool, StoreError> {
        self.conn
            .query_row(
                "SELECT 1 FROM changes WHERE document = ?1 AND hash = ?2",
                params![id.to_string(), hash],
                |_| Ok(()),
            )
            .optional()
            .map(|r| r.is_some())
            .map_err(backend)
    }

    fn change_meta(&self, id: Option<&DocumentId>) -> Result<Vec<ChangeMeta>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT document, hash, actor, seq, time, stored_at FROM changes
                 WHERE ?1 IS NULL OR document = ?1 ORDER BY stored_at, rowid",
            )
            .map_err(backend)?;
        let rows = stmt
            .query_map([id.map(|i| i.to_string())], |r| {
                Ok(ChangeMeta {
                    document: r.get(0)?,
                    hash: r.get(1)?,
                    actor: r.get(2)?,
                    seq: r.get::<_, i64>(3)? as u64,
                    time: r.get(4)?,
                    stored_at: r.get(5)?,
                })
            })
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    fn compact(&mut self, id: &DocumentId, snapshot: &[u8], covered: &[String]) -> Result<(), StoreError> {
        let key = id.to_string();
        let tx = self.conn.savepoint().map_err(backend)?;
        tx.execute(
            "INSERT INTO snapshots (document, bytes, made_at) VALUES (?1, ?2, 0)
             ON CONFLICT (document) DO UPDATE SET bytes = excluded.bytes",
            params![key, snapshot],
        )
        .map_err(backend)?;
        {
            let mut drop_bytes = tx
                .prepare_cached("UPDATE changes SET bytes = NULL WHERE document = ?1 AND hash = ?2")
                .map_err(backend)?;
            for hash in covered {
                drop_bytes.execute(params![key, hash]).map_err(backend)?;
            }
        }
        tx.commit().map_err(backend)
    }

    fn sync_state(&self, peer: &PeerId, id: &DocumentId) -> Result<Option<Vec<u8>>, StoreError> {
        self.conn
            .query_row(
                "SELECT state FROM sync_states WHERE peer = ?1 AND document = ?2",
                params![peer.as_str(), id.to_string()],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)
    }

    fn peers(&self) -> Result<Vec<PeerSummary>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT peer, COUNT(*), MAX(updated_at) FROM sync_states GROUP BY peer ORDER BY peer")
            .map_err(backend)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(PeerSummary {
                    peer: r.get(0)?,
                    documents: r.get::<_, i64>(1)? as u64,
                    last_sync: r.get(2)?,
                })
            })
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    fn refused(&self) -> Result<Vec<RefusedUpload>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {REFUSED_COLUMNS} FROM refused_uploads ORDER BY id DESC"))
            .map_err(backend)?;
        let rows = stmt.query_map([], refused_row).map_err(backend)?;
        rows.map(|r| to_refused(r.map_err(backend)?)).collect()
    }

    fn refused_by_id(&self, id: i64) -> Result<Option<RefusedUpload>, StoreError> {
        self.conn
            .query_row(
                &format!("SELECT {REFUSED_COLUMNS} FROM refused_uploads WHERE id = ?1"),
                [id],
                refused_row,
            )
            .optional()
            .map_err(backend)?
            .map(to_refused)
            .transpose()
    }

    fn put_places(&mut self, places: &[Place]) -> Result<(), StoreError> {
        let tx = self.conn.savepoint().map_err(backend)?;
        tx.execute("DELETE FROM places", []).map_err(backend)?;
        {
            let mut put = tx
                .prepare("INSERT INTO places (id, kind, name, parent, expected_households) VALUES (?1, ?2, ?3, ?4, ?5)")
                .map_err(backend)?;
            for p in places {
                put.execute(params![
                    p.id,
                    kind_name(p.kind),
                    p.name,
                    p.parent,
                    p.expected_households.map(i64::from)
                ])
                .map_err(backend)?;
            }
        }
        tx.commit().map_err(backend)
    }

    fn places(&self) -> Result<Vec<Place>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, kind, name, parent, expected_households FROM places ORDER BY id")
            .map_err(backend)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get::<_, Option<i64>>(4)?,
                ))
            })
            .map_err(backend)?;
        rows.map(|row| {
            let (id, kind, name, parent, expected) = row.map_err(backend)?;
            let kind = kind_from(&id, &kind)?;
            Ok(Place { id, kind, name, parent, expected_households: expected.map(|e| e as u32) })
        })
        .collect()
    }

    fn put_setting(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map(|_| ())
            .map_err(backend)
    }

    fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(backend)
    }

    fn put_device(&mut self, d: &DeviceRecord) -> Result<(), StoreError> {
        let communes = communes_text(d)?;
        self.conn
            .execute(
                "INSERT INTO devices (id, name, communes, created_at, enrolled_at, revoked_at, last_seen, app_version)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, communes = excluded.communes,
                   enrolled_at = excluded.enrolled_at, revoked_at = excluded.revoked_at,
                   last_seen = excluded.last_seen, app_version = excluded.app_version",
                params![d.id, d.name, communes, d.created_at, d.enrolled_at, d.revoked_at, d.last_seen, d.app_version],
            )
            .map(|_| ())
            .map_err(backend)
    }

    fn device(&self, id: &str) -> Result<Option<DeviceRecord>, StoreError> {
        self.conn
            .query_row(&format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE id = ?1"), [id], device_row)
            .optional()
            .map_err(backend)?
            .map(to_device)
            .transpose()
    }

    fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {DEVICE_COLUMNS} FROM devices ORDER BY id"))
            .map_err(backend)?;
        let rows = stmt.query_map([], device_row).map_err(backend)?;
        rows.map(|r| to_device(r.map_err(backend)?)).collect()
    }

    fn set_credential(
        &mut self,
        device: &str,
        kind: CredentialKind,
        hash: &str,
        expires_at: Option<i64>,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO credentials (device, kind, hash, expires_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (device, kind) DO UPDATE SET hash = excluded.hash, expires_at = excluded.expires_at",
                params![device, credential_kind(kind), hash, expires_at],
            )
            .map(|_| ())
            .map_err(backend)
    }

    fn remove_credential(&mut self, device: &str, kind: CredentialKind) -> Result<(), StoreError> {
        self.conn
            .execute(
                "DELETE FROM credentials WHERE device = ?1 AND kind = ?2",
                params![device, credential_kind(kind)],
            )
            .map(|_| ())
            .map_err(backend)
    }

    fn device_for_credential(
        &self,
        kind: CredentialKind,
        hash: &str,
        now: i64,
    ) -> Result<Option<DeviceRecord>, StoreError> {
        let device: Option<String> = self
            .conn
            .query_row(
                "SELECT device FROM credentials WHERE kind = ?1 AND hash = ?2 AND (expires_at IS NULL OR expires_at > ?3)",
                params![credential_kind(kind), hash, now],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)?;
        match device {
            Some(id) => self.device(&id),
            None => Ok(None),
        }
    }

    fn bind_actor(&mut self, actor: &str, device: &str, now: i64) -> Result<Option<String>, StoreError> {
        let tx = self.conn.savepoint().map_err(backend)?;
        let bound: Option<String> = tx
            .query_row("SELECT device FROM actors WHERE actor = ?1", [actor], |r| r.get(0))
            .optional()
            .map_err(backend)?;
        let other = match bound {
            Some(d) if d == device => None,
            Some(d) => Some(d),
            None => {
                tx.execute(
                    "INSERT INTO actors (actor, device, bound_at) VALUES (?1, ?2, ?3)",
                    params![actor, device, now],
                )
                .map_err(backend)?;
                None
            }
        };
        tx.commit().map_err(backend)?;
        Ok(other)
    }

    fn actor_devices(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut stmt =
            self.conn.prepare("SELECT actor, device FROM actors ORDER BY actor").map_err(backend)?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    fn actor_owner(&self, actor: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .prepare_cached("SELECT device FROM actors WHERE actor = ?1")
            .and_then(|mut s| s.query_row([actor], |r| r.get(0)).optional())
            .map_err(backend)
    }

    fn append_audit(&mut self, e: &AuditEvent) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO audit_log (at, who, action, subject, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![e.at, e.who, e.action, e.subject, e.detail],
            )
            .map(|_| ())
            .map_err(backend)
    }

    fn audit(&self, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT at, who, action, subject, detail FROM audit_log ORDER BY id DESC LIMIT ?1")
            .map_err(backend)?;
        let rows = stmt
            .query_map([limit as i64], |r| {
                Ok(AuditEvent {
                    at: r.get(0)?,
                    who: r.get(1)?,
                    action: r.get(2)?,
                    subject: r.get(3)?,
                    detail: r.get(4)?,
                })
            })
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    fn export(&self) -> Result<Export, StoreError> {
        // One read transaction: a snapshot of the whole database, even while a server writes.
        let _snapshot = self.read_snapshot()?;
        let c: &Connection = &self.conn;
        let refused =
            all_rows(c, &format!("SELECT {REFUSED_COLUMNS} FROM refused_uploads ORDER BY id"), refused_row)?
                .into_iter()
                .map(to_refused)
                .collect::<Result<_, _>>()?;
        let devices = all_rows(c, &format!("SELECT {DEVICE_COLUMNS} FROM devices ORDER BY id"), device_row)?
            .into_iter()
            .map(to_device)
            .collect::<Result<_, _>>()?;
        Ok(Export {
            changes: all_rows(
                c,
                "SELECT document, hash, bytes, actor, seq, time, stored_at FROM changes ORDER BY stored_at, rowid",
                |r| {
                    Ok(ChangeRow {
                        document: r.get(0)?,
                        hash: r.get(1)?,
                        bytes: r.get(2)?,
                        actor: r.get(3)?,
                        seq: r.get(4)?,
                        time: r.get(5)?,
                        stored_at: r.get(6)?,
                    })
                },
            )?,
            snapshots: all_rows(c, "SELECT document, bytes, made_at FROM snapshots ORDER BY document", |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?,
            sync_states: all_rows(
                c,
                "SELECT peer, document, state, updated_at FROM sync_states ORDER BY peer, document",
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?,
            refused,
            places: all_rows(c, "SELECT id, kind, name, parent, expected_households FROM places ORDER BY id", |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?, r.get(3)?, r.get::<_, Option<i64>>(4)?))
            })?
            .into_iter()
            .map(|(id, kind, name, parent, expected)| {
                Ok(Place { kind: kind_from(&id, &kind)?, id, name, parent, expected_households: expected.map(|e| e as u32) })
            })
            .collect::<Result<_, StoreError>>()?,
            settings: all_rows(c, "SELECT key, value FROM settings ORDER BY key", |r| Ok((r.get(0)?, r.get(1)?)))?,
            devices,
            credentials: all_rows(
                c,
                "SELECT device, kind, hash, expires_at FROM credentials ORDER BY device, kind",
                |r| Ok(CredentialRow { device: r.get(0)?, kind: r.get(1)?, hash: r.get(2)?, expires_at: r.get(3)? }),
            )?,
            actors: all_rows(c, "SELECT actor, device, bound_at FROM actors ORDER BY actor", |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?,
            admin_tokens: all_rows(c, "SELECT hash, name, created_at FROM admin_tokens ORDER BY hash", |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?,
            audit: all_rows(c, "SELECT id, at, who, action, subject, detail FROM audit_log ORDER BY id", |r| {
                Ok((
                    r.get(0)?,
                    AuditEvent { at: r.get(1)?, who: r.get(2)?, action: r.get(3)?, subject: r.get(4)?, detail: r.get(5)? },
                ))
            })?,
        })
    }

    fn import(&mut self, rows: &Export) -> Result<(), StoreError> {
        let tx = self.conn.savepoint().map_err(backend)?;
        for table in TABLES {
            let any: bool = tx
                .query_row(&format!("SELECT EXISTS (SELECT 1 FROM {table})"), [], |r| r.get(0))
                .map_err(backend)?;
            if any {
                return Err(StoreError::NotEmpty(format!("the database (table {table})")));
            }
        }
        {
            let mut put = tx
                .prepare(
                    "INSERT INTO changes (document, hash, bytes, actor, seq, time, stored_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(backend)?;
            for c in &rows.changes {
                put.execute(params![c.document, c.hash, c.bytes, c.actor, c.seq, c.time, c.stored_at])
                    .map_err(backend)?;
            }
            let mut put = tx
                .prepare("INSERT INTO snapshots (document, bytes, made_at) VALUES (?1, ?2, ?3)")
                .map_err(backend)?;
            for (document, bytes, made_at) in &rows.snapshots {
                put.execute(params![document, bytes, made_at]).map_err(backend)?;
            }
            let mut put = tx
                .prepare(
                    "INSERT INTO sync_states (peer, document, state, updated_at) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(backend)?;
            for (peer, document, state, updated_at) in &rows.sync_states {
                put.execute(params![peer, document, state, updated_at]).map_err(backend)?;
            }
            let mut put = tx
                .prepare(
                    "INSERT INTO refused_uploads (id, source, document, code, reason, bytes, received_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(backend)?;
            for r in &rows.refused {
                let u = &r.upload;
                put.execute(params![
                    r.id,
                    u.source,
                    u.document,
                    code_name(u.code),
                    u.reason,
                    u.bytes,
                    u.received_at
                ])
                .map_err(backend)?;
            }
            let mut put = tx
                .prepare("INSERT INTO places (id, kind, name, parent, expected_households) VALUES (?1, ?2, ?3, ?4, ?5)")
                .map_err(backend)?;
            for p in &rows.places {
                put.execute(params![
                    p.id,
                    kind_name(p.kind),
                    p.name,
                    p.parent,
                    p.expected_households.map(i64::from)
                ])
                .map_err(backend)?;
            }
            let mut put = tx.prepare("INSERT INTO settings (key, value) VALUES (?1, ?2)").map_err(backend)?;
            for (key, value) in &rows.settings {
                put.execute(params![key, value]).map_err(backend)?;
            }
            let mut put = tx
                .prepare(
                    "INSERT INTO devices (id, name, communes, created_at, enrolled_at, revoked_at, last_seen, app_version)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(backend)?;
            for d in &rows.devices {
                put.execute(params![
                    d.id,
                    d.name,
                    communes_text(d)?,
                    d.created_at,
                    d.enrolled_at,
                    d.revoked_at,
                    d.last_seen,
                    d.app_version
                ])
                .map_err(backend)?;
            }
            let mut put = tx
                .prepare("INSERT INTO credentials (device, kind, hash, expires_at) VALUES (?1, ?2, ?3, ?4)")
                .map_err(backend)?;
            for c in &rows.credentials {
                put.execute(params![c.device, c.kind, c.hash, c.expires_at]).map_err(backend)?;
            }
            let mut put = tx
                .prepare("INSERT INTO actors (actor, device, bound_at) VALUES (?1, ?2, ?3)")
                .map_err(backend)?;
            for (actor, device, bound_at) in &rows.actors {
                put.execute(params![actor, device, bound_at]).map_err(backend)?;
            }
            let mut put = tx
                .prepare("INSERT INTO admin_tokens (hash, name, created_at) VALUES (?1, ?2, ?3)")
                .map_err(backend)?;
            for (hash, name, created_at) in &rows.admin_tokens {
                put.execute(params![hash, name, created_at]).map_err(backend)?;
            }
            let mut put = tx
                .prepare(
                    "INSERT INTO audit_log (id, at, who, action, subject, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(backend)?;
            for (id, e) in &rows.audit {
                put.execute(params![id, e.at, e.who, e.action, e.subject, e.detail]).map_err(backend)?;
            }
        }
        tx.commit().map_err(backend)
    }

    fn put_admin_token(&mut self, name: &str, hash: &str, now: i64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO admin_tokens (hash, name, created_at) VALUES (?1, ?2, ?3)",
                params![hash, name, now],
            )
            .map(|_| ())
            .map_err(backend)
    }

    fn admin_for_token(&self, hash: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row("SELECT name FROM admin_tokens WHERE hash = ?1", [hash], |r| r.get(0))
            .optional()
            .map_err(backend)
    }

    fn size_bytes(&self) -> Result<Option<u64>, StoreError> {
        let pages: i64 = self.conn.pragma_query_value(None, "page_count", |r| r.get(0)).map_err(backend)?;
        let size: i64 = self.conn.pragma_query_value(None, "page_size", |r| r.get(0)).map_err(backend)?;
        Ok(Some((pages * size) as u64))
    }

    fn changes_since(&self, id: &DocumentId, after: i64) -> Result<Vec<ChangeAt>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT rowid, hash, bytes FROM changes WHERE document = ?1 AND rowid > ?2 ORDER BY rowid",
            )
            .map_err(backend)?;
        let rows = stmt
            .query_map(params![id.to_string(), after], |r| {
                Ok(ChangeAt { position: r.get(0)?, hash: r.get(1)?, bytes: r.get(2)? })
            })
            .map_err(backend)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(backend)
    }
}

/// Pages copied per step of a backup or restore (4 MiB with SQLite's
/// default page size); progress is reported after each step.
const PAGES_PER_STEP: std::ffi::c_int = 1024;

/// Why a backup or a restore did not happen; the target is left as it was.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The target file exists and overwriting was not asked for.
    #[error("{0} already exists; choose another file, or --force to replace it")]
    Exists(std::path::PathBuf),
    /// The file to restore is missing.
    #[error("{0} does not exist")]
    Missing(std::path::PathBuf),
    /// The file to restore is not a Thôn Sync database.
    #[error("{path} is not a Thôn Sync database: {why}")]
    NotThonSync {
        /// The file.
        path: std::path::PathBuf,
        /// What is missing.
        why: String,
    },
    /// The file to restore was written by a newer Thôn Sync.
    #[error("{path} has schema version {found}, newer than this program's {supported}; restore it with the newer thonsync")]
    TooNew {
        /// The file.
        path: std::path::PathBuf,
        /// Its schema version.
        found: i64,
        /// The newest this build knows.
        supported: i64,
    },
    /// `PRAGMA integrity_check` found damage (in the file to restore, or in a copy).
    #[error("{path} is damaged: {report}")]
    Damaged {
        /// The file.
        path: std::path::PathBuf,
        /// The first lines SQLite reported.
        report: String,
    },
    /// Another connection (a running server) holds the target database.
    #[error("{0} is in use (is thonsync-server running on it?); stop the server, then restore")]
    InUse(std::path::PathBuf),
    /// The restore's source and target are the same file.
    #[error("{0} is both the backup and the database to restore into")]
    SameFile(std::path::PathBuf),
    /// SQLite or the file system failed.
    #[error("{0}")]
    Io(String),
}

fn io(e: impl std::fmt::Display) -> BackupError {
    BackupError::Io(e.to_string())
}

/// What a backup or a restore wrote: a copy that passed `PRAGMA integrity_check`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Copied {
    /// The file written.
    pub path: std::path::PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Database pages copied.
    pub pages: u64,
    /// The schema version of the copy (the server migrates an older one when it starts).
    pub schema_version: i64,
}

/// Copies every page of `from` into `to` with SQLite's online backup API,
/// [`PAGES_PER_STEP`] at a time, calling `progress(done, total)` after each step.
fn copy_pages(
    from: &Connection,
    to: &mut Connection,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u64, rusqlite::Error> {
    use rusqlite::backup::{Backup, StepResult};
    let backup = Backup::new(from, to)?;
    loop {
        let step = backup.step(PAGES_PER_STEP)?;
        let p = backup.progress();
        let total = p.pagecount.max(0) as u64;
        progress(total.saturating_sub(p.remaining.max(0) as u64), total);
        match step {
            StepResult::Done => return Ok(total),
            StepResult::More => {}
            // Busy or locked for a moment: try again shortly.
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Runs `PRAGMA integrity_check` on `conn`: `Ok` when SQLite says `ok`.
fn integrity(conn: &Connection, path: &Path) -> Result<(), BackupError> {
    let mut stmt = conn.prepare("PRAGMA integrity_check(20)").map_err(io)?;
    let lines: Vec<String> =
        stmt.query_map([], |r| r.get(0)).map_err(io)?.collect::<Result<_, _>>().map_err(io)?;
    if lines.len() == 1 && lines[0] == "ok" {
        return Ok(());
    }
    Err(BackupError::Damaged { path: path.to_owned(), report: lines.join("; ") })
}

/// The schema version of a Thôn Sync database this build knows, or why it is not one.
fn known_schema(conn: &Connection, path: &Path) -> Result<i64, BackupError> {
    let not = |why: String| BackupError::NotThonSync { path: path.to_owned(), why };
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| not(format!("SQLite cannot read it ({e})")))?;
    if version > SCHEMA_VERSION {
        return Err(BackupError::TooNew { path: path.to_owned(), found: version, supported: SCHEMA_VERSION });
    }
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('changes', 'refused_uploads', 'settings')",
            [],
            |r| r.get(0),
        )
        .map_err(|e| not(format!("SQLite cannot read it ({e})")))?;
    if version < 1 || tables < 3 {
        return Err(not("it has no Thôn Sync schema".into()));
    }
    Ok(version)
}

/// `path` with `suffix` added to its file name.
fn beside(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(suffix);
    path.with_file_name(name)
}

impl SqliteStore {
    /// Copies the database to the new file `dest`, consistent at one moment
    /// while a server goes on writing: the copy is read in one read
    /// transaction (WAL lets the writer go on), page by page with SQLite's
    /// online backup API, into `dest.partial`, checked with `PRAGMA
    /// integrity_check`, and renamed to `dest` only then, so `dest` is never
    /// a half-written file. The copy is a single file (rollback journal, no
    /// `-wal`). An existing `dest` is refused unless `overwrite`.
    pub fn backup_to(
        &self,
        dest: &Path,
        overwrite: bool,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Copied, BackupError> {
        if dest.exists() && !overwrite {
            return Err(BackupError::Exists(dest.to_owned()));
        }
        let partial = beside(dest, ".partial");
        let _ = std::fs::remove_file(&partial);
        let written = (|| {
            let mut out = Connection::open(&partial).map_err(io)?;
            // One snapshot for every step: without this read transaction,
            // each step would see the writer's newer pages.
            self.conn.execute_batch("BEGIN").map_err(io)?;
            let copied = self
                .conn
                .query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))
                .and_then(|()| copy_pages(&self.conn, &mut out, progress));
            let ended = self.conn.execute_batch("ROLLBACK");
            let pages = copied.map_err(io)?;
            ended.map_err(io)?;
            out.pragma_update(None, "journal_mode", "DELETE").map_err(io)?;
            integrity(&out, dest)?;
            let schema_version = known_schema(&out, dest)?;
            drop(out);
            std::fs::File::open(&partial).and_then(|f| f.sync_all()).map_err(io)?;
            std::fs::rename(&partial, dest).map_err(io)?;
            if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
                // The rename is durable once the directory is.
                let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
            }
            let bytes = std::fs::metadata(dest).map_err(io)?.len();
            Ok(Copied { path: dest.to_owned(), bytes, pages, schema_version })
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        written
    }

    /// Replaces the database at `db` with the backup `from`. The backup is
    /// checked first (a Thôn Sync schema this build knows, `PRAGMA
    /// integrity_check`); `db` is then opened in exclusive locking mode, so
    /// a database any other connection holds (a running server) is refused
    /// rather than changed under it, and no server can open it until the
    /// restore is done; the pages are copied with SQLite's backup API (which
    /// also takes care of `db`'s `-wal` file) and the result is checked
    /// again. An existing `db` is replaced only if `overwrite`. A backup of
    /// an older schema is migrated when the server next opens it.
    pub fn restore(
        from: &Path,
        db: &Path,
        overwrite: bool,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Copied, BackupError> {
        if !from.exists() {
            return Err(BackupError::Missing(from.to_owned()));
        }
        if db.exists() {
            let same = std::fs::canonicalize(from).ok() == std::fs::canonicalize(db).ok();
            if same {
                return Err(BackupError::SameFile(db.to_owned()));
            }
            if !overwrite {
                return Err(BackupError::Exists(db.to_owned()));
            }
        }
        let source = Connection::open_with_flags(
            from,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(io)?;
        known_schema(&source, from)?;
        integrity(&source, from)?;

        let mut target = Connection::open(db).map_err(io)?;
        target.busy_timeout(Duration::from_secs(1)).map_err(io)?;
        target.pragma_update(None, "locking_mode", "EXCLUSIVE").map_err(io)?;
        match target.execute_batch("BEGIN EXCLUSIVE; COMMIT;") {
            Ok(()) => {}
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) =>
            {
                return Err(BackupError::InUse(db.to_owned()));
            }
            Err(e) => return Err(io(e)),
        }
        let pages = copy_pages(&source, &mut target, progress).map_err(io)?;
        integrity(&target, db)?;
        let schema_version = known_schema(&target, db)?;
        // Closing releases the exclusive lock (and folds the -wal file back in).
        target.close().map_err(|(_, e)| io(e))?;
        let bytes = std::fs::metadata(db).map_err(io)?.len();
        Ok(Copied { path: db.to_owned(), bytes, pages, schema_version })
    }
}

/// A bare connection to a database file, for tests that tamper with it.
#[doc(hidden)]
pub fn raw_connection_for_tests(path: &Path) -> Connection {
    Connection::open(path).expect("open")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database with `settings` values of 30 KB: about 8 pages each.
    fn store_with(path: &Path, settings: usize) -> SqliteStore {
        let mut store = SqliteStore::open(path).expect("open");
        for i in 0..settings {
            store.put_setting(&format!("k{i}"), &value()).expect("write");
        }
        store
    }

    fn value() -> String {
        "v".repeat(30_000)
    }

    #[test]
    fn units_of_work_of_two_handles_on_one_file_do_not_interleave() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("thonsync.sqlite");
        let a = SqliteStore::open(&path).expect("open");
        let b = SqliteStore::open(&path).expect("open again");
        super::super::conformance::units_of_work_on_one_database_do_not_interleave(a, b);
    }

    #[test]
    fn a_backup_taken_while_another_connection_writes_is_one_consistent_copy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (db, copy) = (dir.path().join("live.sqlite"), dir.path().join("copy.sqlite"));
        let mut writer = store_with(&db, 300);
        let reader = SqliteStore::open_read_only(&db).expect("read-only");
        let mut steps = 0;
        // The writer writes between the backup's steps: each step reads the snapshot taken at the start.
        let copied = reader
            .backup_to(&copy, false, &mut |_, _| {
                steps += 1;
                writer.put_setting(&format!("late{steps}"), "x").expect("the writer goes on");
            })
            .expect("backup");
        assert!(steps >= 2, "the copy took several steps: {steps}");
        assert_eq!(copied.schema_version, SCHEMA_VERSION);
        let restored = SqliteStore::open_read_only(&copy).expect("the copy opens");
        assert_eq!(restored.setting("k299").expect("read"), Some(value()));
        assert_eq!(restored.setting("late1").expect("read"), None, "nothing written after the start");
        assert!(!beside(&copy, ".partial").exists());
        let again = reader.backup_to(&copy, false, &mut |_, _| {});
        assert!(matches!(again, Err(BackupError::Exists(_))), "{again:?}");
        reader.backup_to(&copy, true, &mut |_, _| {}).expect("--force replaces it");
    }

    #[test]
    fn a_restore_checks_the_backup_and_refuses_a_database_in_use() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (db, copy, target) =
            (dir.path().join("a.sqlite"), dir.path().join("b.sqlite"), dir.path().join("c.sqlite"));
        let store = store_with(&db, 10);
        store.backup_to(&copy, false, &mut |_, _| {}).expect("backup");

        let newer = dir.path().join("newer.sqlite");
        store.backup_to(&newer, false, &mut |_, _| {}).expect("backup");
        Connection::open(&newer)
            .expect("open")
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .expect("tamper");
        let refused = SqliteStore::restore(&newer, &target, false, &mut |_, _| {});
        assert!(matches!(refused, Err(BackupError::TooNew { .. })), "{refused:?}");
        assert!(!target.exists(), "nothing was written");

        let junk = dir.path().join("junk.sqlite");
        Connection::open(&junk).expect("open").execute_batch("CREATE TABLE t(x)").expect("write");
        let refused = SqliteStore::restore(&junk, &target, false, &mut |_, _| {});
        assert!(matches!(refused, Err(BackupError::NotThonSync { .. })), "{refused:?}");

        let held = SqliteStore::open(&target).expect("a server's connection");
        let refused = SqliteStore::restore(&copy, &target, true, &mut |_, _| {});
        assert!(matches!(refused, Err(BackupError::InUse(_))), "{refused:?}");
        drop(held);
        let refused = SqliteStore::restore(&copy, &target, false, &mut |_, _| {});
        assert!(matches!(refused, Err(BackupError::Exists(_))), "{refused:?}");
        SqliteStore::restore(&copy, &target, true, &mut |_, _| {}).expect("restored");
        let restored = SqliteStore::open(&target).expect("opens");
        assert_eq!(restored.setting("k9").expect("read"), Some(value()));
    }
}
