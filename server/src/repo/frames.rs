//! The frames of automerge-repo's network protocol v1, as `/v1/repo` reads
//! and writes them: one CBOR map per binary WebSocket frame, keyed by
//! strings (`type`, `senderId`, `targetId`, `documentId`, `data`, …), as
//! `@automerge/automerge-repo-network-websocket` and samod-core's
//! `wire_protocol.rs` write them. Unknown keys are skipped; a frame that
//! is not such a map is an error, never a panic.

use minicbor::data::Type;
use minicbor::{Decoder, Encoder};

/// The protocol version spoken.
pub const PROTOCOL_VERSION: &str = "1";

/// What a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// The handshake's first frame.
    Join {
        /// The client's peer id.
        sender_id: String,
        /// The protocol versions it speaks.
        versions: Vec<String>,
    },
    /// `request` (the client lacks the document) or `sync`: a sync message.
    Sync {
        /// The automerge-repo document id (base58check).
        document_id: String,
        /// The automerge sync message.
        data: Vec<u8>,
    },
    /// `ephemeral`: a message about a document that is not part of it
    /// (presence, cursors), for the other peers that have it open.
    Ephemeral {
        /// Its author's peer id.
        sender_id: String,
        /// The automerge-repo document id (base58check).
        document_id: String,
        /// The author's session, and the message's number in it.
        session_id: String,
        /// The message's number in the session (receivers drop what is not newer).
        count: u64,
        /// The message (CBOR, opaque to the server).
        data: Vec<u8>,
    },
    /// The client is going away.
    Leave,
    /// Anything else of the protocol (`doc-unavailable`,
    /// `remote-subscription-change`, `remote-heads-changed`): read and left
    /// alone; the type is kept for the log.
    Other(String),
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Not a CBOR map of the expected shape.
    #[error("not an automerge-repo frame: {0}")]
    Cbor(String),
    /// A field the message type needs is absent.
    #[error("a {kind} frame needs `{field}`")]
    Missing {
        /// The message type.
        kind: String,
        /// The absent field.
        field: &'static str,
    },
}

impl From<minicbor::decode::Error> for FrameError {
    fn from(e: minicbor::decode::Error) -> Self {
        FrameError::Cbor(e.to_string())
    }
}

/// Reads a client's frame.
pub fn decode(bytes: &[u8]) -> Result<Incoming, FrameError> {
    let mut d = Decoder::new(bytes);
    let len = d.map()?;
    let (mut kind, mut sender, mut document, mut data, mut versions) = (None, None, None, None, None);
    let (mut session, mut count) = (None, None);
    let mut read = 0u64;
    loop {
        match len {
            Some(n) if read >= n => break,
            None if d.datatype()? == Type::Break => {
                d.skip()?;
                break;
            }
            _ => {}
        }
        read += 1;
        let key = d.str()?;
        match key {
            "type" => kind = Some(d.str()?.to_owned()),
            "senderId" => sender = Some(d.str()?.to_owned()),
            "documentId" => {
                document = Some(match d.datatype()? {
                    Type::Bytes => bs58::encode(d.bytes()?).with_check().into_string(),
                    _ => d.str()?.to_owned(),
                })
            }
            "data" => data = Some(d.bytes()?.to_vec()),
            "sessionId" => session = Some(d.str()?.to_owned()),
            "count" => count = Some(d.u64()?),
            "supportedProtocolVersions" => {
                let n = d.array()?.ok_or_else(|| FrameError::Cbor("an indefinite array".into()))?;
                let mut list = Vec::new();
                for _ in 0..n.min(16) {
                    list.push(d.str()?.to_owned());
                }
                for _ in n.min(16)..n {
                    d.skip()?;
                }
                versions = Some(list);
            }
            _ => d.skip()?,
        }
    }
    let kind = kind.ok_or(FrameError::Missing { kind: "frame".into(), field: "type" })?;
    let missing = |field| FrameError::Missing { kind: kind.clone(), field };
    Ok(match kind.as_str() {
        "join" => Incoming::Join {
            sender_id: sender.ok_or_else(|| missing("senderId"))?,
            versions: versions.ok_or_else(|| missing("supportedProtocolVersions"))?,
        },
        "request" | "sync" => Incoming::Sync {
            document_id: document.ok_or_else(|| missing("documentId"))?,
            data: data.ok_or_else(|| missing("data"))?,
        },
        "ephemeral" => Incoming::Ephemeral {
            sender_id: sender.ok_or_else(|| missing("senderId"))?,
            document_id: document.ok_or_else(|| missing("documentId"))?,
            session_id: session.ok_or_else(|| missing("sessionId"))?,
            count: count.ok_or_else(|| missing("count"))?,
            data: data.ok_or_else(|| missing("data"))?,
        },
        "leave" => Incoming::Leave,
        _ => Incoming::Other(kind),
    })
}

