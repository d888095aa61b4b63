//! The history of a survey document, change by change: who wrote which
//! field of which record, when, and what the value was before; and the
//! heads a document had at a point in time, for reading it as it was.
//!
//! Old values are read at the change's own dependencies (`get_at` at
//! `change.deps()`), so an entry says what its author saw when writing,
//! not what happened to be stored by some other replica at that time.
//!
//! **Device clocks are not trusted blindly.** A change carries the time its
//! author's clock showed, and field phones have wrong clocks (a year of 2100,
//! a reset to 1970). Every change is kept whatever its stamp; where time
//! matters (history order, the heads at a time) the *effective time* is used:
//! the author's stamp when it is plausible, else the time this replica
//! received the change ([`effective_time`], the one definition of it).

use std::collections::{BTreeSet, HashMap};

use automerge::legacy::{Key, ObjectId, OpType};
use automerge::{Change, ChangeHash, ObjId, Prop, ReadDoc, ROOT};
use serde::{Deserialize, Serialize};

use crate::ids::DocumentId;
use crate::store::ChangeMeta;
use crate::survey::{FieldValue, SurveyDocument};

/// The earliest author's stamp taken at face value: 2020-01-01 00:00 UTC,
/// before any survey of this program. An earlier stamp is a clock that was
/// reset or never set.
pub const CLOCK_FLOOR_MS: i64 = 1_577_836_800_000;

/// How far after its receipt an author's stamp may lie and still be taken at
/// face value: one day (time zones and a clock a few hours fast are honest).
pub const CLOCK_TOLERANCE_MS: i64 = 86_400_000;

/// Whether an author's stamp cannot be right: before [`CLOCK_FLOOR_MS`], or
/// more than [`CLOCK_TOLERANCE_MS`] after `received_at` (when this replica
/// stored the change; `None` when unknown, then only the floor applies).
///
/// Genesis changes are stamped 0 on purpose; callers leave them out.
pub fn clock_suspect(stamp: i64, received_at: Option<i64>) -> bool {
    stamp < CLOCK_FLOOR_MS || received_at.is_some_and(|r| stamp > r.saturating_add(CLOCK_TOLERANCE_MS))
}

/// A change's effective time, ms since 1970: the author's stamp when it is
/// plausible ([`clock_suspect`] is false), else the time this replica
/// received it. Without a receipt time the stamp is all there is.
pub fn effective_time(stamp: i64, received_at: Option<i64>) -> i64 {
    match received_at {
        Some(r) if clock_suspect(stamp, Some(r)) => r,
        _ => stamp,
    }
}

/// When this replica stored each change of a document (`stored_at` of
/// [`ChangeMeta`]), by change hash.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Receipts(HashMap<String, i64>);

impl Receipts {
    /// From the stored change metadata (of one document or of all).
    pub fn from_meta<'a>(meta: impl IntoIterator<Item = &'a ChangeMeta>) -> Self {
        Self(meta.into_iter().map(|m| (m.hash.clone(), m.stored_at)).collect())
    }

    /// When the change with this hash was stored, if known.
    pub fn get(&self, hash: &ChangeHash) -> Option<i64> {
        self.0.get(&hash.to_string()).copied()
    }

    /// Records when a change was stored.
    pub fn insert(&mut self, hash: ChangeHash, stored_at: i64) {
        self.0.insert(hash.to_string(), stored_at);
    }
}

/// Why a list of change hashes does not name heads of a document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// Not a change hash or a prefix of one (hex digits, at least 4).
    #[error("{0:?} is not a change hash; give the hex hashes `thonsync history` shows (at least 4 digits)")]
    NotAHash(String),
    /// No change of the document has this hash or prefix.
    #[error("{document} has no change {hash:?}; `thonsync history` lists its changes")]
    Unknown {
        /// The document searched.
        document: DocumentId,
        /// The hash or prefix given.
        hash: String,
    },
    /// More than one change starts with this prefix.
    #[error("{hash:?} matches {count} changes of {document}; give more digits")]
    Ambiguous {
        /// The document searched.
        document: DocumentId,
        /// The prefix given.
        hash: String,
        /// How many changes it matches.
        count: usize,
    },
}

/// What one change did to one field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The field was given a value.
    Set,
    /// A counter was added to (the delta may be negative).
    Increment,
    /// The value was removed.
    Unset,
    /// The record was created by its deterministic genesis.
    Created,
}

