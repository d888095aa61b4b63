//! A peer's sync message, checked byte by byte before automerge sees it.
//!
//! Automerge trusts its peer: it inflates compressed chunks without a cap,
//! probes Bloom filters as often as the filter says, and queues changes it
//! cannot apply yet without a bound. On the hub a peer is a phone that may be
//! lost, stolen or broken, so everything automerge would do in proportion to
//! a number *inside* the message is bounded here first, in proportion to the
//! message's size and [`InputLimits`]:
//!
//! - the message must re-encode to exactly the bytes that arrived;
//! - at most one `have` entry, whose Bloom filter has automerge's own
//!   parameters (10 bits per entry, 7 probes), so probing costs what the
//!   filter's bytes say; every hash list in order with no hash twice, so a
//!   reply is never larger than the document;
//! - change data is a run of whole chunks; each change chunk's checksum is
//!   verified; compressed chunks and the deflated columns of document chunks
//!   are inflated here, within [`InputLimits::max_inflated_bytes`] for the
//!   whole message; bundles are not accepted;
//! - each change's commit message and extra bytes are bounded.
//!
//! What passes is an [`Inbound`]: the decoded message and the changes it
//! offers, uncompressed, ready for the sync session to sort into those that
//! apply now and those that wait.

use std::io::Read;

use automerge::sync::Message;
use automerge::{Automerge, Change};
use sha2::{Digest, Sha256};

use crate::sync::RefusalCode;

/// Bounds on what one peer's input may cost the hub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputLimits {
    /// Change data of one message, once inflated (compressed chunks and
    /// deflated document columns), at most this many bytes.
    pub max_inflated_bytes: usize,
    /// Changes of one peer waiting for a dependency in one document.
    pub max_waiting_per_document: usize,
    /// Changes of one device waiting for a dependency, over all its documents
    /// and exchanges (the caller adds them up).
    pub max_waiting_per_device: usize,
    /// Distinct actor ids among the changes one message adds.
    pub max_new_actors_per_message: usize,
    /// One change, in bytes (compressed or not, and once inflated); a survey
    /// edit is a few hundred bytes.
    pub max_change_bytes: usize,
    /// A change's commit message, in bytes.
    pub max_change_message_bytes: usize,
    /// A change's extra bytes (reserved by automerge for future fields).
    pub max_change_extra_bytes: usize,
}

impl Default for InputLimits {
    fn default() -> Self {
        Self {
            max_inflated_bytes: 8 * 1024 * 1024,
            max_waiting_per_document: 1024,
            max_waiting_per_device: 4096,
            max_new_actors_per_message: 4,
            max_change_bytes: 256 * 1024,
            max_change_message_bytes: 1024,
            max_change_extra_bytes: 256,
        }
    }
}

/// Bits per entry and probes of every Bloom filter automerge writes.
const BLOOM_BITS_PER_ENTRY: u64 = 10;
const BLOOM_PROBES: u64 = 7;
/// Automerge storage chunks start with these bytes.
const CHUNK_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
/// Chunk types.
const DOCUMENT: u8 = 0;
const CHANGE: u8 = 1;
const COMPRESSED: u8 = 2;
/// Bit of a column specification saying the column is deflated.
const COLUMN_DEFLATE: u64 = 0b1000;

/// Why a message did not pass, before it is tied to a document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputError {
    /// Kind of refusal.
    pub code: RefusalCode,
    /// For a person.
    pub message: String,
}

fn fail<T>(code: RefusalCode, message: impl Into<String>) -> Result<T, InputError> {
    Err(InputError { code, message: message.into() })
}

/// A message that passed: its decoded form and the changes it offers.
#[derive(Debug)]
pub struct Inbound {
    /// The decoded message (its change data still as sent).
    pub message: Message,
    /// Every change the message offers, uncompressed, in message order.
    pub changes: Vec<Change>,
}

