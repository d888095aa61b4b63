//! Survey documents: one Automerge document per village (or commune) per
//! round, with a typed API to edit and read them.
//!
//! # Document layout
//!
//! ```text
//! ROOT
//! ├── schema: 1            ┐
//! ├── kind: "village"      │ written once by the genesis change
//! ├── place: "<place id>"  │
//! ├── round: "<round>"     │
//! ├── facts: { security_cameras: Counter(0), ...fields }
//! └── households:          ┘
//!     └── <household id>: { qr_codes_issued: Counter(0), ...fields }   ← household genesis
//! ```
//!
//! **Invariant: shared structure is created deterministically.** Two replicas
//! that each `put_object` the same key produce two objects, and readers only
//! see one of them (see `automerge-notes.md`). So every object and counter is
//! created by a *genesis change* whose actor id is derived from the document
//! (and household) id, whose timestamp is 0 and whose dependencies are fixed:
//! every replica that starts a village or a household offline produces the
//! byte-identical change, with the same hash, and automerge stores it once.
//! Surveyors' changes then only `put`, `delete` or `increment` scalar fields.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{
    ActorId, Automerge, Change, ChangeHash, ObjId, ObjType, ReadDoc, ScalarValue, Value as AmValue, ROOT,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{DocumentError, EditError};
use crate::ids::{DocumentId, DocumentKind, HouseholdId, MAX_ID_LEN};
pub use crate::schema::{CommuneFacts, Household, VillageFacts};
use crate::schema::{FieldKind, RecordMismatch, Scope, MAX_COUNT, MAX_TEXT_LEN};

/// The layout version written into every genesis change.
pub const SCHEMA_VERSION: i64 = 1;

/// A value of one survey field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FieldValue {
    /// Bool fields.
    Bool(bool),
    /// Count, time and counter fields.
    Int(i64),
    /// Text fields.
    Text(String),
}

impl FieldValue {
    /// Parses a value typed by a person (`members=5`, `fibre_broadband=yes`).
    pub fn parse(field: &str, kind: FieldKind, raw: &str) -> Result<Self, EditError> {
        let wrong = || EditError::WrongType {
            field: field.to_owned(),
            expected: kind.expected(),
            value: raw.to_owned(),
        };
        let value = match kind {
            FieldKind::Bool => match raw.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "y" | "1" | "co" | "có" => FieldValue::Bool(true),
                "false" | "no" | "n" | "0" | "khong" | "không" => FieldValue::Bool(false),
                _ => return Err(wrong()),
            },
            FieldKind::Count | FieldKind::Time | FieldKind::Counter => {
                FieldValue::Int(raw.trim().parse().map_err(|_| wrong())?)
            }
            FieldKind::Text => FieldValue::Text(raw.to_owned()),
        };
        value.check(field, kind)?;
        Ok(value)
    }

    /// Checks the value against the field's type rule.
    pub fn check(&self, field: &str, kind: FieldKind) -> Result<(), EditError> {
        let ok = match (kind, self) {
            (FieldKind::Bool, FieldValue::Bool(_)) => true,
            (FieldKind::Count, FieldValue::Int(n)) => (0..=MAX_COUNT).contains(n),
            (FieldKind::Time, FieldValue::Int(n)) => *n >= 0,
            (FieldKind::Text, FieldValue::Text(s)) => s.chars().count() <= MAX_TEXT_LEN,
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(EditError::WrongType {
                field: field.to_owned(),
                expected: kind.expected(),
                value: self.to_string(),
            })
        }
    }

    fn to_scalar(&self) -> ScalarValue {
        match self {
            FieldValue::Bool(b) => ScalarValue::Boolean(*b),
            FieldValue::Int(n) => ScalarValue::Int(*n),
            FieldValue::Text(s) => ScalarValue::Str(s.as_str().into()),
        }
    }

    /// Reads a scalar as stored; `None` for values no rule allows.
    pub fn from_scalar(s: &ScalarValue) -> Option<Self> {
        Some(match s {
            ScalarValue::Boolean(b) => FieldValue::Bool(*b),
            ScalarValue::Int(n) => FieldValue::Int(*n),
            ScalarValue::Uint(n) => FieldValue::Int(i64::try_from(*n).ok()?),
            ScalarValue::Counter(c) => FieldValue::Int(i64::from(c)),
            ScalarValue::Str(s) => FieldValue::Text(s.to_string()),
            _ => return None,
        })
    }

    /// The value as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            FieldValue::Bool(b) => (*b).into(),
            FieldValue::Int(n) => (*n).into(),
            FieldValue::Text(s) => s.as_str().into(),
        }
    }
}

impl std::fmt::Display for FieldValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FieldValue::Bool(b) => write!(f, "{b}"),
            FieldValue::Int(n) => write!(f, "{n}"),
            FieldValue::Text(s) => write!(f, "{s}"),
        }
    }
}

/// Which record of a document an edit touches.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The village or commune facts.
    Facts,
    /// One household (village documents only).
    Household(HouseholdId),
}

/// One edit in a batch applied as a single change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Edit {
    /// Facts or a household.
    pub target: Target,
    /// Field name from the schema.
    pub field: String,
    /// What to do to it.
    pub op: EditOp,
}

/// What an [`Edit`] does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EditOp {
    /// Write a value (plain fields).
    Set(FieldValue),
    /// Add to a counter (may be negative).
    Increment(i64),
    /// Remove a plain field's value.
    Unset,
}

impl Edit {
    /// `target.field = value`.
    pub fn set(target: Target, field: &str, value: FieldValue) -> Self {
        Self { target, field: field.to_owned(), op: EditOp::Set(value) }
    }
    /// `target.field += delta` on a counter.
    pub fn increment(target: Target, field: &str, delta: i64) -> Self {
        Self { target, field: field.to_owned(), op: EditOp::Increment(delta) }
    }
}

