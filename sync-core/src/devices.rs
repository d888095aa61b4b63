//! Device management on any [`Store`]: add, revoke and rotate devices,
//! enroll one with its one-time code, and make administrator tokens. The
//! server's admin API and `thonsync` (directly on a database file) run these
//! same steps, each written to the audit log.
//!
//! **Invariant: each step is one unit of work** ([`Store::unit_of_work`]):
//! its reads and writes (the code checked and spent, the device and its
//! credentials written, the audit line) land all together or not at all,
//! and a step run at the same time by another process on the same database
//! (an administrator's command beside the server) never interleaves with
//! it: a revoke cannot be undone by an enrollment it raced, and a one-time
//! code enrolls one device only.
//!
//! Like the rest of this crate, nothing here reads a clock or randomness:
//! every step takes `now` and the random bytes its new ids and secrets are
//! made from. Secrets are returned once and stored only as hashes
//! ([`hash_secret`]).

use crate::access::{
    hash_secret, hex, new_admin_token, new_device_token, new_enrollment_code, AuditEvent, CredentialKind,
    DeviceRecord, CODE_LEN, CODE_LIFETIME_MS,
};
use crate::registry::{PlaceKind, Registry};
use crate::store::{Store, StoreError};

/// Random bytes a step makes its new ids and secrets from, drawn by the
/// caller (e.g. `rand::random()`).
pub type Random = [u8; 32];

