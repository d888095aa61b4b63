//! Stable identifiers: places, survey rounds, documents and peers.
//!
//! Every id that reaches the wire is validated here, once, so the rest of the
//! crate can trust it: ids are short, ASCII, and safe in a URL path segment,
//! a file name and an SQL parameter alike.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::IdError;

/// The survey round used when none is named.
pub const DEFAULT_ROUND: &str = "2024-1";

/// Longest id accepted anywhere (place, household, round, device).
pub const MAX_ID_LEN: usize = 64;

/// Checks the shared id alphabet: `a-z`, `0-9`, `-` and `_`, not empty, not
/// starting with `-`, at most [`MAX_ID_LEN`] bytes.
pub fn check_id(what: &'static str, s: &str) -> Result<(), IdError> {
    if s.is_empty() || s.len() > MAX_ID_LEN {
        return Err(IdError::Length { what, value: truncate(s) });
    }
    let ok = s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !ok || s.starts_with('-') {
        return Err(IdError::Alphabet { what, value: truncate(s) });
    }
    Ok(())
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps an id.
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                check_id($what, &s)?;
                Ok(Self(s))
            }
            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }
        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::new(s)
            }
        }
        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

string_id!(
    /// A place in the registry: province, district, commune or village.
    PlaceId,
    "place id"
);
string_id!(
    /// A survey round, e.g. `2024-1`.
    Round,
    "round"
);
string_id!(
    /// A household within one village document.
    HouseholdId,
    "household id"
);
string_id!(
    /// A peer that syncs with a replica: a device id on the server, `server` on a device.
    PeerId,
    "peer id"
);

/// What a survey document describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DocumentKind {
    /// One village (thôn) or residential group: village facts and households.
    Village,
    /// One commune or ward: facts that belong to no village.
    Commune,
}

impl DocumentKind {
    /// The kind's name as used in document ids.
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentKind::Village => "village",
            DocumentKind::Commune => "commune",
        }
    }
}

/// Names one survey document: `village:<place>:<round>` or `commune:<place>:<round>`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DocumentId {
    /// Village or commune document.
    pub kind: DocumentKind,
    /// The village or commune it describes.
    pub place: PlaceId,
    /// The survey round.
    pub round: Round,
}

impl DocumentId {
    /// The document of one village in one round.
    pub fn village(place: PlaceId, round: Round) -> Self {
        Self { kind: DocumentKind::Village, place, round }
    }
    /// The commune-level document of one commune in one round.
    pub fn commune(place: PlaceId, round: Round) -> Self {
        Self { kind: DocumentKind::Commune, place, round }
    }
}

impl fmt::Display for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.kind.as_str(), self.place, self.round)
    }
}

impl FromStr for DocumentId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let bad = || IdError::Document { value: truncate(s) };
        let mut parts = s.splitn(3, ':');
        let kind = match parts.next() {
            Some("village") => DocumentKind::Village,
            Some("commune") => DocumentKind::Commune,
            _ => return Err(bad()),
        };
        let place = PlaceId::new(parts.next().ok_or_else(bad)?)?;
        let round = Round::new(parts.next().ok_or_else(bad)?)?;
        Ok(Self { kind, place, round })
    }
}

impl TryFrom<String> for DocumentId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        s.parse()
    }
}

impl From<DocumentId> for String {
    fn from(id: DocumentId) -> String {
        id.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_ids_round_trip_and_refuse_traversal() {
        let id: DocumentId = "village:nhu-co-01:2024-1".parse().unwrap();
        assert_eq!(id.kind, DocumentKind::Village);
        assert_eq!(id.to_string(), "village:nhu-co-01:2024-1");
        for bad in ["village:../etc:2024-1", "farm:x:1", "village:x", "village:X:1", "village::1", ""] {
            assert!(bad.parse::<DocumentId>().is_err(), "{bad} accepted");
        }
        assert!(PlaceId::new("a".repeat(65)).is_err());
    }
}
