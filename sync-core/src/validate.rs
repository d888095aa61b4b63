//! Rules on survey data: type rules that refuse an incoming change, and
//! consistency rules whose breaches are reported as data-quality issues.
//!
//! **Invariant: type rules are judged per change, op by op**, not on the
//! merged state, so a bad value that a later change in the same upload
//! overwrites is still refused (it would otherwise live on in history).

use automerge::legacy::{Key, ObjectId, OpType};
use automerge::{Change, ObjType, Prop, ReadDoc, ROOT};
use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::ids::DocumentId;
use crate::schema::{FieldKind, Household, PartRule, Scope, PART_RULES};
use crate::survey::{FieldValue, Survey, SurveyDocument};

/// Why an incoming change was refused: names the document, record, field and rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{document}{}{}: {message} (rule: {rule})",
    household.as_ref().map(|h| format!(", household {h}")).unwrap_or_default(),
    field.as_ref().map(|f| format!(", field {f}")).unwrap_or_default())]
pub struct RuleBreach {
    /// The document the change was for.
    pub document: DocumentId,
    /// The household, when the change touched one.
    pub household: Option<String>,
    /// The field, when one is to blame.
    pub field: Option<String>,
    /// Short machine name of the rule.
    pub rule: String,
    /// What was wrong, for a person.
    pub message: String,
}

/// Where an op lands in the document layout.
#[derive(Clone)]
enum Place {
    Root,
    Households,
    Record { scope: Scope, household: Option<String> },
    Elsewhere,
}

fn locate(doc: &SurveyDocument, obj: &ObjectId) -> Place {
    let am = doc.automerge();
    let ObjectId::Id(op) = obj else { return Place::Root };
    // No actor index: automerge looks the actor up (and finds none for an
    // object this document does not hold).
    let exid = automerge::ObjId::Id(op.0, op.1.clone(), usize::MAX);
    let Ok(parents) = am.parents(&exid) else { return Place::Elsewhere };
    let path: Vec<_> = parents.collect();
    let key = |i: usize| match path.get(i).map(|p| &p.prop) {
        Some(Prop::Map(k)) => Some(k.clone()),
        _ => None,
    };
    let facts_scope = match doc.id().kind {
        crate::ids::DocumentKind::Village => Scope::Village,
        crate::ids::DocumentKind::Commune => Scope::Commune,
    };
    match (path.len(), key(0).as_deref(), key(1).as_deref()) {
        (1, Some("facts"), _) => Place::Record { scope: facts_scope, household: None },
        (1, Some("households"), _) => Place::Households,
        (2, Some(hh), Some("households")) if path[1].obj == ROOT => {
            Place::Record { scope: Scope::Household, household: Some(hh.to_owned()) }
        }
        _ => Place::Elsewhere,
    }
}

/// Checks one change, already applied to `doc`, against the type rules.
pub fn check_change(doc: &SurveyDocument, change: &Change) -> Result<(), RuleBreach> {
    check_change_among(doc, change, &HashSet::new())
}

