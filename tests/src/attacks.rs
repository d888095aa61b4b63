//! What an enrolled but hostile device can send over `POST /v1/sync`: sync
//! messages made by hand, with automerge's own APIs where they suffice and
//! byte surgery where they refuse to write such things.
//!
//! Every builder returns an [`Attack`]: the raw sync-message bytes (the
//! `message` field of one document entry, before base64), plus the change
//! hashes and actors it carries, so a test can look for them on the server.
//! Changes the hostile device writes "as itself" use its device actor
//! (`sync_core::actors::device_actor`), so a refusal can only come from the
//! attack, never from a wrong actor shape.
//!
//! The encodings followed here (automerge 0.12):
//! - a storage chunk is `85 6f 4a 83`, a 4-byte checksum (the first bytes of
//!   SHA-256 over type ++ uleb128 length ++ body), the type (0 document,
//!   1 change, 2 DEFLATE-compressed change), the uleb128 length and the body;
//!   a change's hash is the whole SHA-256 of that same span;
//! - a sync message is `0x42`, heads and need (uleb128 count + 32-byte
//!   hashes), the `have` entries (each: last-sync hashes, then a length-prefixed
//!   Bloom filter: uleb128 entries, bits per entry, probes, then
//!   ceil(entries × bits / 8) bytes), and the change chunks (uleb128 count, each
//!   length-prefixed).

use std::io::Write as _;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use sync_core::actors::{device_actor, INSTANCE_BYTES};
use sync_core::automerge::transaction::{CommitOptions, Transactable, Transaction};
use sync_core::automerge::{ActorId, AutomergeError, Change, ChangeHash, ObjId, ReadDoc, ScalarValue, ROOT};
use sync_core::ids::DocumentId;
use sync_core::survey::{genesis_actor, household_actor, SurveyDocument};

/// The stamp on changes the builders make (2023-11-14), unless an attack is about time.
pub const SOME_TIME: i64 = 1_700_000_000_000;

/// Automerge storage chunks start with these bytes.
pub const CHUNK_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];

/// A hand-made sync message and what it carries.
#[derive(Clone, Debug)]
pub struct Attack {
    /// The sync-message bytes (base64 them into a request's `message`).
    pub message: Vec<u8>,
    /// Hashes (hex) of the changes it carries, in order.
    pub hashes: Vec<String>,
    /// Actors (hex) of those changes, each once, in order of appearance.
    pub actors: Vec<String>,
}

impl Attack {
    /// A message carrying exactly these changes (their own heads, no `have`).
    pub fn carrying(changes: &[Change]) -> Self {
        let chunks: Vec<Vec<u8>> = changes.iter().map(|c| c.raw_bytes().to_vec()).collect();
        let mut heads: Vec<ChangeHash> = changes.iter().map(Change::hash).collect();
        heads.sort(); // automerge writes hashes sorted
        let mut actors: Vec<String> = Vec::new();
        for c in changes {
            let hex = c.actor_id().to_hex_string();
            if !actors.contains(&hex) {
                actors.push(hex);
            }
        }
        Self {
            message: SyncMessage { heads, changes: chunks, ..Default::default() }.encode(),
            hashes: changes.iter().map(|c| c.hash().to_string()).collect(),
            actors,
        }
    }

    /// A message that carries no change.
    fn bare(message: SyncMessage) -> Self {
        Self { message: message.encode(), hashes: Vec::new(), actors: Vec::new() }
    }
}

/// One `have` entry of a sync message.
#[derive(Clone, Debug, Default)]
pub struct Have {
    /// Heads at the last sync.
    pub last_sync: Vec<ChangeHash>,
    /// The encoded Bloom filter (empty: no filter).
    pub bloom: Vec<u8>,
}

/// A sync message, field by field, encoded exactly as given.
#[derive(Clone, Debug, Default)]
pub struct SyncMessage {
    /// The sender's heads.
    pub heads: Vec<ChangeHash>,
    /// Hashes the sender asks for.
    pub need: Vec<ChangeHash>,
    /// What the sender claims to have.
    pub have: Vec<Have>,
    /// Change data, each element one or more storage chunks.
    pub changes: Vec<Vec<u8>>,
}