/// Why a device-management step failed.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// A device needs a name a person recognises.
    #[error("a device needs a name (the surveyor or the phone)")]
    NoName,
    /// A device needs at least one commune.
    #[error("a device needs at least one commune")]
    NoCommunes,
    /// A commune that is not a commune of the registry.
    #[error("{0:?} is not a commune in the registry")]
    UnknownCommune(String),
    /// No such device.
    #[error("no device {0:?}")]
    UnknownDevice(String),
    /// The device is revoked; add a new one instead.
    #[error("device {0:?} is revoked; add a new device instead")]
    Revoked(String),
    /// The enrollment code is unknown, used or expired.
    #[error("the enrollment code is unknown, already used or expired; ask the administrator for a new one")]
    InvalidCode,
    /// The code is for a device that may not sync the commune asked for;
    /// the code is not spent.
    #[error("this device may sync {}, not {commune:?}; the code is still valid", allowed.join(", "))]
    CommuneNotAllowed {
        /// The commune asked for.
        commune: String,
        /// The device's communes.
        allowed: Vec<String>,
    },
    /// The code is for another device than the one re-enrolling; the code is
    /// not spent.
    #[error("this code is for device {code_for:?}, not {device:?}; the code is still valid")]
    OtherDevice {
        /// The device re-enrolling.
        device: String,
        /// The device the code was issued for.
        code_for: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an enrolling device asks to be checked before its code is spent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnrollCheck {
    /// The commune the device will survey: must be one of the device's.
    pub commune: Option<String>,
    /// The device id a folder already holds (enrolling again after
    /// `rotate`): the code must be that device's.
    pub device: Option<String>,
}

/// Runs `step` as one unit of work on `store`: a refusal or a store error
/// rolls back whatever it wrote. `step` may be run more than once (a backend
/// retries a unit of work that conflicted), each run from scratch.
fn in_unit<S: Store + ?Sized, T>(
    store: &mut S,
    mut step: impl FnMut(&mut dyn Store) -> Result<T, AccessError>,
) -> Result<T, AccessError> {
    let mut outcome: Option<Result<T, AccessError>> = None;
    let ran = store.unit_of_work(&mut |s| {
        outcome = None;
        match step(s) {
            Ok(done) => {
                outcome = Some(Ok(done));
                Ok(())
            }
            Err(AccessError::Store(e)) => Err(e),
            Err(refused) => {
                outcome = Some(Err(refused));
                // Any error rolls the unit back; the refusal is returned below.
                Err(StoreError::Backend("the step was refused".into()))
            }
        }
    });
    match (ran, outcome) {
        (_, Some(outcome)) => outcome,
        (Err(e), None) => Err(e.into()),
        (Ok(()), None) => Err(StoreError::Backend("the unit of work did not run its step".into()).into()),
    }
}

fn audit<S: Store + ?Sized>(
    store: &mut S,
    now: i64,
    who: &str,
    action: &str,
    subject: &str,
    detail: String,
) -> Result<(), StoreError> {
    store.append_audit(&AuditEvent {
        at: now,
        who: who.to_owned(),
        action: action.to_owned(),
        subject: subject.to_owned(),
        detail,
    })
}

/// An enrollment code from the first [`CODE_LEN`] bytes of `random`.
fn code_from(random: &Random) -> String {
    let mut bytes = [0u8; CODE_LEN];
    bytes.copy_from_slice(&random[..CODE_LEN]);
    new_enrollment_code(bytes)
}

/// Gives `id` a new one-time enrollment code, valid for [`CODE_LIFETIME_MS`].
fn issue_code<S: Store + ?Sized>(
    store: &mut S,
    id: &str,
    random: &Random,
    now: i64,
) -> Result<String, StoreError> {
    let code = code_from(random);
    store.set_credential(
        id,
        CredentialKind::Enrollment,
        &hash_secret(&code),
        Some(now + CODE_LIFETIME_MS),
    )?;
    Ok(code)
}

/// Adds a device for `communes` and gives it a one-time enrollment code
/// (valid for [`CODE_LIFETIME_MS`]). `who` is the administrator, for the
/// audit log. The code is made from the first 12 bytes of `random`, the
/// device id (`dev-` and 16 hex digits) from the last 8.
pub fn add_device<S: Store + ?Sized>(
    store: &mut S,
    registry: &Registry,
    name: &str,
    communes: &[String],
    who: &str,
    now: i64,
    random: Random,
) -> Result<(DeviceRecord, String), AccessError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(AccessError::NoName);
    }
    if communes.is_empty() {
        return Err(AccessError::NoCommunes);
    }
    let mut mine: Vec<String> = Vec::new();
    for c in communes {
        if registry.get(c).map(|p| p.kind) != Some(PlaceKind::Commune) {
            return Err(AccessError::UnknownCommune(c.clone()));
        }
        if !mine.contains(c) {
            mine.push(c.clone());
        }
    }
    let id = format!("dev-{}", hex(&random[24..]));
    let device = DeviceRecord {
        id: id.clone(),
        name: name.to_owned(),
        communes: mine,
        created_at: now,
        enrolled_at: None,
        revoked_at: None,
        last_seen: None,
        app_version: None,
    };
    let code = in_unit(store, |s| {
        s.put_device(&device)?;
        let code = issue_code(s, &id, &random, now)?;
        audit(s, now, who, "device.add", &id, format!("{name} for {}", device.communes.join(", ")))?;
        Ok(code)
    })?;
    Ok((device, code))
}

/// Revokes a device: its token stops working on its next request, its
/// pending code too; what it uploaded stays.
pub fn revoke_device<S: Store + ?Sized>(
    store: &mut S,
    id: &str,
    who: &str,
    now: i64,
) -> Result<DeviceRecord, AccessError> {
    in_unit(store, |s| {
        let mut device = s.device(id)?.ok_or_else(|| AccessError::UnknownDevice(id.to_owned()))?;
        if device.revoked_at.is_none() {
            device.revoked_at = Some(now);
            s.put_device(&device)?;
        }
        s.remove_credential(id, CredentialKind::Enrollment)?;
        audit(s, now, who, "device.revoke", id, device.name.clone())?;
        Ok(device)
    })
}

/// Drops a device's token and gives it a new enrollment code (a new phone
/// for the same surveyor, or a token that may have leaked), made from the
/// first 12 bytes of `random`.
pub fn rotate_device<S: Store + ?Sized>(
    store: &mut S,
    id: &str,
    who: &str,
    now: i64,
    random: Random,
) -> Result<(DeviceRecord, String), AccessError> {
    in_unit(store, |s| {
        let device = s.device(id)?.ok_or_else(|| AccessError::UnknownDevice(id.to_owned()))?;
        if device.revoked_at.is_some() {
            return Err(AccessError::Revoked(id.to_owned()));
        }
        s.remove_credential(id, CredentialKind::DeviceToken)?;
        let code = issue_code(s, id, &random, now)?;
        audit(s, now, who, "device.rotate", id, device.name.clone())?;
        Ok((device, code))
    })
}

