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

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{
    ActorId, Automerge, Change, ChangeHash, ObjId, ObjType, ReadDoc, ScalarValue, Value as AmValue, ROOT,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{DocumentError, EditError};
use crate::ids::{DocumentId, DocumentKind, HouseholdId};
use crate::schema::{FieldKind, Scope, MAX_COUNT, MAX_TEXT_LEN};

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

fn at_zero() -> CommitOptions {
    CommitOptions::default().with_time(0)
}

/// A document holding exactly the genesis change of `id`.
fn genesis_doc(id: &DocumentId) -> Automerge {
    let mut doc = Automerge::new().with_actor(genesis_actor(id));
    doc.transact_with::<_, _, automerge::AutomergeError, _>(
        |_| at_zero(),
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
    .expect("genesis change on an empty document cannot fail");
    doc
}

/// Genesis changes already built, by (document, household): building one
/// takes a whole small document, and validation asks for them per change.
/// A pure function's results, so sharing them breaks no invariant.
fn memo_genesis(document: &DocumentId, household: &str, make: impl FnOnce() -> Change) -> Change {
    type Memo = std::sync::Mutex<std::collections::HashMap<(String, String), Change>>;
    static MEMO: std::sync::OnceLock<Memo> = std::sync::OnceLock::new();
    let memo = MEMO.get_or_init(Default::default);
    let key = (document.to_string(), household.to_owned());
    if let Some(c) = memo.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return c.clone();
    }
    let change = make();
    let mut map = memo.lock().unwrap_or_else(|e| e.into_inner());
    if map.len() >= 16_384 {
        map.clear();
    }
    map.insert(key, change.clone());
    change
}

/// The genesis change of a document: identical on every replica.
pub fn genesis_change(id: &DocumentId) -> Change {
    memo_genesis(id, "", || genesis_doc(id).get_last_local_change().expect("genesis exists"))
}

/// The genesis change of one household: identical on every replica.
pub fn household_genesis_change(id: &DocumentId, household: &str) -> Change {
    memo_genesis(id, &format!("/{household}"), || build_household_genesis(id, household))
}

fn build_household_genesis(id: &DocumentId, household: &str) -> Change {
    let mut doc = genesis_doc(id);
    doc.set_actor(household_actor(id, household));
    let households = match doc.get(ROOT, "households") {
        Ok(Some((_, obj))) => obj,
        _ => unreachable!("village genesis has households"),
    };
    doc.transact_with::<_, _, automerge::AutomergeError, _>(
        |_| at_zero(),
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
    .expect("household genesis cannot fail");
    doc.get_last_local_change().expect("household genesis exists")
}

/// Whether `change` is the genesis of `id` or of one of its households.
pub fn is_structural(id: &DocumentId, change: &Change) -> bool {
    if change.seq() != 1 || change.timestamp() != 0 {
        return false;
    }
    if change.actor_id() == &genesis_actor(id) {
        return change.hash() == genesis_change(id).hash();
    }
    let decoded = change.decode();
    match decoded.operations.first().map(|op| &op.key) {
        Some(automerge::legacy::Key::Map(household)) => {
            change.actor_id() == &household_actor(id, household)
                && change.hash() == household_genesis_change(id, household).hash()
        }
        _ => false,
    }
}

impl SurveyDocument {
    /// A new document holding only its genesis change, writing as `actor`.
    pub fn create(id: DocumentId, actor: ActorId) -> Self {
        let mut doc = genesis_doc(&id);
        doc.set_actor(actor);
        Self { id, doc }
    }

    /// An empty document (no genesis yet), to be filled by sync.
    pub fn empty(id: DocumentId, actor: ActorId) -> Self {
        Self { id, doc: Automerge::new().with_actor(actor) }
    }

    /// Wraps an automerge document that is known to belong to `id`.
    pub fn from_automerge(id: DocumentId, doc: Automerge) -> Self {
        Self { id, doc }
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
        let me = Self { id, doc };
        if !me.doc.is_empty() && !me.has_genesis() {
            return Err(DocumentError::WrongGenesis { document: me.id });
        }
        Ok(me)
    }

    /// The id of this document.
    pub fn id(&self) -> &DocumentId {
        &self.id
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
        self.doc.get_change_meta_by_hash(&genesis_change(&self.id).hash()).is_some()
    }

    fn ensure_genesis(&mut self) -> Result<(), EditError> {
        if !self.has_genesis() {
            self.doc.apply_changes([genesis_change(&self.id)])?;
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
            self.doc.apply_changes([household_genesis_change(&self.id, household.as_str())])?;
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

    /// The winning value of every field of one record.
    fn read_record(&self, obj: &ObjId, heads: Option<&[ChangeHash]>) -> BTreeMap<String, FieldValue> {
        let keys: Vec<String> = match heads {
            Some(h) => self.doc.keys_at(obj, h).collect(),
            None => self.doc.keys(obj).collect(),
        };
        let mut out = BTreeMap::new();
        for key in keys {
            let got = match heads {
                Some(h) => self.doc.get_at(obj, key.as_str(), h),
                None => self.doc.get(obj, key.as_str()),
            };
            if let Ok(Some((AmValue::Scalar(s), _))) = got {
                if let Some(v) = FieldValue::from_scalar(&s) {
                    out.insert(key, v);
                }
            }
        }
        out
    }

    /// A typed snapshot of the document now, or as it was at `heads`.
    pub fn snapshot(&self, heads: Option<&[ChangeHash]>) -> Survey {
        let facts_obj = self.obj(&ROOT, "facts");
        let facts = facts_obj.map(|o| self.read_record(&o, heads)).unwrap_or_default();
        match self.id.kind {
            DocumentKind::Commune => {
                Survey::Commune(CommuneSurvey { document: self.id.clone(), facts: from_record(facts) })
            }
            DocumentKind::Village => {
                let mut households = BTreeMap::new();
                if let Some(hobj) = self.households_obj() {
                    for hh in self.household_ids(heads) {
                        if let Some(obj) = self.obj(&hobj, &hh) {
                            let mut household: Household = from_record(self.read_record(&obj, heads));
                            household.id = hh.clone();
                            households.insert(hh, household);
                        }
                    }
                }
                Survey::Village(VillageSurvey {
                    document: self.id.clone(),
                    facts: from_record(facts),
                    households,
                })
            }
        }
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

fn from_record<T: serde::de::DeserializeOwned + Default>(record: BTreeMap<String, FieldValue>) -> T {
    let map: serde_json::Map<String, serde_json::Value> =
        record.into_iter().map(|(k, v)| (k, v.to_json())).collect();
    serde_json::from_value(serde_json::Value::Object(map)).unwrap_or_default()
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

/// Facts about a village.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct VillageFacts {
    /// The cultural house has an internet line.
    pub cultural_house_internet: Option<bool>,
    /// A community digital technology team exists.
    pub digital_team: Option<bool>,
    /// Members of that team.
    pub digital_team_members: Option<i64>,
    /// Security cameras seen (a counter).
    pub security_cameras: i64,
}

/// One household's answers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[allow(missing_docs)]
pub struct Household {
    /// Household id (filled from the key).
    pub id: String,
    /// Name of the head of household: personal data.
    pub head_name: Option<String>,
    pub members: Option<i64>,
    pub members_15_plus: Option<i64>,
    pub adults: Option<i64>,
    pub fibre_broadband: Option<bool>,
    pub adults_with_smartphone: Option<i64>,
    pub members_15_plus_with_account: Option<i64>,
    pub members_with_e_health_record: Option<i64>,
    pub online_shoppers: Option<i64>,
    pub public_service_accounts: Option<i64>,
    pub public_service_users: Option<i64>,
    pub business_household: Option<bool>,
    pub cashless_payment: Option<bool>,
    /// QR payment codes issued (a counter).
    pub qr_codes_issued: i64,
    /// Who surveyed it (surveyor or device name).
    pub surveyed_by: Option<String>,
    /// When, in milliseconds since 1970.
    pub surveyed_at: Option<i64>,
}

/// Commune-level facts of one round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommuneSurvey {
    /// Which document this is.
    pub document: DocumentId,
    /// The facts.
    pub facts: CommuneFacts,
}

/// Facts that belong to a commune, not a village.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CommuneFacts {
    /// OCOP products listed on e-commerce platforms.
    pub ocop_products_online: Option<i64>,
    /// Cooperatives using production-diary software (e.g. FaceFarm).
    pub cooperatives_production_diary: Option<i64>,
}