/// One field touched by one change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    /// The household, or `None` for the document's facts.
    pub household: Option<String>,
    /// The field (`None` for a record's creation).
    pub field: Option<String>,
    /// What happened.
    pub action: Action,
    /// The value at the change's dependencies.
    pub old: Option<FieldValue>,
    /// The value the change wrote (for a counter: the old value plus the delta).
    pub new: Option<FieldValue>,
    /// The other concurrent values the field held at the change's
    /// dependencies besides `old` (a clash this change settled); empty when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clashing: Vec<FieldValue>,
}

/// One change of a document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Change hash, hex.
    pub change: String,
    /// The actor (replica) that made it, hex.
    pub actor: String,
    /// Its sequence number for that actor.
    pub seq: u64,
    /// The time its author's clock showed, ms since 1970 (0 for genesis changes).
    pub time: i64,
    /// When this replica stored it, ms since 1970, if known.
    pub received_at: Option<i64>,
    /// Whether the author's clock cannot be right (see [`clock_suspect`]);
    /// never for genesis changes.
    pub clock_suspect: bool,
    /// Whether this is a deterministic genesis change (document or household creation).
    pub genesis: bool,
    /// The hashes it depends on, hex.
    pub deps: Vec<String>,
    /// The fields it touched, in op order.
    pub fields: Vec<FieldChange>,
}

impl HistoryEntry {
    /// The time the change counts at: the author's stamp, or the receipt
    /// time when the stamp is suspect ([`effective_time`]).
    pub fn effective_time(&self) -> i64 {
        if self.genesis {
            self.time
        } else {
            effective_time(self.time, self.received_at)
        }
    }

    /// Whether the change touched `household`.
    pub fn touches_household(&self, household: &str) -> bool {
        self.fields.iter().any(|f| f.household.as_deref() == Some(household))
    }
}

/// Where an object sits in the survey layout.
#[derive(Clone)]
enum Record {
    Facts,
    Households,
    Household(String),
    Other,
}

fn locate(doc: &automerge::Automerge, obj: &ObjId) -> Record {
    if *obj == ROOT {
        return Record::Other;
    }
    let Ok(parents) = doc.parents(obj) else { return Record::Other };
    let path: Vec<_> = parents.collect();
    let key = |i: usize| match path.get(i).map(|p| &p.prop) {
        Some(Prop::Map(k)) => Some(k.clone()),
        _ => None,
    };
    match (path.len(), key(0).as_deref(), key(1).as_deref()) {
        (1, Some("facts"), _) => Record::Facts,
        (1, Some("households"), _) => Record::Households,
        (2, Some(hh), Some("households")) => Record::Household(hh.to_owned()),
        _ => Record::Other,
    }
}

fn value_at(doc: &automerge::Automerge, obj: &ObjId, key: &str, heads: &[ChangeHash]) -> Option<FieldValue> {
    match doc.get_at(obj, key, heads) {
        Ok(Some((automerge::Value::Scalar(s), _))) => FieldValue::from_scalar(&s),
        _ => None,
    }
}

/// The concurrent values of a field at `heads` other than the shown one.
fn clashing_at(
    doc: &automerge::Automerge,
    obj: &ObjId,
    key: &str,
    heads: &[ChangeHash],
    shown: Option<&FieldValue>,
) -> Vec<FieldValue> {
    let Ok(all) = doc.get_all_at(obj, key, heads) else { return Vec::new() };
    if all.len() < 2 {
        return Vec::new();
    }
    let mut out: Vec<FieldValue> = all
        .iter()
        .filter_map(|(v, _)| match v {
            automerge::Value::Scalar(s) => FieldValue::from_scalar(s),
            automerge::Value::Object(_) => None,
        })
        .collect();
    if let Some(i) = shown.and_then(|s| out.iter().position(|v| v == s)) {
        out.remove(i);
    }
    out
}

