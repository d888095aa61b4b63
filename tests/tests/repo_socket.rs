//! `GET /v1/repo` seen by a bare WebSocket client written here on a TCP
//! stream (the upgrade, masked frames out, frames in read by hand), so it
//! does exactly what the test says and nothing more; in particular it never
//! answers a ping, which every WebSocket library does by itself. The
//! server's storage id in `peer` (one per database, kept across restarts)
//! and its pings (every `Limits::repo_ping`; an unanswered ping closes
//! nothing).

use std::time::Duration;

use base64::Engine as _;
use minicbor::{Decoder, Encoder};
use tests::{village, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A frame from the server: its opcode and payload.
struct Frame {
    opcode: u8,
    payload: Vec<u8>,
}

const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;

/// A WebSocket client that sends only what it is told to.
struct Bare {
    stream: TcpStream,
}

impl Bare {
    /// Upgrades `GET /v1/repo` with the device token as `Authorization: Bearer`.
    async fn open(server: &TestServer, token: &str) -> Self {
        let addr = server.url().trim_start_matches("http://").to_owned();
        let mut stream = TcpStream::connect(&addr).await.expect("the server listens");
        let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>());
        let request = format!(
            "GET /v1/repo HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("the upgrade request is sent");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            let n = stream.read(&mut byte).await.expect("the upgrade answer");
            assert!(n == 1 && head.len() < 8192, "an upgrade answer: {}", String::from_utf8_lossy(&head));
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "the socket opens: {head}");
        Self { stream }
    }

    /// Sends a masked binary frame.
    async fn send(&mut self, payload: &[u8]) {
        self.stream.write_all(&masked(payload)).await.expect("a frame is sent");
    }

    /// Sends masked binary frames in one write, so that they reach the
    /// server together.
    async fn send_together(&mut self, payloads: &[Vec<u8>]) {
        let bytes: Vec<u8> = payloads.iter().flat_map(|p| masked(p)).collect();
        self.stream.write_all(&bytes).await.expect("frames are sent");
    }

    /// The next frame, or `None` when the connection ends.
    async fn next(&mut self) -> Option<Frame> {
        let mut head = [0u8; 2];
        self.stream.read_exact(&mut head).await.ok()?;
        assert_eq!(head[1] & 0x80, 0, "the server's frames are not masked");
        let len = match head[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                self.stream.read_exact(&mut b).await.ok()?;
                u16::from_be_bytes(b) as usize
            }
            127 => {
                let mut b = [0u8; 8];
                self.stream.read_exact(&mut b).await.ok()?;
                u64::from_be_bytes(b) as usize
            }
            n => n as usize,
        };
        assert!(len <= 16 << 20, "a frame of {len} bytes");
        let mut payload = vec![0u8; len];
        self.stream.read_exact(&mut payload).await.ok()?;
        Some(Frame { opcode: head[0] & 0x0f, payload })
    }

    /// The next binary frame (pings and other control frames skipped), in `within`.
    async fn binary(&mut self, within: Duration) -> Vec<u8> {
        tokio::time::timeout(within, async {
            loop {
                let frame = self.next().await.expect("the socket stays open");
                assert_ne!(frame.opcode, CLOSE, "the socket stays open");
                if frame.opcode == BINARY {
                    return frame.payload;
                }
            }
        })
        .await
        .expect("a frame in time")
    }

    /// `join`, then the `peer` answer's `peerMetadata`: (storage id, ephemeral).
    async fn join(&mut self) -> (String, bool) {
        let mut e = Encoder::new(Vec::new());
        e.map(4).unwrap();
        e.str("type").unwrap().str("join").unwrap();
        e.str("senderId").unwrap().str("bare-client").unwrap();
        e.str("peerMetadata").unwrap().map(1).unwrap().str("isEphemeral").unwrap().bool(true).unwrap();
        e.str("supportedProtocolVersions").unwrap().array(1).unwrap().str("1").unwrap();
        self.send(&e.into_writer()).await;
        let peer = self.binary(Duration::from_secs(10)).await;
        let (mut kind, mut storage, mut ephemeral) = (None, None, None);
        let mut d = Decoder::new(&peer);
        for _ in 0..d.map().unwrap().expect("a map of known length") {
            match d.str().unwrap() {
                "type" => kind = Some(d.str().unwrap().to_owned()),
                "peerMetadata" => {
                    for _ in 0..d.map().unwrap().expect("a map of known length") {
                        match d.str().unwrap() {
                            "storageId" => storage = Some(d.str().unwrap().to_owned()),
                            "isEphemeral" => ephemeral = Some(d.bool().unwrap()),
                            _ => d.skip().unwrap(),
                        }
                    }
                }
                _ => d.skip().unwrap(),
            }
        }
        assert_eq!(kind.as_deref(), Some("peer"), "join is answered with peer");
        (storage.expect("peer names a storage id"), ephemeral.expect("peer says whether it is ephemeral"))
    }

    /// A `request` for a document with an empty document's first sync message.
    async fn request(&mut self, repo_id: &str) {
        self.send(&request_frame(repo_id, 0)).await;
    }
}