/// A survey document: an Automerge document plus the id it belongs to.
#[derive(Debug, Clone)]
pub struct SurveyDocument {
    id: DocumentId,
    genesis: Genesis,
    doc: Automerge,
}

fn derived_actor(parts: &[&str]) -> ActorId {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    ActorId::from(&h.finalize()[..16])
}

/// The actor id of a document's genesis change.
pub fn genesis_actor(id: &DocumentId) -> ActorId {
    derived_actor(&["thonsync/genesis", &id.to_string()])
}

/// The actor id of a household's genesis change.
pub fn household_actor(id: &DocumentId, household: &str) -> ActorId {
    derived_actor(&["thonsync/household", &id.to_string(), household])
}

fn scope_of(kind: DocumentKind) -> Scope {
    match kind {
        DocumentKind::Village => Scope::Village,
        DocumentKind::Commune => Scope::Commune,
    }
}

/// The canonical genesis changes of one document, made without a document or
/// a transaction: each is the automerge change every replica's transaction
/// would make, spelled out op by op and encoded once.
///
/// Recognising a genesis compares the change's hash with the canonical one,
/// never its decoded content alone: a change that decodes to the same ops
/// but is encoded differently has another hash, and accepting it would take
/// the derived actor's sequence number 1 from the real genesis.
#[derive(Clone, Debug)]
pub struct Genesis {
    id: DocumentId,
    actor: ActorId,
    change: Change,
    /// The canonical household genesis bytes for each length of household
    /// id, made once each (shared by the clones of this genesis): see
    /// [`HouseholdTemplate`].
    templates: Arc<OnceLock<Vec<OnceLock<Option<HouseholdTemplate>>>>>,
}

/// A village's canonical household genesis for household ids of one
/// length: the bytes of the change for a probe id, and where the two things
/// that vary with the id lie in them (the derived actor and the id itself).
/// Two probe ids of that length, made the usual way, differ exactly there
/// and in the checksum; the template is kept only if they do, so the bytes
/// it gives for any id of that length are those the encoder makes (a
/// property test holds them so).
#[derive(Debug)]
struct HouseholdTemplate {
    bytes: Vec<u8>,
    /// Where the derived actor lies.
    actor: std::ops::Range<usize>,
    /// Where the household id lies.
    key: std::ops::Range<usize>,
}

/// Where a chunk's checksum lies (after the 4-byte magic): it is not part of
/// the change's hash, and `inbound` has checked it against the bytes.
const CHECKSUM: std::ops::Range<usize> = 4..8;

impl HouseholdTemplate {
    /// The template for ids of `len` bytes, if the two probes differ only
    /// where they should.
    fn of(genesis: &Genesis, len: usize) -> Option<Self> {
        // Bytes no id holds and no length of one (a length prefix sits
        // just before the id).
        let probes = ["~".repeat(len), "|".repeat(len)];
        let [a, b] = probes.each_ref().map(|p| genesis.household(p).map(|c| c.raw_bytes().to_vec()));
        let (a, b) = (a?, b?);
        let actors = probes.each_ref().map(|p| household_actor(&genesis.id, p).to_bytes().to_vec());
        let find = |bytes: &[u8], needle: &[u8]| {
            let mut at =
                bytes.windows(needle.len()).enumerate().filter(|(_, w)| *w == needle).map(|(i, _)| i);
            match (at.next(), at.next()) {
                (Some(i), None) => Some(i),
                _ => None,
            }
        };
        let actor_at = find(&a, &actors[0])?;
        let key_at = find(&a, probes[0].as_bytes())?;
        if a.len() != b.len()
            || find(&b, &actors[1]) != Some(actor_at)
            || find(&b, probes[1].as_bytes()) != Some(key_at)
        {
            return None;
        }
        let (actor, key) = (actor_at..actor_at + actors[0].len(), key_at..key_at + len);
        let apart =
            |x: &std::ops::Range<usize>, y: &std::ops::Range<usize>| x.end <= y.start || y.end <= x.start;
        if !(apart(&actor, &key) && apart(&actor, &CHECKSUM) && apart(&key, &CHECKSUM)) {
            return None;
        }
        let varies = |i: usize| CHECKSUM.contains(&i) || actor.contains(&i) || key.contains(&i);
        let only_there = a.iter().zip(&b).enumerate().all(|(i, (x, y))| x == y || varies(i));
        only_there.then_some(Self { bytes: a, actor, key })
    }

    /// Whether `raw` is the canonical genesis of `household` written by
    /// `actor`, checksum aside: the template's bytes between the three
    /// places that vary, the actor and the id in theirs.
    fn matches(&self, raw: &[u8], actor: &ActorId, household: &str) -> bool {
        if raw.len() != self.bytes.len()
            || raw[self.actor.clone()] != *actor.to_bytes()
            || household.len() != self.key.len()
            || raw[self.key.clone()] != *household.as_bytes()
        {
            return false;
        }
        let mut varying = [CHECKSUM, self.actor.clone(), self.key.clone()];
        varying.sort_by_key(|r| r.start);
        let mut at = 0;
        for skip in varying {
            if raw[at..skip.start] != self.bytes[at..skip.start] {
                return false;
            }
            at = skip.end;
        }
        raw[at..] == self.bytes[at..]
    }
}

fn put(obj: automerge::legacy::ObjectId, key: &str, value: ScalarValue) -> automerge::legacy::Op {
    automerge::legacy::Op {
        action: automerge::legacy::OpType::Put(value),
        obj,
        key: automerge::legacy::Key::Map(key.into()),
        pred: automerge::legacy::SortedVec::new(),
        insert: false,
    }
}

fn make_map(obj: automerge::legacy::ObjectId, key: &str) -> automerge::legacy::Op {
    automerge::legacy::Op {
        action: automerge::legacy::OpType::Make(ObjType::Map),
        ..put(obj, key, ScalarValue::Null)
    }
}

