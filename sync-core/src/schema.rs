//! The survey model's fields: what a village, a household and a commune may
//! hold, each field's type, and the consistency rules between fields.
//!
//! This table is the single source for validation, typed snapshots,
//! exports and the protocol documentation's field list: each field is
//! declared once, in the `records!` table below, which makes both its table row and its
//! field in the typed record (`VillageFacts`, `Household`, `CommuneFacts`).

use serde::{Deserialize, Serialize};

use crate::survey::FieldValue;

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

/// The Rust type a field of each kind is read into: plain fields may be
/// unset, counters always exist (created at 0 by the genesis).
macro_rules! slot_type {
    (Count) => { Option<i64> };
    (Time) => { Option<i64> };
    (Bool) => { Option<bool> };
    (Text) => { Option<String> };
    (Counter) => { i64 };
}

macro_rules! is_personal {
    () => {
        false
    };
    (personal) => {
        true
    };
}

/// Declares each record's fields once, giving both the field table (a
/// `&[Field]` constant) and the typed record struct with one Rust field per
/// table row, of the type its kind reads into; `from_record` fills it from
/// stored values and refuses any that do not fit.
macro_rules! records {
    ($(
        $(#[$table_meta:meta])*
        $table:ident;
        $(#[$struct_meta:meta])*
        $record:ident [$($(#[$extra_meta:meta])* $extra:ident: $extra_ty:ty),*] {
            $($(#[$field_meta:meta])* $field:ident: $kind:ident $($personal:ident)?,)*
        }
    )*) => {$(
        $(#[$table_meta])*
        pub const $table: &[Field] = &[$(Field {
            name: stringify!($field),
            kind: FieldKind::$kind,
            personal: is_personal!($($personal)?),
        },)*];

        $(#[$struct_meta])*
        #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(default)]
        pub struct $record {
            $($(#[$extra_meta])* pub $extra: $extra_ty,)*
            $($(#[$field_meta])* pub $field: slot_type!($kind),)*
        }

        impl $record {
            /// The field table this record is made from.
            pub const FIELDS: &'static [Field] = $table;

            /// The value of one field by its table name; `None` when unset
            /// or not a field of this record.
            pub fn get(&self, name: &str) -> Option<FieldValue> {
                match name {
                    $(stringify!($field) => Slot::value(&self.$field),)*
                    _ => None,
                }
            }

            /// The value of a whole-number field (count, time, counter).
            pub fn int(&self, name: &str) -> Option<i64> {
                match self.get(name) {
                    Some(FieldValue::Int(n)) => Some(n),
                    _ => None,
                }
            }

            /// The record holding exactly these stored values. A name outside
            /// the table, or a value of another type than its field's, is an
            /// error: nothing is dropped or blanked.
            pub fn from_record(
                values: impl IntoIterator<Item = (String, FieldValue)>,
            ) -> Result<Self, RecordMismatch> {
                let mut out = Self::default();
                for (name, value) in values {
                    match name.as_str() {
                        $(stringify!($field) => Slot::fill(&mut out.$field, stringify!($field), FieldKind::$kind, value)?,)*
                        _ => return Err(RecordMismatch::UnknownField { field: name }),
                    }
                }
                Ok(out)
            }
        }
    )*};
}

/// A stored value that does not fit the field table of its record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordMismatch {
    /// The record holds a name that is not one of its fields.
    #[error("{field:?} is not a field of this record")]
    UnknownField {
        /// The name found.
        field: String,
    },
    /// A field holds a value of another type than its kind's.
    #[error("{field} takes {expected}, but holds {value}")]
    WrongType {
        /// The field.
        field: String,
        /// What it takes.
        expected: &'static str,
        /// What it holds, as text.
        value: String,
    },
}

/// A Rust field of a record that holds one survey field.
trait Slot {
    fn value(&self) -> Option<FieldValue>;
    fn fill(&mut self, field: &str, kind: FieldKind, value: FieldValue) -> Result<(), RecordMismatch>;
}

fn wrong(field: &str, kind: FieldKind, value: &FieldValue) -> RecordMismatch {
    RecordMismatch::WrongType {
        field: field.to_owned(),
        expected: kind.expected(),
        value: format!("{value:?}"),
    }
}

impl Slot for Option<i64> {
    fn value(&self) -> Option<FieldValue> {
        self.map(FieldValue::Int)
    }
    fn fill(&mut self, field: &str, kind: FieldKind, value: FieldValue) -> Result<(), RecordMismatch> {
        match value {
            FieldValue::Int(n) => {
                *self = Some(n);
                Ok(())
            }
            other => Err(wrong(field, kind, &other)),
        }
    }
}

impl Slot for Option<bool> {
    fn value(&self) -> Option<FieldValue> {
        self.map(FieldValue::Bool)
    }
    fn fill(&mut self, field: &str, kind: FieldKind, value: FieldValue) -> Result<(), RecordMismatch> {
        match value {
            FieldValue::Bool(b) => {
                *self = Some(b);
                Ok(())
            }
            other => Err(wrong(field, kind, &other)),
        }
    }
}

impl Slot for Option<String> {
    fn value(&self) -> Option<FieldValue> {
        self.clone().map(FieldValue::Text)
    }
    fn fill(&mut self, field: &str, kind: FieldKind, value: FieldValue) -> Result<(), RecordMismatch> {
        match value {
            FieldValue::Text(s) => {
                *self = Some(s);
                Ok(())
            }
            other => Err(wrong(field, kind, &other)),
        }
    }
}

impl Slot for i64 {
    fn value(&self) -> Option<FieldValue> {
        Some(FieldValue::Int(*self))
    }
    fn fill(&mut self, field: &str, kind: FieldKind, value: FieldValue) -> Result<(), RecordMismatch> {
        match value {
            FieldValue::Int(n) => {
                *self = n;
                Ok(())
            }
            other => Err(wrong(field, kind, &other)),
        }
    }
}

records! {
    /// Facts about one village.
    VILLAGE_FIELDS;
    /// Facts about a village, typed.
    VillageFacts [] {
        /// The cultural house has an internet line.
        cultural_house_internet: Bool,
        /// A community digital technology team exists.
        digital_team: Bool,
        /// Members of that team.
        digital_team_members: Count,
        /// Security cameras seen (a counter).
        security_cameras: Counter,
    }

    /// Fields of one household.
    HOUSEHOLD_FIELDS;
    /// One household's answers, typed.
    Household [
        /// Household id (filled from the key; not a field of the record).
        id: String
    ] {
        /// Name of the head of household: personal data.
        head_name: Text personal,
        /// People in the household.
        members: Count,
        /// Members aged 15 or more.
        members_15_plus: Count,
        /// Adults.
        adults: Count,
        /// The household has fibre broadband.
        fibre_broadband: Bool,
        /// Adults with a smartphone.
        adults_with_smartphone: Count,
        /// Members aged 15 or more with an account at a bank or licensed institution.
        members_15_plus_with_account: Count,
        /// Members with an electronic health record.
        members_with_e_health_record: Count,
        /// Members who shop online.
        online_shoppers: Count,
        /// Accounts on the public service portal.
        public_service_accounts: Count,
        /// Members who used the public service portal.
        public_service_users: Count,
        /// A business household.
        business_household: Bool,
        /// It takes cashless (QR, e-wallet) payments.
        cashless_payment: Bool,
        /// QR payment codes issued (a counter).
        qr_codes_issued: Counter,
        /// Who surveyed it (surveyor or device name).
        surveyed_by: Text,
        /// When, in milliseconds since 1970.
        surveyed_at: Time,
    }

    /// Facts about one commune that belong to no village.
    COMMUNE_FIELDS;
    /// Facts that belong to a commune, not a village, typed.
    CommuneFacts [] {
        /// OCOP products listed on e-commerce platforms.
        ocop_products_online: Count,
        /// Cooperatives using production-diary software (e.g. FaceFarm).
        cooperatives_production_diary: Count,
    }
}

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
/// data-quality issue, never refused; the report leaves a household that
/// breaks one out of every indicator that reads the rule's fields.
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

impl PartRule {
    /// Whether the rule involves any of `fields`.
    pub fn touches(&self, fields: &[&str]) -> bool {
        fields.contains(&self.part) || fields.contains(&self.whole)
    }
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