/// [`check_change`], told the record objects of households whose genesis
/// change `doc` holds (as a hub knows them from the genesis changes it has
/// just recognised): an op on one of those is located without walking the
/// document, the costly part of the check. The household's id is looked up
/// only if the change breaks a rule.
pub fn check_change_among(
    doc: &SurveyDocument,
    change: &Change,
    households: &HashSet<ObjectId>,
) -> Result<(), RuleBreach> {
    let id = doc.id();
    let breach = |household: Option<String>, field: Option<String>, rule: &str, message: String| RuleBreach {
        document: id.clone(),
        household,
        field,
        rule: rule.to_owned(),
        message,
    };
    if change.hash() == doc.genesis().hash() {
        return Ok(());
    }
    let expanded = change.decode();
    // Most ops of a change write to one or two records: look each up once.
    let mut places: Vec<(&ObjectId, Place)> = Vec::new();
    for op in &expanded.operations {
        let key = match &op.key {
            Key::Map(k) => k.to_string(),
            Key::Seq(_) => {
                return Err(breach(None, None, "no_lists", "the survey model has no lists".into()))
            }
        };
        let place = match places.iter().find(|(obj, _)| *obj == &op.obj) {
            Some((_, place)) => place.clone(),
            None => {
                let place = if households.contains(&op.obj) {
                    Place::Record { scope: Scope::Household, household: None }
                } else {
                    locate(doc, &op.obj)
                };
                places.push((&op.obj, place.clone()));
                place
            }
        };
        match place {
            Place::Root => {
                return Err(breach(
                    None,
                    Some(key),
                    "identity_fixed",
                    "the document's identity (schema, kind, place, round) is written only by its genesis"
                        .into(),
                ))
            }
            Place::Households => {
                let genuine = doc.genesis().household_of(change).as_deref() == Some(key.as_str());
                if genuine {
                    return Ok(());
                }
                return Err(breach(
                    Some(key),
                    None,
                    "household_genesis",
                    "households are created only by their deterministic genesis change".into(),
                ));
            }
            Place::Elsewhere => {
                return Err(breach(
                    None,
                    Some(key),
                    "unknown_object",
                    "the change writes to an object outside the survey layout".into(),
                ))
            }
            Place::Record { scope, household } => {
                let fail = |rule: &str, message: String| {
                    // A household known by its record object alone is named now.
                    let household = household.clone().or_else(|| match locate(doc, &op.obj) {
                        Place::Record { household, .. } => household,
                        _ => None,
                    });
                    Err(breach(household, Some(key.clone()), rule, message))
                };
                let Some(field) = scope.field(&key) else {
                    return fail(
                        "unknown_field",
                        format!(
                            "{key:?} is not a field of {}; known fields: {}",
                            scope.name(),
                            scope.known()
                        ),
                    );
                };
                match (&op.action, field.kind) {
                    (OpType::Increment(_), FieldKind::Counter) => {}
                    (OpType::Increment(_), _) => {
                        return fail(
                            "not_a_counter",
                            format!("{key} is not a counter and cannot be incremented"),
                        )
                    }
                    (_, FieldKind::Counter) => {
                        return fail(
                            "counter_only_increments",
                            format!("{key} is a counter: only increments are accepted"),
                        )
                    }
                    (OpType::Delete, _) => {}
                    (OpType::Put(value), kind) => {
                        let ok = FieldValue::from_scalar(value)
                            .filter(|_| !matches!(value, automerge::ScalarValue::Counter(_)))
                            .map(|v| v.check(&key, kind).is_ok())
                            .unwrap_or(false);
                        if !ok {
                            return fail("type", format!("{key} takes {}, got {value}", kind.expected()));
                        }
                    }
                    (OpType::Make(t), _) => {
                        return fail(
                            "no_nested_objects",
                            format!("{key} takes a plain value, not a {t:?} object"),
                        )
                    }
                    _ => return fail("no_marks", "marks are not part of the survey model".into()),
                }
            }
        }
    }
    Ok(())
}

/// A breach of a consistency rule in a merged document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataQualityIssue {
    /// Where.
    pub document: DocumentId,
    /// Which household, for household rules.
    pub household: Option<String>,
    /// The fields involved, `part` first.
    pub fields: Vec<String>,
    /// The rule, e.g. `adults <= members`.
    pub rule: String,
    /// What the values are, for a person.
    pub detail: String,
}

/// Every consistency breach in a merged survey.
pub fn data_quality(survey: &Survey) -> Vec<DataQualityIssue> {
    let mut out = Vec::new();
    match survey {
        Survey::Village(v) => {
            let doc = &v.document;
            if v.facts.digital_team == Some(false) && v.facts.digital_team_members.unwrap_or(0) > 0 {
                out.push(DataQualityIssue {
                    document: doc.clone(),
                    household: None,
                    fields: vec!["digital_team_members".into(), "digital_team".into()],
                    rule: "digital_team_members > 0 needs digital_team".into(),
                    detail: format!(
                        "digital_team is false but digital_team_members is {}",
                        v.facts.digital_team_members.unwrap_or(0)
                    ),
                });
            }
            if v.facts.security_cameras < 0 {
                out.push(negative(doc, None, "security_cameras", v.facts.security_cameras));
            }
            for (id, hh) in &v.households {
                for (rule, part, whole) in household_breaches(hh) {
                    out.push(DataQualityIssue {
                        document: doc.clone(),
                        household: Some(id.clone()),
                        fields: vec![rule.part.into(), rule.whole.into()],
                        rule: rule.name.into(),
                        detail: format!("{} is {part} but {} is {whole}", rule.part, rule.whole),
                    });
                }
                if hh.qr_codes_issued < 0 {
                    out.push(negative(doc, Some(id), "qr_codes_issued", hh.qr_codes_issued));
                }
            }
        }
        Survey::Commune(_) => {}
    }
    out
}

