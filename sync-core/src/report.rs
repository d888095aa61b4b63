//! The indicators officers read: per commune, rolled up per district and
//! province, with completeness.
//!
//! **Invariant: roll-ups add raw numerators and denominators** from the
//! households and villages up; a percentage is computed last, never averaged.
//!
//! **Invariant: no share above 100 %, no negative count.** A household that
//! breaks a consistency rule (`schema::PART_RULES`, judged by
//! `validate::household_breaches`) is left out of every indicator that reads
//! one of the rule's fields; a counter below zero is counted as 0 where it
//! is summed. Each area says, per indicator, how many records were left out
//! or counted as 0, by rule, and which command lists them.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::ids::{DocumentId, Round};
use crate::registry::{PlaceKind, Registry};
use crate::survey::{Survey, SurveyDocument};
use crate::validate::{conflicts, data_quality, household_breaches, negative_rule};

/// A share: numerator over denominator, with the percentage when defined.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Ratio {
    /// Count that has the property.
    pub numerator: i64,
    /// Count it is a share of.
    pub denominator: i64,
    /// 100 × numerator / denominator, rounded to one decimal; `None` when the denominator is 0.
    pub percent: Option<f64>,
}

impl Ratio {
    fn of(numerator: i64, denominator: i64) -> Self {
        let percent =
            (denominator > 0).then(|| ((numerator as f64) * 1000.0 / (denominator as f64)).round() / 10.0);
        Self { numerator, denominator, percent }
    }
}

/// What the report did with a record whose stored figures it could not use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Treatment {
    /// Left out of the indicator: it breaks a consistency rule on a field the indicator reads.
    LeftOut,
    /// A counter below zero, counted as 0.
    CountedAsZero,
}

/// The kind of record an indicator reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Households.
    Household,
    /// Villages (their facts).
    Village,
}

/// How many records one rule kept out of an indicator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleCount {
    /// The rule, as `thonsync issues` names it (e.g. `adults_with_smartphone <= adults`).
    pub rule: String,
    /// Records that break it.
    pub records: i64,
}

/// The records one indicator of an area did not read as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeftOut {
    /// The indicator (a field name of [`Indicators`]).
    pub indicator: String,
    /// Left out, or counted as 0.
    pub treatment: Treatment,
    /// Households or villages.
    pub unit: Unit,
    /// How many records (each once, whatever rules it breaks).
    pub records: i64,
    /// By rule; a record breaking two rules is in both.
    pub rules: Vec<RuleCount>,
    /// The commands that list them, one per commune.
    pub see: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Withheld {
    treatment: Treatment,
    unit: Unit,
    records: i64,
    rules: BTreeMap<String, i64>,
    communes: BTreeSet<String>,
}

impl Withheld {
    fn merge(&mut self, o: Withheld) {
        self.records += o.records;
        for (rule, n) in o.rules {
            *self.rules.entry(rule).or_default() += n;
        }
        self.communes.extend(o.communes);
    }
}

/// The command that lists a commune's data-quality issues.
pub fn issues_command(commune: &str) -> String {
    format!("thonsync issues --commune {commune}")
}

/// Raw sums from which every indicator is computed; adds up across places.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    villages_expected: i64,
    villages_surveyed: i64,
    villages_digital_team: i64,
    villages_cultural_house_internet: i64,
    households_expected: i64,
    households_surveyed: i64,
    fibre_yes: i64,
    fibre_answered: i64,
    members: i64,
    members_e_health: i64,
    members_15_plus: i64,
    members_15_plus_account: i64,
    adults_for_smartphone: i64,
    adults_with_smartphone: i64,
    adults_for_shopping: i64,
    online_shoppers: i64,
    public_service_accounts: i64,
    public_service_users: i64,
    security_cameras: i64,
    business_households: i64,
    business_cashless: i64,
    qr_codes_issued: i64,
    ocop_products_online: i64,
    cooperatives_production_diary: i64,
    conflicts_open: i64,
    data_quality_issues: i64,
    withheld: BTreeMap<&'static str, Withheld>,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, o: Self) {
        for (indicator, w) in o.withheld {
            match self.withheld.get_mut(indicator) {
                Some(mine) => mine.merge(w),
                None => {
                    self.withheld.insert(indicator, w);
                }
            }
        }
        macro_rules! add { ($($f:ident),*) => { $( self.$f += o.$f; )* } }
        add!(
            villages_expected,
            villages_surveyed,
            villages_digital_team,
            villages_cultural_house_internet,
            households_expected,
            households_surveyed,
            fibre_yes,
            fibre_answered,
            members,
            members_e_health,
            members_15_plus,
            members_15_plus_account,
            adults_for_smartphone,
            adults_with_smartphone,
            adults_for_shopping,
            online_shoppers,
            public_service_accounts,
            public_service_users,
            security_cameras,
            business_households,
            business_cashless,
            qr_codes_issued,
            ocop_products_online,
            cooperatives_production_diary,
            conflicts_open,
            data_quality_issues
        );
    }
}

