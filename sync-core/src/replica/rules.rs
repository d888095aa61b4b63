//! The consistency rules an edit would break, said in the surveyor's
//! language before anything is written (`schema::PART_RULES`, judged by
//! `validate::data_quality`). The CLI device and the mobile crate both
//! refuse an edit with these words.

use crate::ids::HouseholdId;
use crate::survey::{Survey, Target};
use crate::validate::{data_quality, DataQualityIssue};

use super::error::{Lang, Text};

/// The breaches `after` has that `before` did not (same rule, same record):
/// what an edit would break.
pub fn new_breaches(before: &Survey, after: &Survey) -> Vec<DataQualityIssue> {
    let old = data_quality(before);
    data_quality(after)
        .into_iter()
        .filter(|i| !old.iter().any(|o| o.rule == i.rule && o.household == i.household))
        .collect()
}

/// The current value of a field in a snapshot (as JSON), if set.
pub fn current(survey: &serde_json::Value, target: &Target, field: &str) -> Option<serde_json::Value> {
    let record = match target {
        Target::Facts => survey.get("facts"),
        Target::Household(h) => survey.get("households").and_then(|hs| hs.get(h.as_str())),
    }?;
    record.get(field).filter(|v| !v.is_null()).cloned()
}

/// A breach the surveyor's own edit would make.
pub fn breach_message(issue: &DataQualityIssue, after: &serde_json::Value, lang: Lang) -> String {
    let place = match (&issue.household, lang) {
        (Some(h), Lang::En) => format!("household {h}: "),
        (Some(h), Lang::Vi) => format!("hộ {h}: "),
        (None, _) => String::new(),
    };
    let what = breach_words(issue, after, lang);
    match lang {
        Lang::En => format!("{place}{what} (rule {}); nothing was written", issue.rule),
        Lang::Vi => format!("{place}{what} (quy tắc {}); chưa ghi gì", issue.rule),
    }
}

/// [`breach_message`] in both languages.
pub fn breach_text(issue: &DataQualityIssue, after: &serde_json::Value) -> Text {
    Text::new(breach_message(issue, after, Lang::En), breach_message(issue, after, Lang::Vi))
}

/// What a breach is, in words of `lang`, with the values `survey` (a
/// snapshot as JSON) holds: `adults (6) cannot be more than members (5)`.
pub fn breach_words(issue: &DataQualityIssue, survey: &serde_json::Value, lang: Lang) -> String {
    let target = match &issue.household {
        Some(h) => HouseholdId::new(h.as_str()).map(Target::Household).unwrap_or(Target::Facts),
        None => Target::Facts,
    };
    let value = |f: &str| current(survey, &target, f).map(|v| v.to_string()).unwrap_or_else(|| "—".into());
    match issue.fields.as_slice() {
        [single] => match lang {
            Lang::En => format!("{single} would add up to {}, below 0", value(single)),
            Lang::Vi => format!("{single} sẽ thành {}, nhỏ hơn 0", value(single)),
        },
        [part, whole] if part == "digital_team_members" => match lang {
            Lang::En => format!("{part} is {} but {whole} is no: answer {whole}=yes first", value(part)),
            Lang::Vi => format!("{part} là {} nhưng {whole} là không: hãy ghi {whole}=có trước", value(part)),
        },
        [part, whole, ..] => match lang {
            Lang::En => format!("{part} ({}) cannot be more than {whole} ({})", value(part), value(whole)),
            Lang::Vi => format!("{part} ({}) không được lớn hơn {whole} ({})", value(part), value(whole)),
        },
        [] => issue.detail.clone(),
    }
}