/// A change at time 0, sequence number 1, with no message.
fn canonical(
    actor: ActorId,
    start_op: u64,
    deps: Vec<ChangeHash>,
    operations: Vec<automerge::legacy::Op>,
) -> automerge::ExpandedChange {
    automerge::ExpandedChange {
        operations,
        actor_id: actor,
        hash: None,
        seq: 1,
        start_op: std::num::NonZeroU64::new(start_op).expect("op counters start at 1"),
        time: 0,
        message: None,
        deps,
        extra_bytes: Vec::new(),
        author: None,
    }
}

fn counters(scope: Scope) -> impl Iterator<Item = &'static str> {
    scope.fields().iter().filter(|f| f.kind == FieldKind::Counter).map(|f| f.name)
}

impl Genesis {
    /// The genesis of document `id`.
    pub fn new(id: &DocumentId) -> Self {
        use automerge::legacy::{ObjectId, OpId};
        let actor = genesis_actor(id);
        let mut ops = vec![
            put(ObjectId::Root, "schema", ScalarValue::Int(SCHEMA_VERSION)),
            put(ObjectId::Root, "kind", ScalarValue::Str(id.kind.as_str().into())),
            put(ObjectId::Root, "place", ScalarValue::Str(id.place.as_str().into())),
            put(ObjectId::Root, "round", ScalarValue::Str(id.round.as_str().into())),
            make_map(ObjectId::Root, "facts"),
        ];
        let facts = ObjectId::Id(OpId::new(ops.len() as u64, &actor));
        for name in counters(scope_of(id.kind)) {
            ops.push(put(facts.clone(), name, ScalarValue::counter(0)));
        }
        if id.kind == DocumentKind::Village {
            ops.push(make_map(ObjectId::Root, "households"));
        }
        let change = Change::from(canonical(actor.clone(), 1, Vec::new(), ops));
        Self { id: id.clone(), actor, change, templates: Arc::default() }
    }

    /// The household genesis template for ids of `len` bytes, made the
    /// first time one is asked for.
    fn template(&self, len: usize) -> Option<&HouseholdTemplate> {
        let all = self.templates.get_or_init(|| (0..=MAX_ID_LEN).map(|_| OnceLock::new()).collect());
        all.get(len)?.get_or_init(|| HouseholdTemplate::of(self, len)).as_ref()
    }

    /// The document genesis change.
    pub fn change(&self) -> &Change {
        &self.change
    }

    /// Its hash.
    pub fn hash(&self) -> ChangeHash {
        self.change.hash()
    }

    /// The op that makes the households map (village documents: the last
    /// op of the genesis), and the first op counter after the genesis.
    fn households_op(&self) -> Option<(automerge::legacy::OpId, u64)> {
        let last = self.change.max_op();
        (self.id.kind == DocumentKind::Village)
            .then(|| (automerge::legacy::OpId::new(last, &self.actor), last + 1))
    }

    fn household_expanded(&self, household: &str) -> Option<automerge::ExpandedChange> {
        use automerge::legacy::{ObjectId, OpId};
        let (households, start_op) = self.households_op()?;
        let actor = household_actor(&self.id, household);
        let mut ops = vec![make_map(ObjectId::Id(households), household)];
        let record = ObjectId::Id(OpId::new(start_op, &actor));
        for name in counters(Scope::Household) {
            ops.push(put(record.clone(), name, ScalarValue::counter(0)));
        }
        Some(canonical(actor, start_op, vec![self.hash()], ops))
    }

    /// The genesis change of one household (village documents only).
    pub fn household(&self, household: &str) -> Option<Change> {
        self.household_expanded(household).map(Change::from)
    }

    /// The household whose genesis `change` is, byte for byte, if it is one.
    ///
    /// Cheap facts first (sequence, time, dependency, actors, sizes), then
    /// the decoded ops, then the hash of the canonical change for that
    /// household.
    pub fn household_of(&self, change: &Change) -> Option<String> {
        let (_, start_op) = self.households_op()?;
        let structural_facts = change.seq() == 1
            && change.timestamp() == 0
            && change.deps() == [self.hash()]
            && change.start_op().get() == start_op
            && change.len() == 1 + counters(Scope::Household).count()
            && change.message().is_none()
            && change.extra_bytes().is_empty()
            && change.other_actor_ids() == std::slice::from_ref(&self.actor);
        if !structural_facts {
            return None;
        }
        let decoded = change.decode();
        let automerge::legacy::Key::Map(household) = &decoded.operations.first()?.key else { return None };
        crate::ids::check_id("household id", household).ok()?;
        if change.actor_id() != &household_actor(&self.id, household) {
            return None;
        }
        // Byte for byte the canonical change: the template's bytes (a copy
        // and two patches) are, checksum aside; anything else (another
        // encoding, a length without a template) is held to the canonical
        // change made again, by its hash.
        // (An id equal to a record field's name would share a run with it in
        // the keys column, encoded unlike the template's probes: made again.)
        let template = counters(Scope::Household)
            .all(|f| f != household.as_str())
            .then(|| self.template(household.len()));
        if template.flatten().is_some_and(|t| t.matches(change.raw_bytes(), change.actor_id(), household)) {
            return Some(household.to_string());
        }
        let expected = self.household_expanded(household)?;
        if decoded != expected {
            return None;
        }
        (Change::from(expected).hash() == change.hash()).then(|| household.to_string())
    }

    /// Whether `change` is the genesis of this document or of one of its
    /// households.
    pub fn is_structural(&self, change: &Change) -> bool {
        if change.seq() != 1 || change.timestamp() != 0 {
            return false;
        }
        if change.actor_id() == &self.actor {
            return change.hash() == self.hash();
        }
        self.household_of(change).is_some()
    }
}