impl Tally {
    /// Adds one survey document's figures.
    ///
    /// A document whose records do not fit the survey model adds nothing
    /// and is an error.
    pub fn add_document(&mut self, doc: &SurveyDocument) -> Result<(), crate::error::DocumentError> {
        let survey = doc.snapshot(None)?;
        self.conflicts_open += conflicts(doc).len() as i64;
        self.data_quality_issues += data_quality(&survey).len() as i64;
        match survey {
            Survey::Commune(c) => {
                self.ocop_products_online += c.facts.ocop_products_online.unwrap_or(0);
                self.cooperatives_production_diary += c.facts.cooperatives_production_diary.unwrap_or(0);
            }
            Survey::Village(v) => {
                if !v.households.is_empty() || v.facts != Default::default() {
                    self.villages_surveyed += 1;
                }
                self.villages_digital_team += i64::from(v.facts.digital_team == Some(true));
                self.villages_cultural_house_internet +=
                    i64::from(v.facts.cultural_house_internet == Some(true));
                self.security_cameras +=
                    self.counter("security_cameras", Unit::Village, v.facts.security_cameras);
                for h in v.households.values() {
                    self.add_household(h);
                }
            }
        }
        Ok(())
    }

    /// A counter's value as summed: itself, or 0 (noted) when below zero.
    fn counter(&mut self, field: &'static str, unit: Unit, value: i64) -> i64 {
        if value >= 0 {
            return value;
        }
        self.withhold(field, Treatment::CountedAsZero, unit, [negative_rule(field)]);
        0
    }

    fn withhold(
        &mut self,
        indicator: &'static str,
        treatment: Treatment,
        unit: Unit,
        rules: impl IntoIterator<Item = String>,
    ) {
        let w = self.withheld.entry(indicator).or_insert_with(|| Withheld {
            treatment,
            unit,
            records: 0,
            rules: BTreeMap::new(),
            communes: BTreeSet::new(),
        });
        w.records += 1;
        for rule in rules {
            *w.rules.entry(rule).or_default() += 1;
        }
    }