/// Checks one sync message as received from an untrusted peer.
pub fn check_message(bytes: &[u8], limits: &InputLimits) -> Result<Inbound, InputError> {
    let message = Message::decode(bytes).map_err(|e| InputError {
        code: RefusalCode::Undecodable,
        message: format!("not an automerge sync message: {e}"),
    })?;
    check_lists(&message)?;
    // Oversized changes are refused before anything is copied again.
    for data in message.changes.iter() {
        for chunk in split_chunks(data)? {
            if matches!(chunk.kind, CHANGE | COMPRESSED) && chunk.body.len() > limits.max_change_bytes {
                return fail(
                    RefusalCode::TooLarge,
                    format!(
                        "a change of {} bytes; at most {} are accepted",
                        chunk.body.len(),
                        limits.max_change_bytes
                    ),
                );
            }
        }
    }
    let reencoded = contained(|| Ok(message.clone().encode()))
        .map_err(|reason| InputError { code: RefusalCode::Undecodable, message: reason })?;
    if reencoded != bytes {
        return fail(
            RefusalCode::TrailingBytes,
            format!(
                "the sync message is {} bytes but {} bytes were sent; the rest belongs to nothing",
                reencoded.len(),
                bytes.len()
            ),
        );
    }
    check_filters(&message)?;
    let mut budget = limits.max_inflated_bytes;
    let mut changes = Vec::new();
    for (i, data) in message.changes.iter().enumerate() {
        let found = offered_changes_within(data, &mut budget, limits.max_change_bytes).map_err(|mut e| {
            e.message = format!("change data {i}: {}", e.message);
            e
        })?;
        changes.extend(found);
    }
    for change in &changes {
        check_metadata(change, limits)?;
    }
    Ok(Inbound { message, changes })
}

/// Every hash list sorted with no hash twice, as automerge writes them (a
/// need repeated n times would make the reply carry the same change n
/// times; automerge's own encoder assumes the order).
fn check_lists(message: &Message) -> Result<(), InputError> {
    let lists = [("heads", &message.heads), ("need", &message.need)]
        .into_iter()
        .chain(message.have.iter().map(|h| ("have.last_sync", &h.last_sync)));
    for (what, list) in lists {
        if let Some(pair) = list.windows(2).find(|w| w[0] >= w[1]) {
            return fail(
                RefusalCode::BadFilter,
                format!(
                    "`{what}` lists {} after {}; automerge lists each hash once, in order",
                    pair[1], pair[0]
                ),
            );
        }
    }
    Ok(())
}

/// At most one `have`, each filter with automerge's parameters.
fn check_filters(message: &Message) -> Result<(), InputError> {
    if message.have.len() > 1 {
        return fail(
            RefusalCode::BadFilter,
            format!("the message has {} `have` entries; automerge sends at most one", message.have.len()),
        );
    }
    for have in &message.have {
        let bytes = have.bloom.to_bytes();
        if bytes.is_empty() {
            continue;
        }
        let mut at = 0;
        let entries = read_uleb(&bytes, &mut at);
        let bits = read_uleb(&bytes, &mut at);
        let probes = read_uleb(&bytes, &mut at);
        if (bits, probes) != (Some(BLOOM_BITS_PER_ENTRY), Some(BLOOM_PROBES)) || entries.is_none() {
            return fail(
                RefusalCode::BadFilter,
                format!(
                    "the `have` Bloom filter has {} bits per entry and {} probes; only automerge's {BLOOM_BITS_PER_ENTRY} and {BLOOM_PROBES} are accepted",
                    bits.map_or("?".into(), |b| b.to_string()),
                    probes.map_or("?".into(), |p| p.to_string()),
                ),
            );
        }
    }
    Ok(())
}

/// Reads an unsigned LEB128 number of at most 64 bits at `at`, moving it on;
/// `None` when the bytes end first or the number is longer.
pub fn read_uleb(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let (mut value, mut shift) = (0u64, 0u32);
    loop {
        let b = *bytes.get(*at)?;
        *at += 1;
        if shift > 63 || (shift == 63 && b > 1) {
            return None;
        }
        value |= u64::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
}

/// Appends `value` as unsigned LEB128, the way automerge writes lengths and counts.
pub fn write_uleb(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// One chunk of change data: its type, the bytes of its header after the
/// checksum up to the body, and the whole chunk.
struct Chunk<'a> {
    kind: u8,
    checksum: [u8; 4],
    body: &'a [u8],
}

/// Splits a run of concatenated automerge chunks into whole chunks, refusing
/// anything that is not exactly a sequence of chunks (automerge's own
/// `load_incremental` would drop such bytes silently).
fn split_chunks(mut bytes: &[u8]) -> Result<Vec<Chunk<'_>>, InputError> {
    let mut chunks = Vec::new();
    while !bytes.is_empty() {
        let n = chunks.len();
        if bytes.len() < 9 || bytes[..4] != CHUNK_MAGIC {
            return fail(
                RefusalCode::BadChange,
                format!("bytes that are not an automerge chunk at chunk {n}"),
            );
        }
        let mut at = 9;
        let len = read_uleb(bytes, &mut at).ok_or_else(|| InputError {
            code: RefusalCode::BadChange,
            message: format!("truncated chunk header at chunk {n}"),
        })?;
        let end = usize::try_from(len).ok().and_then(|l| at.checked_add(l)).filter(|&e| e <= bytes.len());
        let Some(end) = end else {
            return fail(RefusalCode::BadChange, format!("truncated chunk at chunk {n}"));
        };
        let checksum = [bytes[4], bytes[5], bytes[6], bytes[7]];
        chunks.push(Chunk { kind: bytes[8], checksum, body: &bytes[at..end] });
        bytes = &bytes[end..];
    }
    Ok(chunks)
}