fn finish(e: Encoder<Vec<u8>>) -> Vec<u8> {
    e.into_writer()
}

/// `peer`: the handshake's answer, with the server's storage id (so a
/// client with storage keeps its sync state with the server across
/// connections) and `isEphemeral: false`.
pub fn peer(sender_id: &str, target_id: &str, storage_id: &str) -> Vec<u8> {
    let mut e = Encoder::new(Vec::new());
    let _ = e
        .map(5)
        .and_then(|e| e.str("type")?.str("peer"))
        .and_then(|e| e.str("senderId")?.str(sender_id))
        .and_then(|e| e.str("targetId")?.str(target_id))
        .and_then(|e| e.str("selectedProtocolVersion")?.str(PROTOCOL_VERSION))
        .and_then(|e| e.str("peerMetadata")?.map(2)?.str("storageId")?.str(storage_id))
        .and_then(|e| e.str("isEphemeral")?.bool(false));
    finish(e)
}

/// `sync`: a sync message of the server's for one document.
pub fn sync(sender_id: &str, target_id: &str, document_id: &str, data: &[u8]) -> Vec<u8> {
    let mut e = Encoder::new(Vec::with_capacity(data.len() + 128));
    let _ = e
        .map(5)
        .and_then(|e| e.str("type")?.str("sync"))
        .and_then(|e| e.str("documentId")?.str(document_id))
        .and_then(|e| e.str("senderId")?.str(sender_id))
        .and_then(|e| e.str("targetId")?.str(target_id))
        .and_then(|e| e.str("data")?.bytes(data));
    finish(e)
}

/// `doc-unavailable`: the server holds no such document for this device.
pub fn doc_unavailable(sender_id: &str, target_id: &str, document_id: &str) -> Vec<u8> {
    let mut e = Encoder::new(Vec::new());
    let _ = e
        .map(4)
        .and_then(|e| e.str("type")?.str("doc-unavailable"))
        .and_then(|e| e.str("senderId")?.str(sender_id))
        .and_then(|e| e.str("targetId")?.str(target_id))
        .and_then(|e| e.str("documentId")?.str(document_id));
    finish(e)
}

/// `ephemeral`: a message about a document that is not part of it; `data`
/// is CBOR (what automerge-repo's `DocHandle` decodes for its
/// `ephemeral-message` event).
pub fn ephemeral(
    sender_id: &str,
    target_id: &str,
    document_id: &str,
    session_id: &str,
    count: u64,
    data: &[u8],
) -> Vec<u8> {
    let mut e = Encoder::new(Vec::new());
    let _ = e
        .map(7)
        .and_then(|e| e.str("type")?.str("ephemeral"))
        .and_then(|e| e.str("senderId")?.str(sender_id))
        .and_then(|e| e.str("targetId")?.str(target_id))
        .and_then(|e| e.str("count")?.u64(count))
        .and_then(|e| e.str("sessionId")?.str(session_id))
        .and_then(|e| e.str("documentId")?.str(document_id))
        .and_then(|e| e.str("data")?.bytes(data));
    finish(e)
}

/// `error`: the connection cannot go on; the server closes it next.
pub fn error(message: &str) -> Vec<u8> {
    let mut e = Encoder::new(Vec::new());
    let _ = e.map(2).and_then(|e| e.str("type")?.str("error")).and_then(|e| e.str("message")?.str(message));
    finish(e)
}

