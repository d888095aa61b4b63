//! The survey model's fields: what a village, a household and a commune may
//! hold, each field's type, and the consistency rules between fields.
//!
//! This table is the single source for validation, typed snapshots,
//! exports and the protocol documentation's field list.

use serde::{Deserialize, Serialize};

/// The type of one survey field, and how it changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    /// A whole number ≥ 0, written with `put` (last writer wins, clashes reported).
    Count,
    /// True or false.
    Bool,
    /// Free text, at most [`MAX_TEXT_LEN`] characters.
    Text,
    /// A timestamp in milliseconds since the Unix epoch.
    Time,
    /// A counter: created once by the deterministic genesis, changed only by
    /// increments, so concurrent additions add up.
    Counter,
}

impl FieldKind {
    /// What a value of this kind looks like, for error messages.
    pub fn expected(self) -> &'static str {
        match self {
            FieldKind::Count => "a whole number >= 0",
            FieldKind::Bool => "true or false",
            FieldKind::Text => "text of at most 200 characters",
            FieldKind::Time => "a time in milliseconds since 1970",
            FieldKind::Counter => "a counter changed by increments",
        }
    }
}

/// Longest text value accepted.
pub const MAX_TEXT_LEN: usize = 200;
/// Largest count accepted: far above any household or village figure.
pub const MAX_COUNT: i64 = 1_000_000;

/// One field of the survey model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// Name as stored in the document and shown in exports.
    pub name: &'static str,
    /// Its type.
    pub kind: FieldKind,
    /// Personal data, left out of exports unless asked for.
    pub personal: bool,
}

const fn f(name: &'static str, kind: FieldKind) -> Field {
    Field { name, kind, personal: false }
}

/// Facts about one village.
pub const VILLAGE_FIELDS: &[Field] = &[
    f("cultural_house_internet", FieldKind::Bool),
    f("digital_team", FieldKind::Bool),
    f("digital_team_members", FieldKind::Count),
    f("security_cameras", FieldKind::Counter),
];

/// Fields of one household.
pub const HOUSEHOLD_FIELDS: &[Field] = &[
    Field { name: "head_name", kind: FieldKind::Text, personal: true },
    f("members", FieldKind::Count),
    f("members_15_plus", FieldKind::Count),
    f("adults", FieldKind::Count),
    f("fibre_broadband", FieldKind::Bool),
    f("adults_with_smartphone", FieldKind::Count),
    f("members_15_plus_with_account", FieldKind::Count),
    f("members_with_e_health_record", FieldKind::Count),
    f("online_shoppers", FieldKind::Count),
    f("public_service_accounts", FieldKind::Count),
    f("public_service_users", FieldKind::Count),
    f("business_household", FieldKind::Bool),
    f("cashless_payment", FieldKind::Bool),
    f("qr_codes_issued", FieldKind::Counter),
    f("surveyed_by", FieldKind::Text),
    f("surveyed_at", FieldKind::Time),
];

/// Facts about one commune that belong to no village.
pub const COMMUNE_FIELDS: &[Field] =
    &[f("ocop_products_online", FieldKind::Count), f("cooperatives_production_diary", FieldKind::Count)];

/// Where a field lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// `facts` of a village document.
    Village,
    /// One household of a village document.
    Household,
    /// `facts` of a commune document.
    Commune,
}

impl Scope {
    /// The fields of this scope.
    pub fn fields(self) -> &'static [Field] {
        match self {
            Scope::Village => VILLAGE_FIELDS,
            Scope::Household => HOUSEHOLD_FIELDS,
            Scope::Commune => COMMUNE_FIELDS,
        }
    }
    /// Looks a field up by name.
    pub fn field(self, name: &str) -> Option<&'static Field> {
        self.fields().iter().find(|f| f.name == name)
    }
    /// A human name for error messages.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Village => "village facts",
            Scope::Household => "a household",
            Scope::Commune => "commune facts",
        }
    }
    /// The field names, comma separated, for error messages.
    pub fn known(self) -> String {
        self.fields().iter().map(|f| f.name).collect::<Vec<_>>().join(", ")
    }
}

/// A rule that a merged document should keep: `part ≤ whole` on one record.
///
/// Two valid concurrent edits can break such a rule (one surveyor lowers
/// `members`, another raises `adults`), so a breach is reported as a
/// data-quality issue, never refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartRule {
    /// Rule name shown to administrators.
    pub name: &'static str,
    /// Where the fields are.
    pub scope: Scope,
    /// The field that must not exceed `whole`.
    pub part: &'static str,
    /// The field it is part of.
    pub whole: &'static str,
}

const fn r(name: &'static str, part: &'static str, whole: &'static str) -> PartRule {
    PartRule { name, scope: Scope::Household, part, whole }
}

/// Every consistency rule of the model.
pub const PART_RULES: &[PartRule] = &[
    r("members_15_plus <= members", "members_15_plus", "members"),
    r("adults <= members_15_plus", "adults", "members_15_plus"),
    r("adults <= members", "adults", "members"),
    r("adults_with_smartphone <= adults", "adults_with_smartphone", "adults"),
    r("members_15_plus_with_account <= members_15_plus", "members_15_plus_with_account", "members_15_plus"),
    r("members_with_e_health_record <= members", "members_with_e_health_record", "members"),
    r("online_shoppers <= adults", "online_shoppers", "adults"),
    r("public_service_users <= public_service_accounts", "public_service_users", "public_service_accounts"),
];