impl SyncMessage {
    /// The wire bytes (version 1, no flags). Hash lists must be sorted, as
    /// automerge writes them, for the message to re-encode to itself.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![0x42];
        hashes(&mut out, &self.heads);
        hashes(&mut out, &self.need);
        uleb(&mut out, self.have.len() as u64);
        for have in &self.have {
            hashes(&mut out, &have.last_sync);
            uleb(&mut out, have.bloom.len() as u64);
            out.extend_from_slice(&have.bloom);
        }
        uleb(&mut out, self.changes.len() as u64);
        for change in &self.changes {
            uleb(&mut out, change.len() as u64);
            out.extend_from_slice(change);
        }
        out
    }
}

pub use sync_core::inbound::write_uleb as uleb;

fn hashes(out: &mut Vec<u8>, hs: &[ChangeHash]) {
    uleb(out, hs.len() as u64);
    for h in hs {
        out.extend_from_slice(&h.0);
    }
}

/// A Bloom filter as automerge encodes it, with any parameters; `bits` must
/// be ceil(entries × bits_per_entry / 8) bytes for the message to re-encode
/// to itself.
pub fn bloom(entries: u32, bits_per_entry: u32, probes: u32, bits: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    uleb(&mut out, entries.into());
    uleb(&mut out, bits_per_entry.into());
    uleb(&mut out, probes.into());
    out.extend_from_slice(bits);
    out
}

/// A storage chunk of `kind` around `body`, with its correct checksum.
pub fn chunk(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut span = vec![kind];
    uleb(&mut span, body.len() as u64);
    span.extend_from_slice(body);
    let digest = Sha256::digest(&span);
    let mut out = CHUNK_MAGIC.to_vec();
    out.extend_from_slice(&digest[..4]);
    out.extend_from_slice(&span);
    out
}

/// The (type, body) of one whole storage chunk.
///
/// # Panics
/// If `bytes` is not one chunk (the builders only hand it automerge's own).
pub fn chunk_body(bytes: &[u8]) -> (u8, &[u8]) {
    assert_eq!(bytes[..4], CHUNK_MAGIC, "a storage chunk");
    let kind = bytes[8];
    let (mut len, mut shift, mut pos) = (0usize, 0, 9);
    loop {
        let b = bytes[pos];
        len |= usize::from(b & 0x7f) << shift;
        shift += 7;
        pos += 1;
        if b & 0x80 == 0 {
            break;
        }
    }
    assert_eq!(pos + len, bytes.len(), "exactly one chunk");
    (kind, &bytes[pos..])
}

/// The hash automerge gives the change chunk `bytes` (SHA-256 of type, length, body).
pub fn chunk_hash(bytes: &[u8]) -> ChangeHash {
    ChangeHash(Sha256::digest(&bytes[8..]).into())
}

/// Random instance bytes for a fresh device actor.
pub fn instance() -> [u8; INSTANCE_BYTES] {
    rand::random()
}

/// A fresh device actor of `device`.
pub fn fresh_actor(device: &str) -> ActorId {
    device_actor(device, instance())
}

/// A random 32-byte hash no change has.
pub fn random_hash() -> ChangeHash {
    ChangeHash(rand::random())
}

/// `doc` holding its genesis (and the geneses of `households`), writing as `actor`.
pub fn base(doc: &DocumentId, actor: ActorId, households: &[&str]) -> SurveyDocument {
    let mut d = SurveyDocument::create(doc.clone(), actor);
    for h in households {
        d.ensure_household(&h.parse().expect("a household id")).expect("household genesis");
    }
    d
}

/// The map of the facts, or of one household.
pub fn record(doc: &SurveyDocument, household: Option<&str>) -> ObjId {
    match household {
        Some(h) => doc.household_obj(h).expect("the household exists in the base"),
        None => match doc.automerge().get(ROOT, "facts") {
            Ok(Some((_, obj))) => obj,
            _ => panic!("a document with a genesis has facts"),
        },
    }
}