fn entry(doc: &SurveyDocument, change: &Change, genesis: ChangeHash, received: &Receipts) -> HistoryEntry {
    let am = doc.automerge();
    let deps = change.deps().to_vec();
    let mut objects: HashMap<String, Option<(ObjId, Record)>> = HashMap::new();
    let mut fields = Vec::new();
    for op in change.decode().operations {
        let Key::Map(key) = &op.key else { continue };
        let key = key.to_string();
        let (obj, record) = match &op.obj {
            ObjectId::Root => continue,
            ObjectId::Id(_) => {
                let text = op.obj.to_string();
                let found = objects.entry(text.clone()).or_insert_with(|| {
                    let obj = am.import_obj(&text).ok()?;
                    let record = locate(am, &obj);
                    Some((obj, record))
                });
                match found {
                    Some((o, r)) => (o.clone(), r.clone()),
                    None => continue,
                }
            }
        };
        let household = match &record {
            Record::Facts => None,
            Record::Household(h) => Some(h.clone()),
            Record::Households => {
                if matches!(op.action, OpType::Make(_)) {
                    fields.push(FieldChange {
                        household: Some(key),
                        field: None,
                        action: Action::Created,
                        old: None,
                        new: None,
                        clashing: Vec::new(),
                    });
                }
                continue;
            }
            Record::Other => continue,
        };
        let old = value_at(am, &obj, &key, &deps);
        let (action, new) = match &op.action {
            OpType::Put(automerge::ScalarValue::Counter(_)) => {
                // Counters are created (at 0) by genesis changes only.
                continue;
            }
            OpType::Put(v) => (Action::Set, FieldValue::from_scalar(v)),
            OpType::Increment(d) => {
                let before = match &old {
                    Some(FieldValue::Int(n)) => *n,
                    _ => 0,
                };
                (Action::Increment, Some(FieldValue::Int(before + d)))
            }
            OpType::Delete => match value_at(am, &obj, &key, &[change.hash()]) {
                // Settling a clash on the value shown is written as deleting
                // the other values only: the field keeps its value, so it is
                // a setting of that value, not a removal.
                Some(kept) => (Action::Set, Some(kept)),
                None => (Action::Unset, None),
            },
            _ => continue,
        };
        let clashing = clashing_at(am, &obj, &key, &deps, old.as_ref());
        fields.push(FieldChange { household, field: Some(key), action, old, new, clashing });
    }
    let hash = change.hash();
    let is_genesis = hash == genesis
        || (change.seq() == 1
            && change.timestamp() == 0
            && fields.iter().all(|f| f.action == Action::Created)
            && !fields.is_empty());
    let received_at = received.get(&hash);
    HistoryEntry {
        change: hash.to_string(),
        actor: change.actor_id().to_hex_string(),
        seq: change.seq(),
        time: change.timestamp(),
        received_at,
        clock_suspect: !is_genesis && clock_suspect(change.timestamp(), received_at),
        genesis: is_genesis,
        deps: deps.iter().map(ToString::to_string).collect(),
        fields,
    }
}

/// Every change of the document in causal order (a change after all it
/// depends on), with when this replica received it (`received`).
pub fn history(doc: &SurveyDocument, received: &Receipts) -> Vec<HistoryEntry> {
    let genesis = doc.genesis().hash();
    doc.automerge().get_changes(&[]).iter().map(|c| entry(doc, c, genesis, received)).collect()
}

/// The heads of the document as it was at `time_ms`: the changes whose
/// [`effective_time`] is at or before that time, with everything they depend on.
///
/// A change with a later time that an included change depends on (a device
/// whose clock ran slow) is included too, since no replica could have had
/// one without the other. Genesis changes (stamped at 0) come in with the
/// first change that needs them. A change stamped in 2100 counts from when
/// it was received, and one stamped in 1960 not before then either.
pub fn heads_at(doc: &SurveyDocument, time_ms: i64, received: &Receipts) -> Vec<ChangeHash> {
    let changes = doc.automerge().get_changes(&[]);
    let by_hash: HashMap<ChangeHash, &Change> = changes.iter().map(|c| (c.hash(), c)).collect();
    let mut included: BTreeSet<ChangeHash> = BTreeSet::new();
    // Genesis changes are stamped at time 0: a household's genesis counts from
    // the first change that writes into it, the document's from the start.
    let genesis = doc.genesis().hash();
    let mut stack: Vec<ChangeHash> = changes
        .iter()
        .filter(|c| {
            c.hash() == genesis
                || (!doc.genesis().is_structural(c)
                    && effective_time(c.timestamp(), received.get(&c.hash())) <= time_ms)
        })
        .map(|c| c.hash())
        .collect();
    while let Some(h) = stack.pop() {
        if included.insert(h) {
            if let Some(c) = by_hash.get(&h) {
                stack.extend(c.deps().iter().copied());
            }
        }
    }
    let covered: BTreeSet<ChangeHash> =
        included.iter().filter_map(|h| by_hash.get(h)).flat_map(|c| c.deps().iter().copied()).collect();
    included.difference(&covered).copied().collect()
}