/// The genesis change of a document: identical on every replica.
pub fn genesis_change(id: &DocumentId) -> Change {
    Genesis::new(id).change
}

/// The genesis change of one household: identical on every replica.
///
/// # Panics
/// If `id` is not a village document (only villages have households).
pub fn household_genesis_change(id: &DocumentId, household: &str) -> Change {
    Genesis::new(id).household(household).expect("only village documents have households")
}

/// Whether `change` is the genesis of `id` or of one of its households.
pub fn is_structural(id: &DocumentId, change: &Change) -> bool {
    change.seq() == 1 && change.timestamp() == 0 && Genesis::new(id).is_structural(change)
}

impl SurveyDocument {
    /// A new document holding only its genesis change, writing as `actor`.
    pub fn create(id: DocumentId, actor: ActorId) -> Self {
        let genesis = Genesis::new(&id);
        let mut doc = Automerge::new().with_actor(actor);
        doc.apply_changes([genesis.change.clone()]).expect("a genesis applies to an empty document");
        Self { id, genesis, doc }
    }

    /// An empty document (no genesis yet), to be filled by sync.
    pub fn empty(id: DocumentId, actor: ActorId) -> Self {
        Self { genesis: Genesis::new(&id), id, doc: Automerge::new().with_actor(actor) }
    }

    /// Wraps an automerge document that is known to belong to `id`.
    pub fn from_automerge(id: DocumentId, doc: Automerge) -> Self {
        Self { genesis: Genesis::new(&id), id, doc }
    }

    /// The same document id (and genesis) over another automerge document,
    /// e.g. a fork of this one.
    pub fn with_automerge(&self, doc: Automerge) -> Self {
        Self { id: self.id.clone(), genesis: self.genesis.clone(), doc }
    }