/// Inflates raw DEFLATE data, failing past `budget` bytes (which it spends)
/// or past `max` bytes for this one piece; never holds more than that.
fn inflate(data: &[u8], budget: &mut usize, max: usize) -> Result<Vec<u8>, InputError> {
    let cap = (*budget).min(max);
    let mut out = Vec::new();
    flate2::read::DeflateDecoder::new(data).take(cap as u64 + 1).read_to_end(&mut out).map_err(|e| {
        InputError { code: RefusalCode::BadChange, message: format!("compressed data does not inflate: {e}") }
    })?;
    if out.len() > max {
        return fail(
            RefusalCode::TooLarge,
            format!("a change inflates past {max} bytes, the limit for one change"),
        );
    }
    spend(budget, out.len())?;
    Ok(out)
}

/// Spends the inflated size of raw DEFLATE data from `budget` without
/// keeping it (a document's deflated columns, which automerge inflates itself).
fn inflated_size(data: &[u8], budget: &mut usize) -> Result<(), InputError> {
    let cap = *budget as u64 + 1;
    let n = std::io::copy(&mut flate2::read::DeflateDecoder::new(data).take(cap), &mut std::io::sink())
        .map_err(|e| InputError {
            code: RefusalCode::BadChange,
            message: format!("compressed data does not inflate: {e}"),
        })?;
    spend(budget, usize::try_from(n).unwrap_or(usize::MAX))
}

fn spend(budget: &mut usize, n: usize) -> Result<(), InputError> {
    match budget.checked_sub(n) {
        Some(left) => {
            *budget = left;
            Ok(())
        }
        None => fail(RefusalCode::TooLarge, "the change data inflates past the limit for one message"),
    }
}

/// An uncompressed change chunk with `body`, verified against `checksum`.
fn change_chunk(checksum: [u8; 4], body: &[u8]) -> Result<Vec<u8>, InputError> {
    let mut chunk = Vec::with_capacity(body.len() + 20);
    chunk.extend_from_slice(&CHUNK_MAGIC);
    chunk.extend_from_slice(&checksum);
    chunk.push(CHANGE);
    write_uleb(&mut chunk, body.len() as u64);
    chunk.extend_from_slice(body);
    let hash = Sha256::digest(&chunk[8..]);
    if hash[..4] != checksum {
        return fail(RefusalCode::BadChange, "a change's checksum does not match its bytes (it is damaged)");
    }
    Ok(chunk)
}

/// Inflated size of a document chunk's columns, spent from `budget`
/// before automerge inflates them itself.
fn check_document_columns(body: &[u8], budget: &mut usize) -> Result<(), InputError> {
    let bad = || InputError {
        code: RefusalCode::BadChange,
        message: "a document chunk's header does not parse".into(),
    };
    let mut at = 0;
    let actors = read_uleb(body, &mut at).ok_or_else(bad)?;
    for _ in 0..actors {
        let len = read_uleb(body, &mut at).ok_or_else(bad)?;
        at = usize::try_from(len)
            .ok()
            .and_then(|l| at.checked_add(l))
            .filter(|&e| e <= body.len())
            .ok_or_else(bad)?;
    }
    let heads = read_uleb(body, &mut at).ok_or_else(bad)?;
    at = usize::try_from(heads)
        .ok()
        .and_then(|h| h.checked_mul(32))
        .and_then(|l| at.checked_add(l))
        .filter(|&e| e <= body.len())
        .ok_or_else(bad)?;
    let mut columns = Vec::new();
    for _ in 0..2 {
        let count = read_uleb(body, &mut at).ok_or_else(bad)?;
        for _ in 0..count {
            let spec = read_uleb(body, &mut at).ok_or_else(bad)?;
            let len = read_uleb(body, &mut at).ok_or_else(bad)?;
            columns.push((spec, usize::try_from(len).map_err(|_| bad())?));
            if columns.len() > body.len() {
                return Err(bad());
            }
        }
    }
    for (spec, len) in columns {
        let end = at.checked_add(len).filter(|&e| e <= body.len()).ok_or_else(bad)?;
        if spec & COLUMN_DEFLATE != 0 {
            inflated_size(&body[at..end], budget)?;
        } else {
            spend(budget, len)?;
        }
        at = end;
    }
    Ok(())
}