/// A JSON value as CBOR (maps with string keys, arrays, strings, integers,
/// floats, booleans, null): how an error body travels in `ephemeral`.
pub fn json_to_cbor(value: &serde_json::Value) -> Vec<u8> {
    fn put(e: &mut Encoder<Vec<u8>>, v: &serde_json::Value) {
        use serde_json::Value;
        let _ = match v {
            Value::Null => e.null().map(|_| ()),
            Value::Bool(b) => e.bool(*b).map(|_| ()),
            Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
                (Some(u), _, _) => e.u64(u).map(|_| ()),
                (_, Some(i), _) => e.i64(i).map(|_| ()),
                (_, _, Some(f)) => e.f64(f).map(|_| ()),
                _ => e.null().map(|_| ()),
            },
            Value::String(s) => e.str(s).map(|_| ()),
            Value::Array(items) => {
                let _ = e.array(items.len() as u64);
                for item in items {
                    put(e, item);
                }
                Ok(())
            }
            Value::Object(map) => {
                let _ = e.map(map.len() as u64);
                for (k, item) in map {
                    let _ = e.str(k);
                    put(e, item);
                }
                Ok(())
            }
        };
    }
    let mut e = Encoder::new(Vec::new());
    put(&mut e, value);
    e.into_writer()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_and_a_sync_are_read_and_junk_is_an_error() {
        let mut e = Encoder::new(Vec::new());
        e.map(4).unwrap();
        e.str("type").unwrap().str("join").unwrap();
        e.str("senderId").unwrap().str("peer-1").unwrap();
        e.str("peerMetadata").unwrap().map(1).unwrap().str("isEphemeral").unwrap().bool(true).unwrap();
        e.str("supportedProtocolVersions").unwrap().array(1).unwrap().str("1").unwrap();
        let join = decode(&e.into_writer()).unwrap();
        assert_eq!(join, Incoming::Join { sender_id: "peer-1".into(), versions: vec!["1".into()] });

        let frame = sync("server", "peer-1", "2Xdoc", &[1, 2, 3]);
        assert_eq!(
            decode(&frame).unwrap(),
            Incoming::Sync { document_id: "2Xdoc".into(), data: vec![1, 2, 3] }
        );
        assert!(decode(&[0xff, 0x00]).is_err());
        assert!(decode(&error("x")[..3]).is_err());
        assert!(matches!(decode(&error("bye")).unwrap(), Incoming::Other(k) if k == "error"));
    }

    #[test]
    fn a_peer_frame_carries_the_storage_id_and_is_not_ephemeral() {
        let frame = peer("server", "peer-1", "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0");
        let mut d = Decoder::new(&frame);
        let n = d.map().unwrap().unwrap();
        let mut metadata = None;
        for _ in 0..n {
            if d.str().unwrap() == "peerMetadata" {
                assert_eq!(d.map().unwrap(), Some(2));
                assert_eq!(d.str().unwrap(), "storageId");
                let id = d.str().unwrap().to_owned();
                assert_eq!(d.str().unwrap(), "isEphemeral");
                metadata = Some((id, d.bool().unwrap()));
            } else {
                d.skip().unwrap();
            }
        }
        assert_eq!(metadata, Some(("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".to_owned(), false)));
        assert!(matches!(decode(&frame).unwrap(), Incoming::Other(k) if k == "peer"));
    }

    #[test]
    fn an_ephemeral_frame_is_read_back_as_written() {
        let frame = ephemeral("peer-1", "server", "2Xdoc", "session-9", 7, &[0xa0]);
        assert_eq!(
            decode(&frame).unwrap(),
            Incoming::Ephemeral {
                sender_id: "peer-1".into(),
                document_id: "2Xdoc".into(),
                session_id: "session-9".into(),
                count: 7,
                data: vec![0xa0],
            }
        );
        let mut e = Encoder::new(Vec::new());
        e.map(2).unwrap();
        e.str("type").unwrap().str("ephemeral").unwrap();
        e.str("senderId").unwrap().str("peer-1").unwrap();
        assert!(matches!(decode(&e.into_writer()), Err(FrameError::Missing { .. })));
    }
}
