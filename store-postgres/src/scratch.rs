//! Throwaway databases for tests: [`ScratchDatabase`] creates a uniquely
//! named database on the server that `THONSYNC_TEST_POSTGRES` names, and
//! drops it (closing its connections) when dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use postgres::{Client, NoTls};

/// The variable naming a database the tests may create databases beside.
pub const TEST_POSTGRES_VAR: &str = "THONSYNC_TEST_POSTGRES";

/// The URL in [`TEST_POSTGRES_VAR`], or `None` after printing that the
/// calling test is skipped.
pub fn test_server_url() -> Option<String> {
    match std::env::var(TEST_POSTGRES_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            println!("skipped: {TEST_POSTGRES_VAR} is not set");
            None
        }
    }
}

/// A database that exists while this value does.
#[derive(Debug)]
pub struct ScratchDatabase {
    /// The URL of the database the scratch one was created from.
    admin_url: String,
    /// Its name.
    name: String,
    /// Its URL.
    url: String,
}

/// Why a scratch database could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ScratchError {
    /// The URL has no database name to replace.
    #[error("{0} names no database (expected postgres://user@host:port/name)")]
    BadUrl(String),
    /// The server refused.
    #[error("database server: {0}")]
    Server(#[from] postgres::Error),
}

impl ScratchDatabase {
    /// Creates a new, empty database on the server `admin_url` points at.
    pub fn create(admin_url: &str) -> Result<Self, ScratchError> {
        static COUNT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let name =
            format!("thonsync_test_{}_{}_{nanos}", std::process::id(), COUNT.fetch_add(1, Ordering::Relaxed));
        let url = with_database(admin_url, &name)?;
        let mut admin = Client::connect(admin_url, NoTls)?;
        admin.batch_execute(&format!("CREATE DATABASE {name}"))?;
        Ok(Self { admin_url: admin_url.to_owned(), name, url })
    }

    /// Its URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        let dropped = Client::connect(&self.admin_url, NoTls).and_then(|mut admin| {
            admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
        });
        if let Err(e) = dropped {
            eprintln!("could not drop the test database {}: {e}", self.name);
        }
    }
}

/// `url` with its database name replaced by `name` (any query kept).
pub fn with_database(url: &str, name: &str) -> Result<String, ScratchError> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let Some((scheme, rest)) = base.split_once("://") else { return Err(ScratchError::BadUrl(url.into())) };
    let authority = rest.split_once('/').map_or(rest, |(authority, _)| authority);
    let mut out = format!("{scheme}://{authority}/{name}");
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_name_is_replaced_and_the_rest_kept() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x").unwrap(),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgresql://u:p@h/db?sslmode=disable", "x").unwrap(),
            "postgresql://u:p@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h:1", "x").unwrap(), "postgres://h:1/x");
        assert!(with_database("thonsync.sqlite", "x").is_err());
    }

    #[test]
    fn passwords_are_hidden_in_what_is_shown() {
        assert_eq!(crate::redacted("postgres://u:secret@h:1/db"), "postgres://u:***@h:1/db");
        assert_eq!(crate::redacted("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(crate::redacted("postgres://h/db"), "postgres://h/db");
    }
}