    /// Adds one household, leaving it out of each indicator that reads a
    /// field of a consistency rule it breaks.
    fn add_household(&mut self, h: &crate::schema::Household) {
        let breaches: Vec<_> = household_breaches(h).map(|(rule, _, _)| rule).collect();
        // Whether the indicator may read the household: it breaks no rule on `fields`.
        let usable = |tally: &mut Self, indicator: &'static str, fields: &[&str]| {
            let broken: Vec<String> =
                breaches.iter().filter(|r| r.touches(fields)).map(|r| r.name.to_owned()).collect();
            if broken.is_empty() {
                return true;
            }
            tally.withhold(indicator, Treatment::LeftOut, Unit::Household, broken);
            false
        };
        self.households_surveyed += 1;
        if let Some(f) = h.fibre_broadband {
            self.fibre_answered += 1;
            self.fibre_yes += i64::from(f);
        }
        if let (Some(part), Some(whole)) = (h.members_with_e_health_record, h.members) {
            if usable(self, "people_with_e_health_record", &["members_with_e_health_record", "members"]) {
                self.members_e_health += part;
                self.members += whole;
            }
        }
        if let (Some(part), Some(whole)) = (h.members_15_plus_with_account, h.members_15_plus) {
            if usable(
                self,
                "people_15_plus_with_account",
                &["members_15_plus_with_account", "members_15_plus"],
            ) {
                self.members_15_plus_account += part;
                self.members_15_plus += whole;
            }
        }
        if let (Some(part), Some(whole)) = (h.adults_with_smartphone, h.adults) {
            if usable(self, "adults_with_smartphone", &["adults_with_smartphone", "adults"]) {
                self.adults_with_smartphone += part;
                self.adults_for_smartphone += whole;
            }
        }
        if let (Some(part), Some(whole)) = (h.online_shoppers, h.adults) {
            if usable(self, "people_shopping_online", &["online_shoppers", "adults"]) {
                self.online_shoppers += part;
                self.adults_for_shopping += whole;
            }
        }
        if let Some(n) = h.public_service_accounts {
            if usable(self, "public_service_accounts", &["public_service_accounts"]) {
                self.public_service_accounts += n;
            }
        }
        if let Some(n) = h.public_service_users {
            if usable(self, "public_service_users", &["public_service_users"]) {
                self.public_service_users += n;
            }
        }
        if h.business_household == Some(true) {
            self.business_households += 1;
            self.business_cashless += i64::from(h.cashless_payment == Some(true));
        }
        self.qr_codes_issued += self.counter("qr_codes_issued", Unit::Household, h.qr_codes_issued);
    }

    /// Names `commune` as where this tally's left-out records are listed.
    pub fn attribute_to(&mut self, commune: &str) {
        for w in self.withheld.values_mut() {
            w.communes.insert(commune.to_owned());
        }
    }

    /// Per indicator, the records not read as stored.
    pub fn left_out(&self) -> Vec<LeftOut> {
        self.withheld
            .iter()
            .map(|(indicator, w)| LeftOut {
                indicator: (*indicator).to_owned(),
                treatment: w.treatment,
                unit: w.unit,
                records: w.records,
                rules: w
                    .rules
                    .iter()
                    .map(|(rule, n)| RuleCount { rule: rule.clone(), records: *n })
                    .collect(),
                see: w.communes.iter().map(|c| issues_command(c)).collect(),
            })
            .collect()
    }

    /// The indicators these sums give.
    pub fn indicators(&self) -> Indicators {
        Indicators {
            villages_with_digital_team: Ratio::of(self.villages_digital_team, self.villages_expected),
            households_with_fibre_broadband: Ratio::of(self.fibre_yes, self.fibre_answered),
            people_15_plus_with_account: Ratio::of(self.members_15_plus_account, self.members_15_plus),
            adults_with_smartphone: Ratio::of(self.adults_with_smartphone, self.adults_for_smartphone),
            people_with_e_health_record: Ratio::of(self.members_e_health, self.members),
            people_shopping_online: Ratio::of(self.online_shoppers, self.adults_for_shopping),
            cultural_houses_with_internet: Ratio::of(
                self.villages_cultural_house_internet,
                self.villages_expected,
            ),
            public_service_accounts: self.public_service_accounts,
            public_service_users: self.public_service_users,
            security_cameras: self.security_cameras,
            business_households_cashless: Ratio::of(self.business_cashless, self.business_households),
            qr_codes_issued: self.qr_codes_issued,
            ocop_products_online: self.ocop_products_online,
            cooperatives_production_diary: self.cooperatives_production_diary,
        }
    }

    /// How complete the survey is.
    pub fn completeness(&self) -> Completeness {
        Completeness {
            villages_expected: self.villages_expected,
            villages_surveyed: self.villages_surveyed,
            households_expected: self.households_expected,
            households_surveyed: self.households_surveyed,
            conflicts_open: self.conflicts_open,
            data_quality_issues: self.data_quality_issues,
        }
    }
}

/// The indicators of `domain.md`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Indicators {
    pub villages_with_digital_team: Ratio,
    pub households_with_fibre_broadband: Ratio,
    pub people_15_plus_with_account: Ratio,
    pub adults_with_smartphone: Ratio,
    pub people_with_e_health_record: Ratio,
    pub people_shopping_online: Ratio,
    pub cultural_houses_with_internet: Ratio,
    pub public_service_accounts: i64,
    pub public_service_users: i64,
    pub security_cameras: i64,
    pub business_households_cashless: Ratio,
    pub qr_codes_issued: i64,
    pub ocop_products_online: i64,
    pub cooperatives_production_diary: i64,
}