/// Exchanges a (normalised, see [`crate::access::parse_enrollment_code`])
/// enrollment code for a device token made from `random`: the code is
/// removed, so it works once.
pub fn enroll<S: Store + ?Sized>(
    store: &mut S,
    code: &str,
    app_version: Option<String>,
    now: i64,
    random: Random,
) -> Result<(DeviceRecord, String), AccessError> {
    enroll_checked(store, code, &EnrollCheck::default(), app_version, now, random)
}

/// [`enroll`] after checking what the device asks for ([`EnrollCheck`]): a
/// commune that is not the device's, or a code for another device, is
/// refused before the code is spent, so the surveyor can retry with it.
pub fn enroll_checked<S: Store + ?Sized>(
    store: &mut S,
    code: &str,
    check: &EnrollCheck,
    app_version: Option<String>,
    now: i64,
    random: Random,
) -> Result<(DeviceRecord, String), AccessError> {
    in_unit(store, |s| {
        let mut device = s
            .device_for_credential(CredentialKind::Enrollment, &hash_secret(code), now)?
            .ok_or(AccessError::InvalidCode)?;
        if device.revoked_at.is_some() {
            return Err(AccessError::InvalidCode);
        }
        if let Some(commune) = &check.commune {
            if !device.communes.contains(commune) {
                return Err(AccessError::CommuneNotAllowed {
                    commune: commune.clone(),
                    allowed: device.communes.clone(),
                });
            }
        }
        if let Some(id) = &check.device {
            if *id != device.id {
                return Err(AccessError::OtherDevice { device: id.clone(), code_for: device.id.clone() });
            }
        }
        s.remove_credential(&device.id, CredentialKind::Enrollment)?;
        let token = new_device_token(random);
        s.set_credential(&device.id, CredentialKind::DeviceToken, &hash_secret(&token), None)?;
        device.enrolled_at = Some(now);
        device.last_seen = Some(now);
        if app_version.is_some() {
            device.app_version = app_version.clone();
        }
        s.put_device(&device)?;
        let who = format!("device:{}", device.id);
        audit(s, now, &who, "device.enroll", &device.id, device.name.clone())?;
        Ok((device, token))
    })
}

