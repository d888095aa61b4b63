//! Who may write under which actor id.
//!
//! Automerge attributes every change to an actor id the writer picks itself,
//! so an actor id alone proves nothing. Thôn Sync gives actor ids a shape
//! that names their device, and the hub admits a change only from the device
//! its actor names:
//!
//! - **Derived actors** (16 bytes, a SHA-256 prefix of a document or
//!   household id, see [`crate::survey::genesis_actor`]) author exactly one
//!   change each: their byte-identical genesis. Anything else under them is
//!   refused, so nobody can squat a household that does not exist yet.
//! - **Device actors** are `tsd/` + device id + `/` + 8 instance bytes. A
//!   device mints a new one whenever it needs a fresh sequence (a new device
//!   folder, recovery after a refusal). Only the device it names may upload
//!   changes under it: a change captured on the wire and uploaded with
//!   another device's token is refused, and it cannot be attributed to the
//!   thief. Binding is by construction, so it needs no write and no order.
//! - **Legacy actors** (any other shape) are admitted only when the store
//!   already binds them to the uploading device (bound before device actors
//!   existed); no new one is ever bound.
//!
//! A derived actor cannot take the device shape: that would take a SHA-256
//! prefix starting with `tsd/` and naming the uploader, about 2^64 tries.

use automerge::ActorId;

use crate::ids::check_id;

/// Bytes every device actor starts with.
const PREFIX: &[u8] = b"tsd/";
/// Instance bytes after the device id: a device's actors differ only there.
pub const INSTANCE_BYTES: usize = 8;

/// The device actor for `device` with the given instance bytes (random,
/// handed in: sync-core reads no randomness).
///
/// # Panics
/// If `device` is not a valid id (device ids are checked when created).
pub fn device_actor(device: &str, instance: [u8; INSTANCE_BYTES]) -> ActorId {
    assert!(check_id("device id", device).is_ok(), "device id {device:?} is not an id");
    let mut bytes = Vec::with_capacity(PREFIX.len() + device.len() + 1 + INSTANCE_BYTES);
    bytes.extend_from_slice(PREFIX);
    bytes.extend_from_slice(device.as_bytes());
    bytes.push(b'/');
    bytes.extend_from_slice(&instance);
    ActorId::from(bytes)
}

/// The device a device actor names, or `None` for any other shape.
pub fn actor_device(actor: &ActorId) -> Option<&str> {
    let rest = actor.to_bytes().strip_prefix(PREFIX)?;
    let slash = rest.iter().position(|&b| b == b'/')?;
    let (id, tail) = rest.split_at(slash);
    if tail.len() != 1 + INSTANCE_BYTES {
        return None;
    }
    let id = std::str::from_utf8(id).ok()?;
    check_id("device id", id).ok()?;
    Some(id)
}

/// [`actor_device`] of a hex actor id, as stored in change rows.
pub fn hex_actor_device(hex: &str) -> Option<String> {
    let actor = ActorId::try_from(hex).ok()?;
    actor_device(&actor).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_actor_names_its_device_and_nothing_else_does() {
        let a = device_actor("nhu-co-03", [7, 0, b'/', 1, 2, 3, 4, 5]);
        assert_eq!(actor_device(&a), Some("nhu-co-03"));
        assert_eq!(hex_actor_device(&a.to_hex_string()).as_deref(), Some("nhu-co-03"));
        assert_eq!(actor_device(&ActorId::from([9u8; 16])), None);
        let id: crate::ids::DocumentId = "village:nhu-co-03:2024-1".parse().unwrap();
        assert_eq!(actor_device(&crate::survey::genesis_actor(&id)), None);
        assert_eq!(actor_device(&crate::survey::household_actor(&id, "hh-01")), None);
        for bad in
            [&b"tsd//12345678"[..], b"tsd/Bad/12345678", b"tsd/a/1234567", b"tsd/a/123456789", b"tsd/a"]
        {
            assert_eq!(actor_device(&ActorId::from(bad)), None, "{bad:?}");
        }
    }

    #[test]
    #[should_panic(expected = "is not an id")]
    fn a_device_actor_needs_a_valid_device_id() {
        device_actor("Not/An/Id", [0; 8]);
    }
}
