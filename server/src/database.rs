//! Which database the server keeps, chosen by `--db`: a SQLite file (the
//! default, embedded) or a PostgreSQL database (`postgres://…`). Only here
//! does the server name a backend; everything else holds a `dyn Store`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use store_postgres::PgStore;
use sync_core::store::{SqliteStore, Store, StoreError};

use crate::state::ReaderPool;

/// Connections the writer's PostgreSQL pool keeps: it commits one group at a
/// time, and a second lets a job read while nothing else waits.
const WRITER_CONNECTIONS: u32 = 2;

/// Connections the readers' PostgreSQL pool keeps at most.
const READER_CONNECTIONS: u32 = 8;

/// A database the server can keep its store in.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file, created if missing.
    Sqlite(PathBuf),
    /// A PostgreSQL database URL (`postgres://user:password@host:port/name`);
    /// the database must exist, its tables are created.
    Postgres(String),
}

impl Database {
    /// Reads `--db`: a `postgres://` or `postgresql://` URL names a
    /// PostgreSQL database, anything else a SQLite file.
    pub fn parse(db: &str) -> Self {
        if store_postgres::is_postgres_url(db) {
            Self::Postgres(db.to_owned())
        } else {
            Self::Sqlite(PathBuf::from(db))
        }
    }

    /// Opens (migrating) the store the writer owns.
    pub fn open_writer(&self) -> Result<Box<dyn Store>, StoreError> {
        Ok(match self {
            Self::Sqlite(path) => Box::new(SqliteStore::open(path)?),
            Self::Postgres(url) => Box::new(PgStore::open_with_pool(url, WRITER_CONNECTIONS)?),
        })
    }

    /// The read connections, over a database the writer has migrated.
    pub fn readers(&self) -> Result<ReaderPool, StoreError> {
        Ok(match self {
            Self::Sqlite(path) => {
                let path = path.clone();
                ReaderPool::new(Arc::new(move || Ok(Box::new(SqliteStore::open(&path)?) as Box<dyn Store>)))
            }
            Self::Postgres(url) => {
                // One pool for every reader: each handle is a clone of it.
                let store = PgStore::open_with_pool(url, READER_CONNECTIONS)?;
                ReaderPool::new(Arc::new(move || Ok(Box::new(store.clone()) as Box<dyn Store>)))
            }
        })
    }
}

/// What logs and errors show: the file, or the URL without its password.
impl fmt::Display for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "{}", path.display()),
            Self::Postgres(url) => f.write_str(&store_postgres::redacted(url)),
        }
    }
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Database({self})")
    }
}

/// For `--db`: never fails, anything that is not a URL being a file.
impl std::str::FromStr for Database {
    type Err = std::convert::Infallible;
    fn from_str(db: &str) -> Result<Self, Self::Err> {
        Ok(Self::parse(db))
    }
}

impl From<PathBuf> for Database {
    fn from(path: PathBuf) -> Self {
        Self::Sqlite(path)
    }
}

impl From<&PathBuf> for Database {
    fn from(path: &PathBuf) -> Self {
        Self::Sqlite(path.clone())
    }
}

impl From<&Path> for Database {
    fn from(path: &Path) -> Self {
        Self::Sqlite(path.to_owned())
    }
}

impl From<&str> for Database {
    fn from(db: &str) -> Self {
        Self::parse(db)
    }
}

impl From<String> for Database {
    fn from(db: String) -> Self {
        Self::parse(&db)
    }
}

#[cfg(test)]
mod tests {
    use super::Database;
    use std::path::PathBuf;

    #[test]
    fn a_url_names_postgres_and_anything_else_a_file() {
        assert_eq!(Database::parse("thonsync.sqlite"), Database::Sqlite(PathBuf::from("thonsync.sqlite")));
        assert_eq!(Database::parse("/var/lib/postgres.db"), Database::Sqlite("/var/lib/postgres.db".into()));
        let url = "postgres://thonsync:secret@db.lan:5432/thonsync";
        assert_eq!(Database::parse(url), Database::Postgres(url.into()));
        assert!(matches!(Database::parse("postgresql://h/db"), Database::Postgres(_)));
        assert_eq!(Database::parse(url).to_string(), "postgres://thonsync:***@db.lan:5432/thonsync");
    }
}