/// Resolves change hashes, or unique hex prefixes of at least 4 digits, to
/// changes of the document.
pub fn resolve_heads(doc: &SurveyDocument, hashes: &[&str]) -> Result<Vec<ChangeHash>, HistoryError> {
    let all: Vec<ChangeHash> = doc.automerge().get_changes(&[]).iter().map(|c| c.hash()).collect();
    let mut out = Vec::new();
    for raw in hashes {
        let h = raw.trim().to_ascii_lowercase();
        if h.len() < 4 || h.len() > 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(HistoryError::NotAHash((*raw).to_owned()));
        }
        let matches: Vec<&ChangeHash> = all.iter().filter(|c| c.to_string().starts_with(&h)).collect();
        match matches.as_slice() {
            [one] => out.push(**one),
            [] => return Err(HistoryError::Unknown { document: doc.id().clone(), hash: h }),
            many => {
                return Err(HistoryError::Ambiguous {
                    document: doc.id().clone(),
                    hash: h,
                    count: many.len(),
                })
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use automerge::ActorId;

    use super::*;
    use crate::survey::{Edit, FieldValue, Survey, Target};

    fn village() -> DocumentId {
        "village:nhu-co-03:2024-1".parse().unwrap()
    }

    fn hh(id: &str) -> Target {
        Target::Household(id.parse().unwrap())
    }

    #[test]
    fn history_names_fields_and_old_and_new_values() {
        let mut doc = SurveyDocument::create(village(), ActorId::from([1; 16]));
        doc.apply(&[Edit::set(hh("hh-1"), "members", FieldValue::Int(5))], 1_000).unwrap();
        doc.apply(
            &[
                Edit::set(hh("hh-1"), "members", FieldValue::Int(6)),
                Edit::increment(Target::Facts, "security_cameras", 3),
            ],
            2_000,
        )
        .unwrap();
        doc.apply(&[Edit::increment(Target::Facts, "security_cameras", 2)], 3_000).unwrap();
        let h = history(&doc, &Receipts::default());
        // Document genesis, household genesis, then the three edits.
        assert_eq!(h.len(), 5);
        assert!(h[0].genesis && h[1].genesis);
        assert_eq!(h[1].fields[0].action, Action::Created);
        assert_eq!(h[1].fields[0].household.as_deref(), Some("hh-1"));
        let first = &h[2];
        assert!(!first.genesis);
        assert_eq!(first.time, 1_000);
        assert_eq!(first.actor, ActorId::from([1; 16]).to_hex_string());
        assert_eq!(first.fields.len(), 1);
        assert_eq!(first.fields[0].old, None);
        assert_eq!(first.fields[0].new, Some(FieldValue::Int(5)));
        let second = &h[3];
        let members = second.fields.iter().find(|f| f.field.as_deref() == Some("members")).unwrap();
        assert_eq!(
            (members.old.clone(), members.new.clone()),
            (Some(FieldValue::Int(5)), Some(FieldValue::Int(6)))
        );
        let cams = second.fields.iter().find(|f| f.field.as_deref() == Some("security_cameras")).unwrap();
        assert_eq!(cams.household, None);
        assert_eq!(
            (cams.old.clone(), cams.new.clone()),
            (Some(FieldValue::Int(0)), Some(FieldValue::Int(3)))
        );
        assert_eq!(h[4].fields[0].new, Some(FieldValue::Int(5)));
        assert!(h[3].touches_household("hh-1") && !h[4].touches_household("hh-1"));
    }

    #[test]
    fn settling_a_clash_on_the_shown_value_reads_as_old_and_new_not_as_a_removal() {
        let mut a = SurveyDocument::create(village(), ActorId::from([1; 16]));
        a.apply(&[Edit::set(hh("hh-1"), "members", FieldValue::Int(5))], 1_000).unwrap();
        let mut b = a.clone();
        b.automerge_mut().set_actor(ActorId::from([2; 16]));
        a.apply(&[Edit::set(hh("hh-1"), "members", FieldValue::Int(9))], 2_000).unwrap();
        b.apply(&[Edit::set(hh("hh-1"), "members", FieldValue::Int(6))], 2_000).unwrap();
        a.automerge_mut().merge(b.automerge_mut()).unwrap();
        let shown = match a.snapshot(None).unwrap() {
            Survey::Village(v) => v.households["hh-1"].members,
            _ => unreachable!(),
        };
        let mut admin = a.clone();
        admin.automerge_mut().set_actor(ActorId::from([3; 16]));
        admin.apply(&[Edit::set(hh("hh-1"), "members", FieldValue::Int(shown.unwrap()))], 3_000).unwrap();
        let last = history(&admin, &Receipts::default()).pop().unwrap();
        let f = &last.fields[0];
        let other = if shown == Some(9) { 6 } else { 9 };
        assert_eq!(f.action, Action::Set);
        assert_eq!((f.old.clone(), f.new.clone()), (shown.map(FieldValue::Int), shown.map(FieldValue::Int)));
        assert_eq!(f.clashing, vec![FieldValue::Int(other)]);
    }

    #[test]
    fn old_values_are_read_at_the_changes_own_dependencies() {
        let mut a = SurveyDocument::create(village(), ActorId::from([1; 16]));
        a.apply(&[Edit::set(hh("hh-1"), "adults", FieldValue::Int(2))], 1_000).unwrap();
        let mut b = a.clone();
        b.automerge_mut().set_actor(ActorId::from([2; 16]));
        a.apply(&[Edit::set(hh("hh-1"), "adults", FieldValue::Int(3))], 2_000).unwrap();
        b.apply(&[Edit::set(hh("hh-1"), "adults", FieldValue::Int(4))], 2_500).unwrap();
        a.automerge_mut().merge(b.automerge_mut()).unwrap();
        let h = history(&a, &Receipts::default());
        let concurrent: Vec<_> = h.iter().filter(|e| e.time >= 2_000).collect();
        assert_eq!(concurrent.len(), 2);
        for e in concurrent {
            // Both writers saw 2, whatever the other did meanwhile.
            assert_eq!(e.fields[0].old, Some(FieldValue::Int(2)));
        }
    }

    #[test]
    fn heads_at_a_time_show_the_document_as_it_was() {
        let mut doc = SurveyDocument::create(village(), ActorId::from([1; 16]));
        doc.apply(&[Edit::set(hh("hh-1"), "members", FieldValue::Int(5))], 1_000).unwrap();
        doc.apply(&[Edit::set(hh("hh-1"), "members", FieldValue::Int(7))], 2_000).unwrap();
        doc.apply(&[Edit::set(hh("hh-2"), "members", FieldValue::Int(3))], 3_000).unwrap();
        let none = Receipts::default();
        let members = |heads: &[ChangeHash]| match doc.snapshot(Some(heads)).unwrap() {
            Survey::Village(v) => {
                v.households.iter().map(|(k, h)| (k.clone(), h.members)).collect::<Vec<_>>()
            }
            Survey::Commune(_) => unreachable!(),
        };
        assert_eq!(members(&heads_at(&doc, 1_500, &none)), vec![("hh-1".to_owned(), Some(5))]);
        assert_eq!(members(&heads_at(&doc, 2_000, &none)), vec![("hh-1".to_owned(), Some(7))]);
        assert_eq!(members(&heads_at(&doc, 9_000, &none)).len(), 2);
        assert_eq!(heads_at(&doc, 9_000, &none), doc.heads());
        assert!(members(&heads_at(&doc, 500, &none)).is_empty());
    }

    #[test]
    fn heads_resolve_from_full_hashes_and_unique_prefixes() {
        let mut doc = SurveyDocument::create(village(), ActorId::from([1; 16]));
        let h = doc.apply(&[Edit::set(hh("hh-1"), "members", FieldValue::Int(5))], 1_000).unwrap().unwrap();
        let full = h.to_string();
        assert_eq!(resolve_heads(&doc, &[&full]).unwrap(), vec![h]);
        assert_eq!(resolve_heads(&doc, &[&full[..10]]).unwrap(), vec![h]);
        assert!(matches!(resolve_heads(&doc, &["xyz1"]), Err(HistoryError::NotAHash(_))));
        assert!(matches!(resolve_heads(&doc, &["ab"]), Err(HistoryError::NotAHash(_))));
        let missing = if full.starts_with("0000") { "1111" } else { "0000" };
        assert!(matches!(resolve_heads(&doc, &[missing]), Err(HistoryError::Unknown { .. })));
    }

    /// 2024-03-05 07:30 UTC, a plausible fieldwork time.
    const MARCH: i64 = 1_709_623_800_000;
    const HOUR: i64 = 3_600_000;

    #[test]
    fn a_plausible_stamp_is_the_effective_time() {
        let received = Some(MARCH + 5 * HOUR);
        assert!(!clock_suspect(MARCH, received));
        assert_eq!(effective_time(MARCH, received), MARCH);
        // Synced weeks later: the stamp is still the time of the work.
        assert_eq!(effective_time(MARCH, Some(MARCH + 30 * 24 * HOUR)), MARCH);
        // A clock some hours fast (or in another zone) is honest.
        assert_eq!(effective_time(MARCH + 20 * HOUR, Some(MARCH)), MARCH + 20 * HOUR);
        assert_eq!(effective_time(MARCH + CLOCK_TOLERANCE_MS, Some(MARCH)), MARCH + CLOCK_TOLERANCE_MS);
        assert_eq!(effective_time(CLOCK_FLOOR_MS, Some(MARCH)), CLOCK_FLOOR_MS);
    }

    #[test]
    fn an_implausible_stamp_gives_way_to_the_receipt_time() {
        let received = MARCH;
        // 2100-01-01, 1960-01-01, 1970-01-01, 2019-12-31 23:59:59.999, and just over a day ahead.
        for stamp in
            [4_102_444_800_000, -315_619_200_000, 0, CLOCK_FLOOR_MS - 1, MARCH + CLOCK_TOLERANCE_MS + 1]
        {
            assert!(clock_suspect(stamp, Some(received)), "{stamp}");
            assert_eq!(effective_time(stamp, Some(received)), received, "{stamp}");
        }
        // Without a receipt time only the floor can be judged, and the stamp is all there is.
        assert!(clock_suspect(0, None));
        assert!(!clock_suspect(4_102_444_800_000, None));
        assert_eq!(effective_time(4_102_444_800_000, None), 4_102_444_800_000);
        // No overflow at the ends of the range.
        assert!(!clock_suspect(i64::MAX, Some(i64::MAX)));
        assert_eq!(effective_time(i64::MIN, Some(MARCH)), MARCH);
    }

    #[test]
    fn history_flags_wrong_clocks_and_heads_at_use_the_receipt_time() {
        const YEAR_2100: i64 = 4_102_444_800_000;
        const YEAR_1960: i64 = -315_619_200_000;
        let mut doc = SurveyDocument::create(village(), ActorId::from([1; 16]));
        let honest =
            doc.apply(&[Edit::set(hh("hh-1"), "members", FieldValue::Int(5))], MARCH).unwrap().unwrap();
        let future =
            doc.apply(&[Edit::set(hh("hh-1"), "members", FieldValue::Int(6))], YEAR_2100).unwrap().unwrap();
        let past =
            doc.apply(&[Edit::set(hh("hh-1"), "adults", FieldValue::Int(2))], YEAR_1960).unwrap().unwrap();
        // The honest change reached the server an hour after it was made, the others a day later.
        let mut received = Receipts::default();
        for c in doc.automerge().get_changes(&[]) {
            received.insert(c.hash(), MARCH + HOUR);
        }
        received.insert(future, MARCH + 24 * HOUR);
        received.insert(past, MARCH + 24 * HOUR);

        let h = history(&doc, &received);
        let by_hash = |hash: ChangeHash| h.iter().find(|e| e.change == hash.to_string()).unwrap();
        assert!(h.iter().filter(|e| e.genesis).all(|e| !e.clock_suspect), "genesis is stamped 0 on purpose");
        assert!(!by_hash(honest).clock_suspect);
        assert_eq!(by_hash(honest).effective_time(), MARCH);
        for odd in [future, past] {
            let e = by_hash(odd);
            assert!(e.clock_suspect);
            assert_eq!(e.received_at, Some(MARCH + 24 * HOUR));
            assert_eq!(e.effective_time(), MARCH + 24 * HOUR);
        }
        assert_eq!(by_hash(future).time, YEAR_2100, "the device's stamp is kept as it came");

        let snapshot = |at: i64| match doc.snapshot(Some(&heads_at(&doc, at, &received))).unwrap() {
            Survey::Village(v) => v.households.get("hh-1").map(|h| (h.members, h.adults)),
            Survey::Commune(_) => unreachable!(),
        };
        // Before the wrong clocks' receipt only the honest change counts; the
        // 1960 stamp does not make its change count since 1960.
        assert_eq!(snapshot(MARCH + 23 * HOUR), Some((Some(5), None)));
        assert_eq!(snapshot(MARCH - HOUR), None);
        // From their receipt on, both count; the 2100 change does not wait for 2100.
        assert_eq!(snapshot(MARCH + 24 * HOUR), Some((Some(6), Some(2))));
        assert_eq!(heads_at(&doc, MARCH + 24 * HOUR, &received), doc.heads());
        // Taken at face value (no receipts), the 1960 change would count before anything else.
        assert_eq!(heads_at(&doc, YEAR_2100 - 1, &Receipts::default()), doc.heads());
    }
}
