//! The errors of the replica core, one enum per concern.

use crate::ids::DocumentId;

/// An id that does not follow the id rules.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum IdError {
    /// Empty or longer than the limit.
    #[error("{what} {value:?} must be 1 to 64 characters long")]
    Length { what: &'static str, value: String },
    /// Characters outside `a-z 0-9 - _`.
    #[error("{what} {value:?} may only use a-z, 0-9, '-' and '_' and may not start with '-'")]
    Alphabet { what: &'static str, value: String },
    /// A document id that is not `village:<place>:<round>` or `commune:<place>:<round>`.
    #[error("document id {value:?} must look like village:<place>:<round> or commune:<place>:<round>")]
    Document { value: String },
}

/// Why a write through the typed survey API was not made.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// The field is not part of the survey model for this kind of document.
    #[error("unknown field {field:?} for {scope}; known fields: {known}")]
    UnknownField { field: String, scope: &'static str, known: String },
    /// The value does not have the field's type.
    #[error("field {field:?} takes {expected}, not {value:?}")]
    WrongType { field: String, expected: &'static str, value: String },
    /// A counter is changed with `increment`, a plain field with `set`.
    #[error("field {field:?} is {kind}; {hint}")]
    WrongOperation { field: String, kind: &'static str, hint: &'static str },
    /// Households live in village documents only.
    #[error("document {0} is a commune document and has no households")]
    NoHouseholds(DocumentId),
    /// The household does not exist in this document.
    #[error("household {household:?} is not in {document}")]
    NoSuchHousehold { document: DocumentId, household: String },
    /// An error from automerge itself.
    #[error("automerge: {0}")]
    Automerge(#[from] automerge::AutomergeError),
}

/// Why bytes could not be read as a survey document.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    /// The bytes are not an automerge document or change.
    #[error("document {document}: cannot decode stored bytes: {reason}")]
    Decode { document: DocumentId, reason: String },
    /// The document does not start with the genesis change for its id.
    #[error("document {document}: does not belong to this id (wrong or missing genesis change)")]
    WrongGenesis { document: DocumentId },
    /// A record holds a value its field table has no place for.
    #[error("document {document}{}: {mismatch}", household.as_ref().map(|h| format!(", household {h}")).unwrap_or_default())]
    Record {
        document: DocumentId,
        household: Option<String>,
        #[source]
        mismatch: crate::schema::RecordMismatch,
    },
}
