//! The JSON bodies of the device sync API (`POST /v1/sync`), the registry
//! endpoint and enrollment: defined once in `sync_core::wire`, shared with
//! the field device, and documented in docs/protocol.md.

pub use sync_core::wire::{
    CommuneDocuments, DocumentMessage, DocumentReply, EnrollRequest, EnrollResponse, RegistryDocument,
    SyncRequest, SyncResponse,
};