/// Surveyed versus expected, and what still needs an administrator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Completeness {
    pub villages_expected: i64,
    pub villages_surveyed: i64,
    pub households_expected: i64,
    pub households_surveyed: i64,
    pub conflicts_open: i64,
    pub data_quality_issues: i64,
}

/// The report of one place.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AreaReport {
    /// Place id.
    pub place: String,
    /// Place name.
    pub name: String,
    /// Its level.
    pub kind: PlaceKind,
    /// The indicators.
    pub indicators: Indicators,
    /// How complete.
    pub completeness: Completeness,
    /// Per indicator, the records it did not read as stored (none: empty).
    pub left_out: Vec<LeftOut>,
}

/// A report for a place and round, with one row per commune under it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The round.
    pub round: String,
    /// The whole area asked for.
    pub total: AreaReport,
    /// Each commune in it.
    pub communes: Vec<AreaReport>,
}

/// Why a report cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The place is not in the registry.
    #[error("place {0:?} is not in the registry; see `thonsync registry show`")]
    UnknownPlace(String),
    /// Villages have no communes under them.
    #[error("place {0:?} is a village; report on its commune instead")]
    Village(String),
    /// A document's records do not fit the survey model.
    #[error(transparent)]
    Document(#[from] crate::error::DocumentError),
}

/// Builds the report for `place` (province, district or commune) in `round`,
/// reading each document through `load` (which returns `None` for documents
/// never synced).
pub fn build_report(
    registry: &Registry,
    place: &str,
    round: &Round,
    mut load: impl FnMut(&DocumentId) -> Option<SurveyDocument>,
) -> Result<Report, ReportError> {
    let top = registry.get(place).ok_or_else(|| ReportError::UnknownPlace(place.to_owned()))?;
    if top.kind == PlaceKind::Village {
        return Err(ReportError::Village(place.to_owned()));
    }
    let mut total = Tally::default();
    let mut communes = Vec::new();
    for commune in registry.communes_under(place) {
        let mut tally = Tally::default();
        for village in registry.children(&commune.id) {
            tally.villages_expected += 1;
            tally.households_expected += i64::from(village.expected_households.unwrap_or(0));
        }
        for id in registry.documents_for_commune(&commune.id, round) {
            if let Some(doc) = load(&id) {
                tally.add_document(&doc)?;
            }
        }
        tally.attribute_to(&commune.id);
        communes.push(area(commune.id.clone(), commune.name.clone(), PlaceKind::Commune, &tally));
        total += tally;
    }
    Ok(Report {
        round: round.to_string(),
        total: area(top.id.clone(), top.name.clone(), top.kind, &total),
        communes,
    })
}

fn area(place: String, name: String, kind: PlaceKind, tally: &Tally) -> AreaReport {
    AreaReport {
        place,
        name,
        kind,
        indicators: tally.indicators(),
        completeness: tally.completeness(),
        left_out: tally.left_out(),
    }
}

#[cfg(test)]
mod tests {
    use automerge::ActorId;

    use super::*;
    use crate::survey::{Edit, FieldValue, Target};

    fn round() -> Round {
        Round::new("2024-1").unwrap()
    }

    fn hh(id: &str) -> Target {
        Target::Household(id.parse().unwrap())
    }

    fn set(target: Target, field: &str, n: i64) -> Edit {
        Edit::set(target, field, FieldValue::Int(n))
    }

    /// Như Cố's report where village 03 holds `edits`.
    fn report(edits: &[Edit]) -> Report {
        let id: DocumentId = "village:nhu-co-03:2024-1".parse().unwrap();
        let mut doc = SurveyDocument::create(id.clone(), ActorId::from([1; 16]));
        doc.apply(edits, 1_000).unwrap();
        let mut doc = Some(doc);
        build_report(&Registry::sample_bac_kan(), "nhu-co", &round(), |d| {
            if *d == id {
                doc.take()
            } else {
                None
            }
        })
        .unwrap()
    }