/// Creates an administrator token named `name`, made from `random`; the
/// token is returned once.
pub fn create_admin_token<S: Store + ?Sized>(
    store: &mut S,
    name: &str,
    now: i64,
    random: Random,
) -> Result<String, StoreError> {
    let token = new_admin_token(random);
    let hash = hash_secret(&token);
    store.unit_of_work(&mut |s| {
        s.put_admin_token(name, &hash, now)?;
        audit(s, now, "server", "admin.token", name, "administrator token created".into())
    })?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{check_token, parse_enrollment_code, DEVICE_TOKEN_PREFIX};
    use crate::store::SqliteStore;

    fn random(seed: u8) -> Random {
        std::array::from_fn(|i| seed.wrapping_mul(31).wrapping_add(i as u8))
    }

    #[test]
    fn a_wrong_commune_or_another_device_does_not_spend_the_code() {
        let mut store = SqliteStore::in_memory().unwrap();
        let registry = Registry::sample_bac_kan();
        let communes = vec!["nhu-co".to_owned()];
        let (device, code) =
            add_device(&mut store, &registry, "Chị Lan", &communes, "admin:hoa", 1_000, random(1)).unwrap();
        let wrong = EnrollCheck { commune: Some("song-cau".into()), device: None };
        let refused = enroll_checked(&mut store, &code, &wrong, None, 2_000, random(2));
        assert!(matches!(refused, Err(AccessError::CommuneNotAllowed { .. })), "{refused:?}");
        let other = EnrollCheck { commune: None, device: Some("dev-0000000000000000".into()) };
        let refused = enroll_checked(&mut store, &code, &other, None, 2_000, random(2));
        assert!(matches!(refused, Err(AccessError::OtherDevice { .. })), "{refused:?}");
        let right = EnrollCheck { commune: Some("nhu-co".into()), device: Some(device.id.clone()) };
        let (enrolled, _) = enroll_checked(&mut store, &code, &right, None, 2_001, random(3)).unwrap();
        assert_eq!(enrolled.id, device.id);
    }

    #[test]
    fn a_device_is_added_enrolled_once_rotated_and_revoked() {
        let mut store = SqliteStore::in_memory().unwrap();
        let registry = Registry::sample_bac_kan();
        let communes = vec!["nhu-co".to_owned(), "nhu-co".to_owned()];
        let (device, code) =
            add_device(&mut store, &registry, " Chị Lan ", &communes, "admin:hoa", 1_000, random(1)).unwrap();
        assert_eq!((device.name.as_str(), device.communes.clone()), ("Chị Lan", vec!["nhu-co".to_owned()]));
        assert!(device.id.starts_with("dev-") && device.id.len() == 20, "{}", device.id);
        assert_eq!(parse_enrollment_code(&code).unwrap(), code);

        let (enrolled, token) = enroll(&mut store, &code, Some("1.4.0".into()), 2_000, random(2)).unwrap();
        assert_eq!((enrolled.enrolled_at, enrolled.app_version.as_deref()), (Some(2_000), Some("1.4.0")));
        assert!(check_token(&token, DEVICE_TOKEN_PREFIX, "device").is_ok());
        assert!(matches!(enroll(&mut store, &code, None, 2_001, random(3)), Err(AccessError::InvalidCode)));

        let (_, fresh) = rotate_device(&mut store, &device.id, "admin:hoa", 3_000, random(4)).unwrap();
        assert_ne!(fresh, code);
        let found = store.device_for_credential(CredentialKind::DeviceToken, &hash_secret(&token), 3_001);
        assert_eq!(found.unwrap(), None, "the old token is dropped");

        let revoked = revoke_device(&mut store, &device.id, "admin:hoa", 4_000).unwrap();
        assert_eq!(revoked.revoked_at, Some(4_000));
        assert!(matches!(enroll(&mut store, &fresh, None, 4_001, random(5)), Err(AccessError::InvalidCode)));
        assert!(matches!(
            rotate_device(&mut store, &device.id, "admin:hoa", 4_002, random(6)),
            Err(AccessError::Revoked(_))
        ));
        let actions: Vec<String> = store.audit(10).unwrap().into_iter().map(|e| e.action).collect();
        assert_eq!(actions, ["device.revoke", "device.rotate", "device.enroll", "device.add"]);
    }

    #[test]
    fn bad_requests_change_nothing() {
        let mut store = SqliteStore::in_memory().unwrap();
        let registry = Registry::sample_bac_kan();
        let nhu_co = ["nhu-co".to_owned()];
        assert!(matches!(
            add_device(&mut store, &registry, " ", &nhu_co, "a", 0, random(1)),
            Err(AccessError::NoName)
        ));
        assert!(matches!(
            add_device(&mut store, &registry, "A", &[], "a", 0, random(1)),
            Err(AccessError::NoCommunes)
        ));
        let village = ["nhu-co-01".to_owned()];
        assert!(matches!(
            add_device(&mut store, &registry, "A", &village, "a", 0, random(1)),
            Err(AccessError::UnknownCommune(c)) if c == "nhu-co-01"
        ));
        assert!(matches!(revoke_device(&mut store, "dev-0", "a", 0), Err(AccessError::UnknownDevice(_))));
        assert!(store.devices().unwrap().is_empty());
        assert!(store.audit(10).unwrap().is_empty());
    }

    #[test]
    fn administrator_tokens_are_kept_as_hashes() {
        let mut store = SqliteStore::in_memory().unwrap();
        let token = create_admin_token(&mut store, "hoa", 5, random(9)).unwrap();
        assert_eq!(store.admin_for_token(&hash_secret(&token)).unwrap().as_deref(), Some("hoa"));
        assert_eq!(store.admin_for_token(&token).unwrap(), None);
    }
}