/// Commits one change to `doc` with `options`, however the edit breaks the
/// survey rules (automerge's API, not `SurveyDocument::apply`, which checks them).
pub fn commit(
    doc: &mut SurveyDocument,
    options: CommitOptions,
    edit: impl FnOnce(&mut Transaction<'_>) -> Result<(), AutomergeError>,
) -> Change {
    doc.automerge_mut()
        .transact_with::<_, _, AutomergeError, _>(|_| options, edit)
        .unwrap_or_else(|f| panic!("the edit commits: {}", f.error));
    doc.automerge().get_last_local_change().expect("a change was made")
}

/// Options with the usual stamp.
pub fn stamped() -> CommitOptions {
    CommitOptions::default().with_time(SOME_TIME)
}

/// `facts.digital_team_members = n` by `actor`, on top of the genesis.
fn facts_edit(doc: &DocumentId, actor: ActorId, n: i64, options: CommitOptions) -> Change {
    let mut d = base(doc, actor, &[]);
    let facts = record(&d, None);
    commit(&mut d, options, |tx| tx.put(&facts, "digital_team_members", n))
}

/// `change` with other dependencies, re-encoded (a new hash, a valid checksum).
pub fn with_deps(change: &Change, deps: Vec<ChangeHash>) -> Change {
    let mut expanded = change.decode();
    expanded.deps = deps;
    expanded.hash = None;
    Change::from(expanded)
}

/// A valid edit of the village facts by a fresh device actor of `device`:
/// what an honest device sends (the control for several attacks).
pub fn plain_edit(doc: &DocumentId, device: &str) -> Attack {
    Attack::carrying(&[facts_edit(doc, fresh_actor(device), 3, stamped())])
}

// ---- 1. Bloom filters automerge never writes ----

/// A ~15-byte message whose one `have` filter claims `probes` probes: the
/// server's reply tests every change it holds against it, `probes` steps and
/// a `probes × 4`-byte allocation each.
pub fn bloom_probes(probes: u32) -> Attack {
    let have = Have { last_sync: Vec::new(), bloom: bloom(1, 10, probes, &[0xff, 0x03]) };
    Attack::bare(SyncMessage { have: vec![have], ..Default::default() })
}

/// A filter with one entry but 0 bits per entry: no bits, and a division by
/// zero when automerge probes it.
pub fn bloom_zero_bits() -> Attack {
    let have = Have { last_sync: Vec::new(), bloom: bloom(1, 0, 7, &[]) };
    Attack::bare(SyncMessage { have: vec![have], ..Default::default() })
}

/// `n` `have` entries (automerge writes one).
pub fn too_many_haves(n: usize) -> Attack {
    Attack::bare(SyncMessage { have: vec![Have::default(); n], ..Default::default() })
}

// ---- 2. Change data that inflates ----

/// A compressed change chunk (type 2) that inflates to `inflated_bytes`: a
/// valid change by the device, followed by zeros (automerge keeps a change's
/// trailing bytes as "extra bytes"), with the checksum of the inflated
/// change, so only its size is wrong. Built by streaming, never holding the
/// inflated bytes.
pub fn inflation_bomb(doc: &DocumentId, device: &str, inflated_bytes: usize) -> Attack {
    let change = facts_edit(doc, fresh_actor(device), 4, stamped());
    let (_, body) = chunk_body(change.raw_bytes());
    let total = inflated_bytes.max(body.len());
    let mut span_head = vec![1u8];
    uleb(&mut span_head, total as u64);
    let mut sha = Sha256::new();
    sha.update(&span_head);
    sha.update(body);
    let mut deflate = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    deflate.write_all(body).expect("in memory");
    let zeros = vec![0u8; 1 << 20];
    let mut left = total - body.len();
    while left > 0 {
        let n = left.min(zeros.len());
        sha.update(&zeros[..n]);
        deflate.write_all(&zeros[..n]).expect("in memory");
        left -= n;
    }
    let compressed = deflate.finish().expect("in memory");
    let digest: [u8; 32] = sha.finalize().into();
    let mut chunk = CHUNK_MAGIC.to_vec();
    chunk.extend_from_slice(&digest[..4]);
    chunk.push(2);
    uleb(&mut chunk, compressed.len() as u64);
    chunk.extend_from_slice(&compressed);
    let hash = ChangeHash(digest);
    Attack {
        message: SyncMessage { heads: vec![hash], changes: vec![chunk], ..Default::default() }.encode(),
        hashes: vec![hash.to_string()],
        actors: vec![change.actor_id().to_hex_string()],
    }
}

// ---- 3. Squatting derived actors ----

/// A harmless facts edit made under the actor of household `household`'s
/// genesis, with sequence number 1: the household's real genesis, made
/// later by any honest device, would then clash with it.
pub fn squat_household(doc: &DocumentId, household: &str) -> Attack {
    Attack::carrying(&[facts_edit(doc, household_actor(doc, household), 1, stamped())])
}

/// A second change (sequence number 2) under the document's genesis actor.
pub fn squat_genesis(doc: &DocumentId) -> Attack {
    let change = facts_edit(doc, genesis_actor(doc), 2, stamped());
    assert_eq!(change.seq(), 2);
    Attack::carrying(&[change])
}

// ---- 4. Changes that wait for a dependency ----

/// An edit of household `household` (`members = 7`) by a fresh device actor
/// of `device`, sent without the household's genesis it depends on: it
/// waits until someone creates that household.
pub fn edit_depending_on(doc: &DocumentId, device: &str, household: &str) -> Attack {
    waiting_edit(doc, device, household, ScalarValue::Int(7))
}

/// Like [`edit_depending_on`], but the edit breaks a type rule (`members` is text).
pub fn rule_break_depending_on(doc: &DocumentId, device: &str, household: &str) -> Attack {
    waiting_edit(doc, device, household, ScalarValue::Str("many".into()))
}

fn waiting_edit(doc: &DocumentId, device: &str, household: &str, members: ScalarValue) -> Attack {
    let mut d = base(doc, fresh_actor(device), &[household]);
    let obj = record(&d, Some(household));
    let change = commit(&mut d, stamped(), |tx| tx.put(&obj, "members", members));
    let genesis = sync_core::survey::household_genesis_change(doc, household).hash();
    assert_eq!(change.deps(), [genesis], "it depends on the household genesis only");
    Attack::carrying(&[change])
}

/// `n` changes by one fresh device actor of `device` (sequence 1…n), each
/// depending on a random hash that no change has: they can never apply.
pub fn dependency_less(doc: &DocumentId, device: &str, n: usize) -> Attack {
    let mut d = base(doc, fresh_actor(device), &[]);
    let facts = record(&d, None);
    let changes: Vec<Change> = (0..n)
        .map(|i| {
            let change = commit(&mut d, stamped(), |tx| tx.put(&facts, "digital_team_members", i as i64));
            with_deps(&change, vec![random_hash()])
        })
        .collect();
    Attack::carrying(&changes)
}

// ---- 5. A fresh actor in a refused message ----

/// A valid facts edit by a fresh device actor, then (in the same message) a
/// change by a second fresh device actor that writes text into a count.
pub fn fresh_actor_then_rule_break(doc: &DocumentId, device: &str) -> Attack {
    let mut d = base(doc, fresh_actor(device), &[]);
    let facts = record(&d, None);
    let valid = commit(&mut d, stamped(), |tx| tx.put(&facts, "digital_team_members", 5));
    d.automerge_mut().set_actor(fresh_actor(device));
    let broken = commit(&mut d, stamped(), |tx| tx.put(&facts, "digital_team_members", "lots"));
    Attack::carrying(&[valid, broken])
}

// ---- 6. Many actors ----

/// `n` facts edits, each by a different fresh actor: device actors of
/// `device` when given, else random 16-byte actors of no device.
pub fn many_actors(doc: &DocumentId, device: Option<&str>, n: usize) -> Attack {
    let changes: Vec<Change> = (0..n)
        .map(|i| {
            let actor = match device {
                Some(device) => fresh_actor(device),
                None => ActorId::from(rand::random::<[u8; 16]>()),
            };
            facts_edit(doc, actor, i as i64, stamped())
        })
        .collect();
    Attack::carrying(&changes)
}

// ---- 7. A counter increment moved onto a plain count ----

/// The household counter and the household count of the same name length:
/// patching one name into the other keeps every length in the change.
pub const COUNTER_FIELD: &str = "qr_codes_issued";
/// See [`COUNTER_FIELD`].
pub const COUNT_FIELD: &str = "members_15_plus";

/// A household's genesis and an increment of its counter whose key bytes
/// are patched to a plain count field (checksum recomputed, so the chunk
/// parses): an increment whose predecessor is an op of another key.
pub fn counter_key_patched(doc: &DocumentId, device: &str) -> Attack {
    const HOUSEHOLD: &str = "hh-counter";
    let mut d = base(doc, fresh_actor(device), &[HOUSEHOLD]);
    let obj = record(&d, Some(HOUSEHOLD));
    let inc = commit(&mut d, stamped(), |tx| tx.increment(&obj, COUNTER_FIELD, 2));
    let (kind, body) = chunk_body(inc.raw_bytes());
    let at = body
        .windows(COUNTER_FIELD.len())
        .position(|w| w == COUNTER_FIELD.as_bytes())
        .expect("the key is in the change");
    let mut body = body.to_vec();
    body[at..at + COUNT_FIELD.len()].copy_from_slice(COUNT_FIELD.as_bytes());
    let patched = chunk(kind, &body);
    let genesis = sync_core::survey::household_genesis_change(doc, HOUSEHOLD);
    let hashes = [genesis.hash(), chunk_hash(&patched)];
    Attack {
        message: SyncMessage {
            heads: vec![hashes[1]],
            changes: vec![genesis.raw_bytes().to_vec(), patched],
            ..Default::default()
        }
        .encode(),
        hashes: hashes.iter().map(ToString::to_string).collect(),
        actors: vec![inc.actor_id().to_hex_string()],
    }
}

// ---- 8. A wrong checksum on a change that waits ----

/// A facts edit by a fresh device actor whose dependency is a random hash
/// and whose checksum is wrong.
pub fn bad_checksum_missing_dep(doc: &DocumentId, device: &str) -> Attack {
    let change = with_deps(&facts_edit(doc, fresh_actor(device), 6, stamped()), vec![random_hash()]);
    let mut bytes = change.raw_bytes().to_vec();
    for b in &mut bytes[4..8] {
        *b ^= 0xa5;
    }
    let hash = chunk_hash(&bytes);
    Attack {
        message: SyncMessage { heads: vec![hash], changes: vec![bytes], ..Default::default() }.encode(),
        hashes: vec![hash.to_string()],
        actors: vec![change.actor_id().to_hex_string()],
    }
}

// ---- 9. Commit messages and timestamps ----

/// A valid facts edit whose commit message is `bytes` bytes long.
pub fn huge_commit_message(doc: &DocumentId, device: &str, bytes: usize) -> Attack {
    let options = stamped().with_message("x".repeat(bytes));
    Attack::carrying(&[facts_edit(doc, fresh_actor(device), 8, options)])
}

/// A valid facts edit stamped `ms` (ms since 1970; may be negative).
pub fn timestamp(doc: &DocumentId, device: &str, ms: i64) -> Attack {
    Attack::carrying(&[facts_edit(doc, fresh_actor(device), 9, CommitOptions::default().with_time(ms))])
}

/// 2100-01-01T00:00:00Z in ms since 1970.
pub const YEAR_2100_MS: i64 = 4_102_444_800_000;

/// A survey round no registry has.
pub const UNKNOWN_ROUND: &str = "2099-9";

/// The village document of `place` in [`UNKNOWN_ROUND`], with its genesis
/// and an edit: a document the server must not create.
pub fn in_unknown_round(place: &str, device: &str) -> (DocumentId, Attack) {
    let doc: DocumentId = format!("village:{place}:{UNKNOWN_ROUND}").parse().expect("a well-formed id");
    let genesis = sync_core::survey::genesis_change(&doc);
    let edit = facts_edit(&doc, fresh_actor(device), 1, stamped());
    (doc, Attack::carrying(&[genesis, edit]))
}

// ---- 10. Another device's change ----

/// A change by device `victim`'s own device actor, as captured on the wire;
/// the hostile device uploads it with its own token.
pub fn replay(doc: &DocumentId, victim: &str) -> Attack {
    plain_edit(doc, victim)
}

// ---- Requests ----

/// The body of one sync round: `(document, message)` entries, messages base64'd.
pub fn request_body(exchange: &str, round: u32, documents: &[(&DocumentId, Option<&[u8]>)]) -> Vec<u8> {
    let documents: Vec<serde_json::Value> = documents
        .iter()
        .map(|(d, m)| serde_json::json!({"document": d.to_string(), "message": m.map(|m| B64.encode(m))}))
        .collect();
    serde_json::json!({"exchange": exchange, "round": round, "documents": documents}).to_string().into_bytes()
}

/// A new exchange id (`a-z 0-9 -`).
pub fn exchange_id(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sync_core::automerge::sync::Message;

    fn doc() -> DocumentId {
        "village:nhu-co-01:2024-1".parse().unwrap()
    }

    /// Every message decodes and re-encodes to itself, so a server sees
    /// exactly the attack and not a framing error.
    #[test]
    fn every_message_is_a_canonical_sync_message() {
        let d = doc();
        let attacks = [
            bloom_probes(1 << 27),
            bloom_zero_bits(),
            too_many_haves(3000),
            inflation_bomb(&d, "dev-1", 1 << 20),
            squat_household(&d, "hh-not-yet"),
            squat_genesis(&d),
            edit_depending_on(&d, "dev-1", "hh-x"),
            rule_break_depending_on(&d, "dev-1", "hh-x"),
            dependency_less(&d, "dev-1", 3),
            fresh_actor_then_rule_break(&d, "dev-1"),
            many_actors(&d, Some("dev-1"), 3),
            many_actors(&d, None, 3),
            counter_key_patched(&d, "dev-1"),
            bad_checksum_missing_dep(&d, "dev-1"),
            huge_commit_message(&d, "dev-1", 4096),
            timestamp(&d, "dev-1", -86_400_000),
            in_unknown_round("nhu-co-03", "dev-1").1,
            replay(&d, "dev-2"),
        ];
        for (i, a) in attacks.iter().enumerate() {
            let m = Message::decode(&a.message).unwrap_or_else(|e| panic!("attack {i}: {e}"));
            assert_eq!(m.encode(), a.message, "attack {i} re-encodes to itself");
        }
        assert!(bloom_probes(1 << 27).message.len() <= 16);
    }

    #[test]
    fn surgery_keeps_chunks_parsing_and_hashes_right() {
        let d = doc();
        let m = Message::decode(&counter_key_patched(&d, "dev-1").message).unwrap();
        let patched = m.changes.iter().nth(1).unwrap();
        let change = Change::try_from(patched).expect("the patched chunk parses");
        assert_eq!(change.hash(), chunk_hash(patched));
        let bomb = inflation_bomb(&d, "dev-1", 1 << 20);
        let m = Message::decode(&bomb.message).unwrap();
        let chunk = m.changes.iter().next().unwrap();
        assert_eq!(chunk[8], 2, "a compressed chunk");
        let change = Change::try_from(chunk).expect("the bomb parses");
        assert!(change.extra_bytes().len() > 1_000_000);
        assert_eq!(change.hash().to_string(), bomb.hashes[0]);
        let waiting = dependency_less(&d, "dev-1", 2);
        assert_eq!(waiting.hashes.len(), 2);
        assert_eq!(waiting.actors.len(), 1);
    }
}