    /// Loads a document from a snapshot (`save()` output) and extra change chunks.
    pub fn load<'a>(
        id: DocumentId,
        actor: ActorId,
        snapshot: Option<&[u8]>,
        changes: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Self, DocumentError> {
        let decode = |e: automerge::AutomergeError| DocumentError::Decode {
            document: id.clone(),
            reason: e.to_string(),
        };
        // Damaged bytes have been seen to panic inside automerge (a fuzzing
        // find, kept as a regression test): contain that as an error.
        let built =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<Automerge, DocumentError> {
                let mut doc = match snapshot {
                    Some(bytes) => Automerge::load(bytes).map_err(decode)?,
                    None => Automerge::new(),
                };
                let mut parsed = Vec::new();
                for bytes in changes {
                    parsed.push(Change::try_from(bytes).map_err(|e| DocumentError::Decode {
                        document: id.clone(),
                        reason: e.to_string(),
                    })?);
                }
                doc.apply_changes(parsed).map_err(decode)?;
                Ok(doc)
            }));
        let mut doc = match built {
            Ok(result) => result?,
            Err(_) => {
                return Err(DocumentError::Decode {
                    document: id,
                    reason: "automerge failed on these bytes (they are damaged)".into(),
                })
            }
        };
        doc.set_actor(actor);
        let me = Self { genesis: Genesis::new(&id), id, doc };
        if !me.doc.is_empty() && !me.has_genesis() {
            return Err(DocumentError::WrongGenesis { document: me.id });
        }
        Ok(me)
    }

    /// The id of this document.
    pub fn id(&self) -> &DocumentId {
        &self.id
    }

    /// The canonical genesis changes of this document.
    pub fn genesis(&self) -> &Genesis {
        &self.genesis
    }

    /// The underlying automerge document.
    pub fn automerge(&self) -> &Automerge {
        &self.doc
    }

    /// Mutable access, for the sync engine.
    pub fn automerge_mut(&mut self) -> &mut Automerge {
        &mut self.doc
    }

    /// Current heads.
    pub fn heads(&self) -> Vec<ChangeHash> {
        self.doc.get_heads()
    }

    /// Whether the document's genesis change has been applied.
    pub fn has_genesis(&self) -> bool {
        self.doc.get_change_meta_by_hash(&self.genesis.hash()).is_some()
    }

    fn ensure_genesis(&mut self) -> Result<(), EditError> {
        if !self.has_genesis() {
            self.doc.apply_changes([self.genesis.change.clone()])?;
        }
        Ok(())
    }

    fn obj(&self, parent: &ObjId, key: &str) -> Option<ObjId> {
        match self.doc.get(parent, key) {
            Ok(Some((AmValue::Object(ObjType::Map), id))) => Some(id),
            _ => None,
        }
    }

    fn households_obj(&self) -> Option<ObjId> {
        self.obj(&ROOT, "households")
    }

    /// The map of one household, if it exists.
    pub fn household_obj(&self, household: &str) -> Option<ObjId> {
        self.obj(&self.households_obj()?, household)
    }

    /// Creates the household through its deterministic genesis, if missing.
    pub fn ensure_household(&mut self, household: &HouseholdId) -> Result<(), EditError> {
        if self.id.kind != DocumentKind::Village {
            return Err(EditError::NoHouseholds(self.id.clone()));
        }
        self.ensure_genesis()?;
        if self.household_obj(household.as_str()).is_none() {
            let change = self.genesis.household(household.as_str()).expect("a village document");
            self.doc.apply_changes([change])?;
        }
        Ok(())
    }

    fn scope(&self, target: &Target) -> Result<Scope, EditError> {
        match target {
            Target::Facts => Ok(scope_of(self.id.kind)),
            Target::Household(_) if self.id.kind == DocumentKind::Village => Ok(Scope::Household),
            Target::Household(_) => Err(EditError::NoHouseholds(self.id.clone())),
        }
    }

    /// Checks an edit against the schema without applying it.
    pub fn check_edit(&self, edit: &Edit) -> Result<(), EditError> {
        let scope = self.scope(&edit.target)?;
        let field = scope.field(&edit.field).ok_or_else(|| EditError::UnknownField {
            field: edit.field.clone(),
            scope: scope.name(),
            known: scope.known(),
        })?;
        match (&edit.op, field.kind) {
            (EditOp::Increment(_), FieldKind::Counter) => Ok(()),
            (_, FieldKind::Counter) => Err(EditError::WrongOperation {
                field: edit.field.clone(),
                kind: "a counter",
                hint: "add to it (thonsync device add) instead of setting it",
            }),
            (EditOp::Increment(_), _) => Err(EditError::WrongOperation {
                field: edit.field.clone(),
                kind: "not a counter",
                hint: "set its value instead",
            }),
            (EditOp::Set(v), kind) => v.check(&edit.field, kind),
            (EditOp::Unset, _) => Ok(()),
        }
    }

    /// Applies a batch of edits as one change stamped `now_ms`.
    ///
    /// Every edit is checked first; nothing is written unless all pass.
    /// Returns the new change's hash, or `None` for an empty batch.
    pub fn apply(&mut self, edits: &[Edit], now_ms: i64) -> Result<Option<ChangeHash>, EditError> {
        for edit in edits {
            self.check_edit(edit)?;
        }
        if edits.is_empty() {
            return Ok(None);
        }
        self.ensure_genesis()?;
        for edit in edits {
            if let Target::Household(h) = &edit.target {
                self.ensure_household(h)?;
            }
        }
        let mut targets = BTreeMap::new();
        for edit in edits {
            let obj = match &edit.target {
                Target::Facts => self.obj(&ROOT, "facts"),
                Target::Household(h) => self.household_obj(h.as_str()),
            }
            .expect("created above");
            targets.insert(edit.target.clone(), obj);
        }
        let result = self.doc.transact_with::<_, _, automerge::AutomergeError, _>(
            |_| CommitOptions::default().with_time(now_ms),
            |tx| {
                for edit in edits {
                    let obj = &targets[&edit.target];
                    match &edit.op {
                        EditOp::Set(v) => tx.put(obj, edit.field.as_str(), v.to_scalar())?,
                        EditOp::Increment(d) => tx.increment(obj, edit.field.as_str(), *d)?,
                        EditOp::Unset => tx.delete(obj, edit.field.as_str())?,
                    }
                }
                Ok(())
            },
        );
        match result {
            Ok(ok) => Ok(ok.hash),
            Err(failure) => Err(EditError::Automerge(failure.error)),
        }
    }

    /// The household ids present, sorted.
    pub fn household_ids(&self, heads: Option<&[ChangeHash]>) -> Vec<String> {
        let Some(obj) = self.households_obj() else { return Vec::new() };
        match heads {
            Some(h) => self.doc.keys_at(&obj, h).collect(),
            None => self.doc.keys(&obj).collect(),
        }
    }

    /// The winning value of every field of one record; a value no field
    /// type can hold is a mismatch, never skipped.
    fn read_record(
        &self,
        obj: &ObjId,
        heads: Option<&[ChangeHash]>,
    ) -> Result<Vec<(String, FieldValue)>, RecordMismatch> {
        let keys: Vec<String> = match heads {
            Some(h) => self.doc.keys_at(obj, h).collect(),
            None => self.doc.keys(obj).collect(),
        };
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let got = match heads {
                Some(h) => self.doc.get_at(obj, key.as_str(), h),
                None => self.doc.get(obj, key.as_str()),
            };
            let value = match &got {
                Ok(Some((AmValue::Scalar(s), _))) => FieldValue::from_scalar(s).ok_or_else(|| format!("{s}")),
                Ok(Some((AmValue::Object(t), _))) => Err(format!("a {t:?} object")),
                Ok(None) => continue,
                Err(e) => Err(e.to_string()),
            };
            match value {
                Ok(v) => out.push((key, v)),
                Err(found) => {
                    return Err(RecordMismatch::WrongType {
                        field: key,
                        expected: "a value of the survey model",
                        value: found,
                    })
                }
            }
        }
        Ok(out)
    }

    /// A typed snapshot of the document now, or as it was at `heads`.
    ///
    /// A record holding a name outside the field table, or a value of
    /// another type than its field's, is an error naming the document,
    /// household and field.
    pub fn snapshot(&self, heads: Option<&[ChangeHash]>) -> Result<Survey, DocumentError> {
        let mismatch = |household: Option<&str>| {
            let document = self.id.clone();
            let household = household.map(str::to_owned);
            move |mismatch| DocumentError::Record { document, household, mismatch }
        };
        let facts = match self.obj(&ROOT, "facts") {
            Some(o) => self.read_record(&o, heads).map_err(mismatch(None))?,
            None => Vec::new(),
        };
        Ok(match self.id.kind {
            DocumentKind::Commune => Survey::Commune(CommuneSurvey {
                document: self.id.clone(),
                facts: CommuneFacts::from_record(facts).map_err(mismatch(None))?,
            }),
            DocumentKind::Village => {
                let mut households = BTreeMap::new();
                if let Some(hobj) = self.households_obj() {
                    for hh in self.household_ids(heads) {
                        if let Some(obj) = self.obj(&hobj, &hh) {
                            let record = self.read_record(&obj, heads).map_err(mismatch(Some(&hh)))?;
                            let mut household =
                                Household::from_record(record).map_err(mismatch(Some(&hh)))?;
                            household.id = hh.clone();
                            households.insert(hh, household);
                        }
                    }
                }
                Survey::Village(VillageSurvey {
                    document: self.id.clone(),
                    facts: VillageFacts::from_record(facts).map_err(mismatch(None))?,
                    households,
                })
            }
        })
    }

    /// Every record of the document as (target, object) pairs.
    pub(crate) fn records(&self) -> Vec<(Target, ObjId)> {
        let mut out = Vec::new();
        if let Some(o) = self.obj(&ROOT, "facts") {
            out.push((Target::Facts, o));
        }
        if let Some(hobj) = self.households_obj() {
            for hh in self.household_ids(None) {
                if let (Some(o), Ok(id)) = (self.obj(&hobj, &hh), HouseholdId::new(hh.as_str())) {
                    out.push((Target::Household(id), o));
                }
            }
        }
        out
    }
}