    #[test]
    fn a_household_breaking_a_rule_is_left_out_of_the_indicators_reading_its_fields() {
        let r = report(&[
            // Sound: 3 adults, 2 with a smartphone, 4 members 15+, 1 with an account.
            set(hh("hh-01"), "members", 5),
            set(hh("hh-01"), "members_15_plus", 4),
            set(hh("hh-01"), "adults", 3),
            set(hh("hh-01"), "adults_with_smartphone", 2),
            set(hh("hh-01"), "members_15_plus_with_account", 1),
            // 9 smartphones among 2 adults, 8 accounts among 2 people 15+.
            set(hh("hh-02"), "members", 4),
            set(hh("hh-02"), "members_15_plus", 2),
            set(hh("hh-02"), "adults", 2),
            set(hh("hh-02"), "adults_with_smartphone", 9),
            set(hh("hh-02"), "members_15_plus_with_account", 8),
        ]);
        let i = &r.total.indicators;
        assert_eq!(i.adults_with_smartphone, Ratio::of(2, 3));
        assert_eq!(i.people_15_plus_with_account, Ratio::of(1, 4));
        for area in [&r.total, &r.communes[0]] {
            let phones = area.left_out.iter().find(|l| l.indicator == "adults_with_smartphone").unwrap();
            assert_eq!(
                (phones.treatment, phones.unit, phones.records),
                (Treatment::LeftOut, Unit::Household, 1)
            );
            assert_eq!(
                phones.rules,
                vec![RuleCount { rule: "adults_with_smartphone <= adults".into(), records: 1 }]
            );
            assert_eq!(phones.see, vec!["thonsync issues --commune nhu-co".to_owned()]);
            let accounts =
                area.left_out.iter().find(|l| l.indicator == "people_15_plus_with_account").unwrap();
            assert_eq!(accounts.rules[0].rule, "members_15_plus_with_account <= members_15_plus");
        }
        // Indicators that read none of the broken rules' fields keep the household.
        assert!(r.total.left_out.iter().all(|l| l.indicator != "people_with_e_health_record"));
        assert_eq!(r.total.completeness.households_surveyed, 2);
        assert_eq!(r.total.completeness.data_quality_issues, 2);
    }

    #[test]
    fn no_share_exceeds_one_hundred_percent_whatever_the_households_hold() {
        let fields = ["members", "members_15_plus", "adults", "adults_with_smartphone", "online_shoppers"];
        let mut edits = Vec::new();
        for (n, values) in
            [[1, 9, 2, 7, 3], [4, 3, 5, 0, 6], [2, 2, 2, 2, 2], [0, 0, 0, 1, 1]].iter().enumerate()
        {
            for (f, v) in fields.iter().zip(values) {
                edits.push(set(hh(&format!("hh-{n}")), f, *v));
            }
            edits.push(set(hh(&format!("hh-{n}")), "members_with_e_health_record", values[0] + 1));
        }
        let i = report(&edits).total.indicators;
        for ratio in [i.adults_with_smartphone, i.people_shopping_online, i.people_with_e_health_record] {
            assert!(ratio.numerator <= ratio.denominator, "{ratio:?}");
            assert!(ratio.percent.unwrap_or(0.0) <= 100.0, "{ratio:?}");
        }
    }

    #[test]
    fn a_counter_below_zero_counts_as_zero_and_says_so() {
        let r = report(&[
            Edit::increment(Target::Facts, "security_cameras", 3),
            Edit::increment(Target::Facts, "security_cameras", -50),
            Edit::increment(hh("hh-01"), "qr_codes_issued", -2),
            Edit::increment(hh("hh-02"), "qr_codes_issued", 4),
        ]);
        let i = &r.total.indicators;
        assert_eq!((i.security_cameras, i.qr_codes_issued), (0, 4));
        let cams = r.total.left_out.iter().find(|l| l.indicator == "security_cameras").unwrap();
        assert_eq!((cams.treatment, cams.unit, cams.records), (Treatment::CountedAsZero, Unit::Village, 1));
        assert_eq!(cams.rules[0].rule, "security_cameras >= 0");
        let qr = r.total.left_out.iter().find(|l| l.indicator == "qr_codes_issued").unwrap();
        assert_eq!((qr.treatment, qr.unit, qr.records), (Treatment::CountedAsZero, Unit::Household, 1));
        // Each clamp is a data-quality issue too.
        assert_eq!(r.total.completeness.data_quality_issues, 2);
    }
}
