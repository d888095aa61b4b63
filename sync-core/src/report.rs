//! The indicators officers read: per commune, rolled up per district and
//! province, with completeness.
//!
//! **Invariant: roll-ups add raw numerators and denominators** from the
//! households and villages up; a percentage is computed last, never averaged.

use serde::{Deserialize, Serialize};

use crate::ids::{DocumentId, Round};
use crate::registry::{PlaceKind, Registry};
use crate::survey::{Survey, SurveyDocument};
use crate::validate::{conflicts, data_quality};

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

/// Raw sums from which every indicator is computed; adds up across places.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, o: Self) {
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
                self.security_cameras += v.facts.security_cameras;
                for h in v.households.values() {
                    self.households_surveyed += 1;
                    if let Some(f) = h.fibre_broadband {
                        self.fibre_answered += 1;
                        self.fibre_yes += i64::from(f);
                    }
                    if let (Some(part), Some(whole)) = (h.members_with_e_health_record, h.members) {
                        self.members_e_health += part;
                        self.members += whole;
                    }
                    if let (Some(part), Some(whole)) = (h.members_15_plus_with_account, h.members_15_plus) {
                        self.members_15_plus_account += part;
                        self.members_15_plus += whole;
                    }
                    if let (Some(part), Some(whole)) = (h.adults_with_smartphone, h.adults) {
                        self.adults_with_smartphone += part;
                        self.adults_for_smartphone += whole;
                    }
                    if let (Some(part), Some(whole)) = (h.online_shoppers, h.adults) {
                        self.online_shoppers += part;
                        self.adults_for_shopping += whole;
                    }
                    self.public_service_accounts += h.public_service_accounts.unwrap_or(0);
                    self.public_service_users += h.public_service_users.unwrap_or(0);
                    if h.business_household == Some(true) {
                        self.business_households += 1;
                        self.business_cashless += i64::from(h.cashless_payment == Some(true));
                    }
                    self.qr_codes_issued += h.qr_codes_issued;
                }
            }
        }
        Ok(())
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
        total += tally;
        communes.push(area(commune.id.clone(), commune.name.clone(), PlaceKind::Commune, &tally));
    }
    Ok(Report {
        round: round.to_string(),
        total: area(top.id.clone(), top.name.clone(), top.kind, &total),
        communes,
    })
}

fn area(place: String, name: String, kind: PlaceKind, tally: &Tally) -> AreaReport {
    AreaReport { place, name, kind, indicators: tally.indicators(), completeness: tally.completeness() }
}