/// The household rules one household breaks, with the part's and the
/// whole's values: the one judgement both `issues` and the report use.
pub fn household_breaches(hh: &Household) -> impl Iterator<Item = (&'static PartRule, i64, i64)> + '_ {
    PART_RULES.iter().filter(|r| r.scope == Scope::Household).filter_map(|rule| {
        match (hh.int(rule.part), hh.int(rule.whole)) {
            (Some(part), Some(whole)) if part > whole => Some((rule, part, whole)),
            _ => None,
        }
    })
}

/// The rule a counter below zero breaks, as `issues` names it.
pub fn negative_rule(field: &str) -> String {
    format!("{field} >= 0")
}

fn negative(doc: &DocumentId, household: Option<&String>, field: &str, value: i64) -> DataQualityIssue {
    DataQualityIssue {
        document: doc.clone(),
        household: household.cloned(),
        fields: vec![field.into()],
        rule: negative_rule(field),
        detail: format!("{field} adds up to {value}; the report counts it as 0"),
    }
}

/// One field with concurrent values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conflict {
    /// Where.
    pub document: DocumentId,
    /// Which household, if any.
    pub household: Option<String>,
    /// The field.
    pub field: String,
    /// The value every replica shows.
    pub shown: Option<FieldValue>,
    /// Every concurrent value, the shown one first.
    pub candidates: Vec<Candidate>,
}

/// One of a conflict's concurrent values and who wrote it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// The value (None for a value no rule allows).
    pub value: Option<FieldValue>,
    /// The actor (replica) that wrote it, hex.
    pub actor: String,
    /// When its change was made, ms since 1970.
    pub time: i64,
    /// The change that wrote it, hex.
    pub change: String,
}

/// Every field of the document whose concurrent values differ.
pub fn conflicts(doc: &SurveyDocument) -> Vec<Conflict> {
    let am = doc.automerge();
    let mut out = Vec::new();
    for (target, obj) in doc.records() {
        for key in am.keys(&obj) {
            let Ok(all) = am.get_all(&obj, key.as_str()) else { continue };
            if all.len() < 2 {
                continue;
            }
            let winner = am.get(&obj, key.as_str()).ok().flatten().map(|(_, id)| id);
            let mut all = all;
            all.sort_by_key(|(_, id)| Some(id) != winner.as_ref());
            let candidates: Vec<Candidate> = all
                .iter()
                .map(|(value, opid)| {
                    let value = match value {
                        automerge::Value::Scalar(s) => FieldValue::from_scalar(s),
                        automerge::Value::Object(ObjType::Map) | automerge::Value::Object(_) => None,
                    };
                    let (actor, time, change) = match am.hash_for_opid(opid) {
                        Some(h) => {
                            let meta = am.get_change_meta_by_hash(&h);
                            (
                                meta.as_ref().map(|c| c.actor.to_hex_string()).unwrap_or_default(),
                                meta.as_ref().map(|c| c.timestamp).unwrap_or_default(),
                                h.to_string(),
                            )
                        }
                        None => (String::new(), 0, String::new()),
                    };
                    Candidate { value, actor, time, change }
                })
                .collect();
            let first = &candidates[0].value;
            if candidates.iter().all(|c| &c.value == first) {
                continue;
            }
            out.push(Conflict {
                document: doc.id().clone(),
                household: match &target {
                    crate::survey::Target::Household(h) => Some(h.to_string()),
                    crate::survey::Target::Facts => None,
                },
                field: key.clone(),
                shown: first.clone(),
                candidates,
            });
        }
    }
    out
}