/// A typed snapshot of a survey document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Survey {
    /// A village document.
    Village(VillageSurvey),
    /// A commune document.
    Commune(CommuneSurvey),
}

/// The merged survey of one village in one round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VillageSurvey {
    /// Which document this is.
    pub document: DocumentId,
    /// Village facts.
    pub facts: VillageFacts,
    /// Households by id.
    pub households: BTreeMap<String, Household>,
}

/// Commune-level facts of one round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommuneSurvey {
    /// Which document this is.
    pub document: DocumentId,
    /// The facts.
    pub facts: CommuneFacts,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::FileFailurePersistence;

    /// The genesis as a transaction on a fresh document makes it: the
    /// reference the canonical changes must match byte for byte.
    fn reference_genesis_doc(id: &DocumentId) -> Automerge {
        let mut doc = Automerge::new().with_actor(genesis_actor(id));
        doc.transact_with::<_, _, automerge::AutomergeError, _>(
            |_| CommitOptions::default().with_time(0),
            |tx| {
                tx.put(ROOT, "schema", SCHEMA_VERSION)?;
                tx.put(ROOT, "kind", id.kind.as_str())?;
                tx.put(ROOT, "place", id.place.as_str())?;
                tx.put(ROOT, "round", id.round.as_str())?;
                let facts = tx.put_object(ROOT, "facts", ObjType::Map)?;
                for field in scope_of(id.kind).fields() {
                    if field.kind == FieldKind::Counter {
                        tx.put(&facts, field.name, ScalarValue::counter(0))?;
                    }
                }
                if id.kind == DocumentKind::Village {
                    tx.put_object(ROOT, "households", ObjType::Map)?;
                }
                Ok(())
            },
        )
        .unwrap();
        doc
    }

    fn reference_household_genesis(id: &DocumentId, household: &str) -> Change {
        let mut doc = reference_genesis_doc(id);
        doc.set_actor(household_actor(id, household));
        let Ok(Some((_, households))) = doc.get(ROOT, "households") else {
            panic!("a village has households")
        };
        doc.transact_with::<_, _, automerge::AutomergeError, _>(
            |_| CommitOptions::default().with_time(0),
            |tx| {
                let hh = tx.put_object(&households, household, ObjType::Map)?;
                for field in Scope::Household.fields() {
                    if field.kind == FieldKind::Counter {
                        tx.put(&hh, field.name, ScalarValue::counter(0))?;
                    }
                }
                Ok(())
            },
        )
        .unwrap();
        doc.get_last_local_change().unwrap()
    }

    const ID: &str = "[a-z0-9_][a-z0-9_-]{0,63}";

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 128,
            failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel("proptest-regressions"))),
            ..ProptestConfig::default()
        })]

        #[test]
        fn canonical_geneses_are_the_transactions_byte_for_byte(
            village in any::<bool>(), place in ID, round in ID, household in ID,
        ) {
            let place = crate::ids::PlaceId::new(place).unwrap();
            let round = crate::ids::Round::new(round).unwrap();
            let id = if village { DocumentId::village(place, round) } else { DocumentId::commune(place, round) };
            let reference = reference_genesis_doc(&id).get_last_local_change().unwrap();
            let genesis = Genesis::new(&id);
            prop_assert_eq!(genesis.hash(), reference.hash());
            prop_assert_eq!(genesis.change().raw_bytes(), reference.raw_bytes());
            prop_assert!(genesis.is_structural(&reference));
            if village {
                let reference = reference_household_genesis(&id, &household);
                let fast = genesis.household(&household).unwrap();
                prop_assert_eq!(fast.hash(), reference.hash());
                prop_assert_eq!(fast.raw_bytes(), reference.raw_bytes());
                prop_assert_eq!(genesis.household_of(&reference), Some(household.clone()));
                // Its template gives the transaction's bytes (checksum aside)
                // for this id, not for another of the same length.
                let template = genesis.template(household.len());
                prop_assert!(household.len() < 4 || template.is_some(), "a template for length {}", household.len());
                if let Some(t) = template {
                    prop_assert!(t.matches(reference.raw_bytes(), reference.actor_id(), &household));
                    let mut twin = household.clone().into_bytes();
                    twin[0] = if twin[0] == b'a' { b'b' } else { b'a' };
                    let twin = String::from_utf8(twin).unwrap();
                    prop_assert!(!t.matches(reference.raw_bytes(), reference.actor_id(), &twin));
                }
                prop_assert!(is_structural(&id, &reference));
                // Another document's or household's genesis is not this one's.
                let other = reference_household_genesis(&id, &format!("{household}x"));
                prop_assert_ne!(genesis.household_of(&other), Some(household));
            } else {
                prop_assert!(genesis.household("hh-1").is_none());
            }
        }
    }

    use crate::inbound::write_uleb;

    fn uleb(bytes: &[u8], at: &mut usize) -> u64 {
        crate::inbound::read_uleb(bytes, at).expect("a number")
    }

    /// `change` encoded again by hand, its op columns (spec, data) edited by
    /// `edit`, with a correct checksum.
    fn reencoded(change: &Change, edit: impl FnOnce(&mut Vec<(u64, Vec<u8>)>)) -> Change {
        let bytes = change.raw_bytes();
        let mut at = 9; // magic, checksum, chunk type
        let len = uleb(bytes, &mut at) as usize;
        let body = &bytes[at..at + len];
        let mut i = 0;
        let deps = uleb(body, &mut i) as usize;
        i += 32 * deps;
        let actor = uleb(body, &mut i) as usize;
        i += actor;
        uleb(body, &mut i); // seq
        uleb(body, &mut i); // start op
        uleb(body, &mut i); // time (0 reads the same signed)
        let message = uleb(body, &mut i) as usize;
        i += message;
        for _ in 0..uleb(body, &mut i) {
            let len = uleb(body, &mut i) as usize;
            i += len;
        }
        let head = body[..i].to_vec();
        let specs: Vec<(u64, usize)> =
            (0..uleb(body, &mut i)).map(|_| (uleb(body, &mut i), uleb(body, &mut i) as usize)).collect();
        let mut columns = Vec::new();
        for (spec, len) in specs {
            columns.push((spec, body[i..i + len].to_vec()));
            i += len;
        }
        assert_eq!(i, body.len(), "no extra bytes in a canonical genesis");
        edit(&mut columns);
        let mut new_body = head;
        write_uleb(&mut new_body, columns.len() as u64);
        for (spec, data) in &columns {
            write_uleb(&mut new_body, *spec);
            write_uleb(&mut new_body, data.len() as u64);
        }
        for (_, data) in &columns {
            new_body.extend_from_slice(data);
        }
        let mut hashed = vec![1u8];
        write_uleb(&mut hashed, new_body.len() as u64);
        hashed.extend_from_slice(&new_body);
        let hash = Sha256::digest(&hashed);
        let mut chunk = bytes[..4].to_vec();
        chunk.extend_from_slice(&hash[..4]);
        chunk.extend_from_slice(&hashed);
        Change::try_from(chunk.as_slice()).expect("automerge reads the re-encoded change")
    }

    #[test]
    fn a_genesis_decoding_the_same_but_encoded_otherwise_is_no_genesis() {
        let id: DocumentId = "village:nhu-co-03:2024-1".parse().unwrap();
        let genesis = Genesis::new(&id);
        let canonical = genesis.household("hh-007").unwrap();
        assert_eq!(
            reencoded(&canonical, |_| {}).hash(),
            canonical.hash(),
            "the re-encoder itself is faithful"
        );
        // The action column (id 4, integers: 0x42) as two runs of one value
        // each instead of one literal run; and an unknown, empty column.
        let action = |columns: &mut Vec<(u64, Vec<u8>)>| {
            let col = columns.iter_mut().find(|(spec, _)| *spec == 0x42).expect("an action column");
            assert_eq!(col.1, [0x7e, 0, 1], "make map then put, as one literal run");
            col.1 = vec![1, 0, 1, 1];
        };
        let unknown = |columns: &mut Vec<(u64, Vec<u8>)>| columns.push((0x1f2, Vec::new()));
        let squats = [reencoded(&canonical, action), reencoded(&canonical, unknown)];
        for squat in &squats {
            assert_eq!(squat.decode(), canonical.decode(), "the same decoded content");
            assert_eq!(
                (squat.actor_id(), squat.seq(), squat.deps()),
                (canonical.actor_id(), 1, canonical.deps())
            );
            assert_ne!(squat.hash(), canonical.hash());
            let template = genesis.template("hh-007".len()).expect("a template");
            assert!(!template.matches(squat.raw_bytes(), squat.actor_id(), "hh-007"));
            assert_eq!(genesis.household_of(squat), None);
            assert!(!genesis.is_structural(squat));
            assert!(!is_structural(&id, squat));

            let mut doc = SurveyDocument::create(id.clone(), ActorId::from([1u8; 16]));
            doc.automerge_mut().apply_changes([squat.clone()]).expect("automerge itself takes it");
            let breach = crate::validate::check_change(&doc, squat).expect_err("refused");
            assert_eq!(breach.rule, "household_genesis");
            assert_eq!(breach.household.as_deref(), Some("hh-007"));
        }
        let mut doc = SurveyDocument::create(id.clone(), ActorId::from([1u8; 16]));
        doc.automerge_mut().apply_changes([canonical.clone()]).unwrap();
        assert_eq!(crate::validate::check_change(&doc, &canonical), Ok(()));
    }

    #[test]
    fn a_household_genesis_under_another_documents_actor_or_with_a_bad_key_is_no_genesis() {
        let id: DocumentId = "village:nhu-co-03:2024-1".parse().unwrap();
        let other: DocumentId = "village:nhu-co-04:2024-1".parse().unwrap();
        let theirs = household_genesis_change(&other, "hh-001");
        assert!(!Genesis::new(&id).is_structural(&theirs));
        assert!(Genesis::new(&other).is_structural(&theirs));
        // A key that is no household id, even through the canonical builder.
        let bad = Genesis::new(&id).household("Not An Id").unwrap();
        assert_eq!(Genesis::new(&id).household_of(&bad), None);
        let commune: DocumentId = "commune:nhu-co:2024-1".parse().unwrap();
        assert!(!Genesis::new(&commune).is_structural(&theirs));
    }
    /// The record of `target` in a snapshot, as JSON (serde's view, made
    /// apart from the table's own accessors), and by the typed getter.
    fn record_of(survey: &Survey, target: &Target, field: &str) -> (serde_json::Value, Option<FieldValue>) {
        match (survey, target) {
            (Survey::Village(v), Target::Facts) => {
                (serde_json::to_value(&v.facts).unwrap(), v.facts.get(field))
            }
            (Survey::Village(v), Target::Household(h)) => {
                let hh = &v.households[h.as_str()];
                assert_eq!(hh.id, h.as_str());
                (serde_json::to_value(hh).unwrap(), hh.get(field))
            }
            (Survey::Commune(c), Target::Facts) => {
                (serde_json::to_value(&c.facts).unwrap(), c.facts.get(field))
            }
            (Survey::Commune(_), Target::Household(_)) => unreachable!(),
        }
    }

    #[test]
    fn every_field_of_the_table_round_trips_through_an_edit_into_the_typed_snapshot() {
        let village: DocumentId = "village:nhu-co-03:2024-1".parse().unwrap();
        let commune: DocumentId = "commune:nhu-co:2024-1".parse().unwrap();
        let hh = Target::Household("hh-001".parse().unwrap());
        let cases = [
            (&village, Target::Facts, Scope::Village),
            (&village, hh, Scope::Household),
            (&commune, Target::Facts, Scope::Commune),
        ];
        let mut seen = 0;
        for (id, target, scope) in cases {
            for field in scope.fields() {
                let mut doc = SurveyDocument::create(id.clone(), ActorId::from([3u8; 16]));
                let (edit, expected) = match field.kind {
                    FieldKind::Count => {
                        (Edit::set(target.clone(), field.name, FieldValue::Int(7)), FieldValue::Int(7))
                    }
                    FieldKind::Time => (
                        Edit::set(target.clone(), field.name, FieldValue::Int(1_700_000_000_123)),
                        FieldValue::Int(1_700_000_000_123),
                    ),
                    FieldKind::Bool => (
                        Edit::set(target.clone(), field.name, FieldValue::Bool(true)),
                        FieldValue::Bool(true),
                    ),
                    FieldKind::Text => (
                        Edit::set(target.clone(), field.name, FieldValue::Text("Lò Văn A".into())),
                        FieldValue::Text("Lò Văn A".into()),
                    ),
                    FieldKind::Counter => {
                        (Edit::increment(target.clone(), field.name, 3), FieldValue::Int(3))
                    }
                };
                // The record exists (genesis) before the edit, so the edit is the only difference.
                if let Target::Household(h) = &target {
                    doc.ensure_household(h).unwrap();
                }
                let before = doc.snapshot(None).unwrap();
                doc.apply(&[edit], 10).unwrap();
                let after = doc.snapshot(None).unwrap();
                let (json, typed) = record_of(&after, &target, field.name);
                assert_eq!(typed, Some(expected.clone()), "{}: typed getter", field.name);
                assert_eq!(json[field.name], expected.to_json(), "{}: the struct field", field.name);
                let (json_before, _) = record_of(&before, &target, field.name);
                let changed: Vec<&String> = json
                    .as_object()
                    .unwrap()
                    .iter()
                    .filter(|(k, v)| json_before.get(k.as_str()) != Some(v))
                    .map(|(k, _)| k)
                    .collect();
                assert_eq!(changed, [field.name], "only {} changed", field.name);
                seen += 1;
            }
        }
        assert_eq!(
            seen,
            VILLAGE_FIELDS_LEN + crate::schema::HOUSEHOLD_FIELDS.len() + crate::schema::COMMUNE_FIELDS.len()
        );
    }

    const VILLAGE_FIELDS_LEN: usize = crate::schema::VILLAGE_FIELDS.len();

    #[test]
    fn the_typed_records_hold_exactly_the_table_fields() {
        for (fields, json) in [
            (crate::schema::VILLAGE_FIELDS, serde_json::to_value(VillageFacts::default()).unwrap()),
            (crate::schema::HOUSEHOLD_FIELDS, serde_json::to_value(Household::default()).unwrap()),
            (crate::schema::COMMUNE_FIELDS, serde_json::to_value(CommuneFacts::default()).unwrap()),
        ] {
            let mut names: Vec<&str> =
                json.as_object().unwrap().keys().map(String::as_str).filter(|k| *k != "id").collect();
            let mut table: Vec<&str> = fields.iter().map(|f| f.name).collect();
            names.sort();
            table.sort();
            assert_eq!(names, table);
        }
        assert!(Scope::Household.field("head_name").unwrap().personal);
        assert_eq!(crate::schema::HOUSEHOLD_FIELDS.iter().filter(|f| f.personal).count(), 1);
    }

    #[test]
    fn a_record_that_does_not_fit_the_table_is_an_error_not_a_blank() {
        let id: DocumentId = "village:nhu-co-03:2024-1".parse().unwrap();
        let hh = Target::Household("hh-001".parse().unwrap());
        let mut doc = SurveyDocument::create(id.clone(), ActorId::from([3u8; 16]));
        doc.apply(&[Edit::set(hh.clone(), "members", FieldValue::Int(4))], 10).unwrap();
        let obj = doc.household_obj("hh-001").unwrap();
        let mut wrong = doc.clone();
        wrong
            .automerge_mut()
            .transact::<_, _, automerge::AutomergeError>(|tx| tx.put(&obj, "adults", "three"))
            .unwrap();
        match wrong.snapshot(None) {
            Err(DocumentError::Record {
                household,
                mismatch: RecordMismatch::WrongType { field, .. },
                ..
            }) => {
                assert_eq!((household.as_deref(), field.as_str()), (Some("hh-001"), "adults"));
            }
            other => panic!("expected a mismatch, got {other:?}"),
        }
        let mut unknown = doc.clone();
        unknown
            .automerge_mut()
            .transact::<_, _, automerge::AutomergeError>(|tx| tx.put(&obj, "goats", 3))
            .unwrap();
        assert!(matches!(
            unknown.snapshot(None),
            Err(DocumentError::Record { mismatch: RecordMismatch::UnknownField { .. }, .. })
        ));
        let mut nested = doc.clone();
        nested
            .automerge_mut()
            .transact::<_, _, automerge::AutomergeError>(|tx| {
                tx.put_object(&obj, "members", ObjType::Map).map(|_| ())
            })
            .unwrap();
        assert!(nested.snapshot(None).is_err());
        // What fits still reads whole.
        let Survey::Village(v) = doc.snapshot(None).unwrap() else { panic!("a village") };
        assert_eq!(v.households["hh-001"].members, Some(4));
    }
}