/// A `request` frame for `repo_id` with an empty document's first sync
/// message, and `padding` bytes under a key the server skips.
fn request_frame(repo_id: &str, padding: usize) -> Vec<u8> {
    let mut e = Encoder::new(Vec::new());
    e.map(if padding > 0 { 6 } else { 5 }).unwrap();
    e.str("type").unwrap().str("request").unwrap();
    e.str("senderId").unwrap().str("bare-client").unwrap();
    e.str("targetId").unwrap().str(server::repo::SERVER_PEER).unwrap();
    e.str("documentId").unwrap().str(repo_id).unwrap();
    let empty = sync_core::automerge::Automerge::new();
    let mut state = sync_core::automerge::sync::State::new();
    use sync_core::automerge::sync::SyncDoc as _;
    let message = empty.generate_sync_message(&mut state).expect("a first message").encode();
    e.str("data").unwrap().bytes(&message).unwrap();
    if padding > 0 {
        e.str("padding").unwrap().bytes(&vec![0u8; padding]).unwrap();
    }
    e.into_writer()
}

/// `payload` as a client's masked binary frame.
fn masked(payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x80 | BINARY];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xffff => {
            frame.push(0x80 | 126);
            frame.extend((n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend((n as u64).to_be_bytes());
        }
    }
    let mask: [u8; 4] = rand::random();
    frame.extend(mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime")
}

#[test]
fn the_server_announces_one_storage_id_per_database_that_outlives_restarts() {
    let mut server = TestServer::start();
    let (_, token) = server.enrolled("bare", &["nhu-co"]);
    let first = runtime().block_on(async { Bare::open(&server, &token).await.join().await });
    assert!(!first.1, "the server keeps what it syncs");
    assert!(first.0.len() == 36 && first.0.as_bytes()[14] == b'4', "a version 4 UUID: {}", first.0);
    let stored = server.store().setting(server::STORAGE_ID_SETTING).expect("the settings read");
    assert_eq!(stored.as_deref(), Some(first.0.as_str()), "the storage id is the database's");
    server.restart();
    let again = runtime().block_on(async { Bare::open(&server, &token).await.join().await });
    assert_eq!(again, first, "the same storage id after a restart");

    let other = TestServer::start();
    let (_, token) = other.enrolled("bare", &["nhu-co"]);
    let elsewhere = runtime().block_on(async { Bare::open(&other, &token).await.join().await });
    assert_ne!(elsewhere.0, first.0, "another database has another storage id");
}

#[test]
fn an_idle_socket_is_pinged_at_the_set_interval_and_not_closed_for_never_answering() {
    let limits = server::state::Limits { repo_ping: Duration::from_secs(1), ..Default::default() };
    assert_eq!(server::state::Limits::default().repo_ping, Duration::from_secs(20), "the default");
    let server = TestServer::start_with(limits);
    let (_, token) = server.enrolled("silent", &["nhu-co"]);
    runtime().block_on(async {
        let mut socket = Bare::open(&server, &token).await;
        socket.join().await;
        // Silent from here on: no frame, no pong. Pings keep coming (a
        // bound far above the 1 s interval, far below the 20 s default
        // times the count), and the socket stays open through them.
        let mut pings = 0;
        while pings < 4 {
            let frame = tokio::time::timeout(Duration::from_secs(15), socket.next())
                .await
                .expect("a ping within 15 s of the last, at a 1 s interval")
                .expect("the socket stays open while its client answers no ping");
            assert_ne!(frame.opcode, CLOSE, "an unanswered ping closes nothing");
            if frame.opcode == PING {
                pings += 1;
            }
        }
        // Still served after all the unanswered pings: a request gets the document.
        let doc = village("nhu-co-01");
        socket.request(&sync_core::repo_url::repo_id(&doc)).await;
        let answer = socket.binary(Duration::from_secs(30)).await;
        match server::repo::decode_frame(&answer).expect("a frame") {
            server::repo::Incoming::Sync { document_id, data } => {
                assert_eq!(document_id, sync_core::repo_url::repo_id(&doc));
                assert!(!data.is_empty());
            }
            other => panic!("the document's sync message, not {other:?}"),
        }
    });
}

#[test]
fn frames_that_arrive_together_make_rounds_no_larger_than_one_sync_request() {
    // Rounds of at most 64 KiB of frames; each frame here is over 40 KiB.
    let limits = server::state::Limits { max_body_bytes: 64 * 1024, ..Default::default() };
    let server = TestServer::start_with(limits);
    let (_, token) = server.enrolled("bulky", &["nhu-co"]);
    let documents: Vec<String> =
        (1..=6).map(|n| sync_core::repo_url::repo_id(&village(&format!("nhu-co-{n:02}")))).collect();
    runtime().block_on(async {
        let mut socket = Bare::open(&server, &token).await;
        socket.join().await;
        let frames: Vec<Vec<u8>> = documents.iter().map(|id| request_frame(id, 40 * 1024)).collect();
        socket.send_together(&frames).await;
        let mut answered = std::collections::BTreeSet::new();
        while answered.len() < documents.len() {
            let frame = socket.binary(Duration::from_secs(30)).await;
            match server::repo::decode_frame(&frame).expect("a frame") {
                server::repo::Incoming::Sync { document_id, .. } => answered.insert(document_id),
                other => panic!("each document's sync message, not {other:?}"),
            };
        }
        let expected: std::collections::BTreeSet<String> = documents.iter().cloned().collect();
        assert_eq!(answered, expected, "every document is answered");
    });
    let rounds = server.metric("thonsync_sync_rounds_total ");
    assert!(rounds >= 3.0, "six frames of 40 KiB, at most two in a round of 64 KiB: {rounds} rounds");
}