/// The changes in one element of a sync message's change data, inflating
/// within `budget` and checking that every byte belongs to a chunk that
/// parses whole. Automerge panics on some damaged bytes (a fuzzing find),
/// so its parsers run contained.
fn offered_changes_within(
    data: &[u8],
    budget: &mut usize,
    max_change: usize,
) -> Result<Vec<Change>, InputError> {
    let mut out = Vec::new();
    for chunk in split_chunks(data)? {
        let parsed = match chunk.kind {
            CHANGE => {
                // (Its size was checked against `max_change` in `check_message`.)
                spend(budget, chunk.body.len())?;
                let bytes = change_chunk(chunk.checksum, chunk.body)?;
                contained(|| Change::try_from(bytes.as_slice()).map(|c| vec![c]).map_err(|e| e.to_string()))
            }
            COMPRESSED => {
                let body = inflate(chunk.body, budget, max_change)?;
                let bytes = change_chunk(chunk.checksum, &body)?;
                contained(|| Change::try_from(bytes.as_slice()).map(|c| vec![c]).map_err(|e| e.to_string()))
            }
            DOCUMENT => {
                check_document_columns(chunk.body, budget)?;
                let mut whole = Vec::with_capacity(chunk.body.len() + 20);
                whole.extend_from_slice(&CHUNK_MAGIC);
                whole.extend_from_slice(&chunk.checksum);
                whole.push(DOCUMENT);
                write_uleb(&mut whole, chunk.body.len() as u64);
                whole.extend_from_slice(chunk.body);
                contained(|| Automerge::load(&whole).map(|d| d.get_changes(&[])).map_err(|e| e.to_string()))
            }
            3 => {
                return fail(
                    RefusalCode::BadChange,
                    "bundles are not accepted in sync messages; send changes",
                )
            }
            other => return fail(RefusalCode::BadChange, format!("unknown chunk type {other}")),
        };
        out.extend(parsed.map_err(|reason| InputError {
            code: RefusalCode::BadChange,
            message: format!("a chunk does not parse: {reason}"),
        })?);
    }
    Ok(out)
}

/// A change's commit message and extra bytes within their limits.
fn check_metadata(change: &Change, limits: &InputLimits) -> Result<(), InputError> {
    let message = change.message().map_or(0, |m| m.len());
    if message > limits.max_change_message_bytes {
        return fail(
            RefusalCode::TooLarge,
            format!(
                "change {} has a commit message of {message} bytes; at most {} are accepted",
                change.hash(),
                limits.max_change_message_bytes
            ),
        );
    }
    let extra = change.extra_bytes().len();
    if extra > limits.max_change_extra_bytes {
        return fail(
            RefusalCode::TooLarge,
            format!(
                "change {} carries {extra} extra bytes; at most {} are accepted",
                change.hash(),
                limits.max_change_extra_bytes
            ),
        );
    }
    Ok(())
}

/// Runs automerge on untrusted input, turning a panic inside it (seen with
/// damaged bytes while fuzzing) into an error.
pub(crate) fn contained<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err("automerge failed on these bytes (they are damaged)".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uleb_round_trips_and_refuses_overlong_numbers() {
        for n in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut v = Vec::new();
            write_uleb(&mut v, n);
            assert_eq!(read_uleb(&v, &mut 0), Some(n));
        }
        assert_eq!(read_uleb(&[0xff; 11], &mut 0), None);
        assert_eq!(read_uleb(&[0x80], &mut 0), None);
    }

    #[test]
    fn inflating_stops_at_the_budget() {
        let zeros = vec![0u8; 1 << 20];
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut enc, &zeros).unwrap();
        let small = enc.finish().unwrap();
        let mut budget = 1000;
        assert_eq!(inflate(&small, &mut budget, usize::MAX).unwrap_err().code, RefusalCode::TooLarge);
        let mut budget = 2 << 20;
        assert_eq!(inflate(&small, &mut budget, 1 << 20).unwrap().len(), 1 << 20);
        let mut budget = 2 << 20;
        assert_eq!(inflate(&small, &mut budget, 1000).unwrap_err().code, RefusalCode::TooLarge);
        let mut budget = 2 << 20;
        inflated_size(&small, &mut budget).unwrap();
        assert_eq!(budget, 1 << 20);
        assert_eq!(budget, 1 << 20);
    }
}
