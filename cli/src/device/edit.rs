//! Checks a surveyor's edit before anything is written, in the surveyor's
//! language: values read by their field's type with the allowed range named,
//! values that are already there (nothing to do), household ids that look
//! like a typo of an existing one, and consistency rules the edit would break
//! (`sync_core::schema::PART_RULES`, checked by `sync_core::validate`).

use serde_json::Value;
use sync_core::replica::rules;
use sync_core::schema::{Field, FieldKind, MAX_COUNT, MAX_TEXT_LEN};
use sync_core::survey::{FieldValue, Target};
use sync_core::validate::DataQualityIssue;

use crate::admin::text::Lang;
use crate::admin::time;
use crate::exit::{failure, EXIT_DATA_REFUSED, EXIT_USAGE};

/// A whole number with thousands separators: `1,000,000` (English) or
/// `1.000.000` (Vietnamese).
pub fn grouped(n: i64, lang: Lang) -> String {
    let sep = lang.t(",", ".");
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push_str(sep);
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// Reads a value typed by a person for `field`; a wrong one is refused
/// ([`EXIT_DATA_REFUSED`]) with the range or the form it must have. Times
/// are read as dates (`2024-03-05 14:30`, Vietnam time unless `utc`; a
/// date alone is the start of that day).
pub fn parse_value(field: &Field, raw: &str, lang: Lang, utc: bool) -> anyhow::Result<FieldValue> {
    let name = field.name;
    let refused = |en: String, vi: String| failure(EXIT_DATA_REFUSED, if lang == Lang::Vi { vi } else { en });
    match field.kind {
        FieldKind::Counter => Err(failure(
            EXIT_USAGE,
            match lang {
                Lang::En => {
                    format!("{name} is a counter: add to it with `thonsync device add VILLAGE {name} N`")
                }
                Lang::Vi => format!("{name} là bộ đếm: cộng thêm bằng `thonsync device add THÔN {name} N`"),
            },
        )),
        FieldKind::Count => match raw.trim().parse::<i64>() {
            Ok(n) if (0..=MAX_COUNT).contains(&n) => Ok(FieldValue::Int(n)),
            _ => Err(refused(
                format!(
                    "{name} must be a whole number between 0 and {}, not {raw:?}",
                    grouped(MAX_COUNT, Lang::En)
                ),
                format!(
                    "{name} phải là số nguyên từ 0 đến {}, không phải {raw:?}",
                    grouped(MAX_COUNT, Lang::Vi)
                ),
            )),
        },
        FieldKind::Bool => FieldValue::parse(name, FieldKind::Bool, raw).map_err(|_| {
            refused(
                format!("{name} takes yes or no (có / không), not {raw:?}"),
                format!("{name} chỉ nhận có hoặc không (yes / no), không phải {raw:?}"),
            )
        }),
        FieldKind::Text => {
            let n = raw.chars().count();
            if n <= MAX_TEXT_LEN {
                Ok(FieldValue::Text(raw.to_owned()))
            } else {
                Err(refused(
                    format!("{name} takes text of at most {MAX_TEXT_LEN} characters, not {n}"),
                    format!("{name} chỉ nhận văn bản tối đa {MAX_TEXT_LEN} ký tự, không phải {n}"),
                ))
            }
        }
        FieldKind::Time => match time::parse_start(raw, utc) {
            Some(ms) if ms >= 0 => Ok(FieldValue::Int(ms)),
            _ => Err(refused(
                format!("{name} takes a date and time such as 2024-03-05 or '2024-03-05 14:30', not {raw:?}"),
                format!("{name} nhận ngày giờ dạng 2024-03-05 hoặc '2024-03-05 14:30', không phải {raw:?}"),
            )),
        },
    }
}

/// The value `field` has now in `target` of a snapshot (`None` when unset).
pub fn current(survey: &Value, target: &Target, field: &str) -> Option<Value> {
    rules::current(survey, target, field)
}

/// The replica's language for `lang`.
fn replica_lang(lang: Lang) -> sync_core::replica::Lang {
    match lang {
        Lang::En => sync_core::replica::Lang::En,
        Lang::Vi => sync_core::replica::Lang::Vi,
    }
}

/// Household ids in `existing` that `new` looks like a typo of: the same
/// once case, separators and leading zeros are ignored (`hh-5`, `hh-05`,
/// `HH_005`), or one edit apart with the same numbers (`hb-012`, `hh-012`).
/// Ids one edit apart whose numbers differ (`hh-013` next to `hh-012`) are
/// the next household of a numbered list, not a typo.
pub fn look_alikes<'a>(new: &str, existing: &'a [String]) -> Vec<&'a str> {
    let n = normalise(new);
    existing
        .iter()
        .filter(|e| {
            e.as_str() != new
                && (normalise(e) == n || (within_one_edit(e, new) && numbers(e) == numbers(new)))
        })
        .map(String::as_str)
        .collect()
}

/// The numbers in an id, without leading zeros.
fn numbers(id: &str) -> Vec<String> {
    id.split(|c: char| !c.is_ascii_digit())
        .filter(|d| !d.is_empty())
        .map(|d| d.trim_start_matches('0').to_owned())
        .collect()
}

/// Lower case, letters and digits only, each run of digits without its leading zeros.
fn normalise(id: &str) -> String {
    let mut out = String::new();
    let mut digits = String::new();
    let flush = |digits: &mut String, out: &mut String| {
        if !digits.is_empty() {
            let trimmed = digits.trim_start_matches('0');
            out.push_str(if trimmed.is_empty() { "0" } else { trimmed });
            digits.clear();
        }
    };
    for c in id.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_digit() {
            digits.push(c);
        } else if c.is_alphanumeric() {
            flush(&mut digits, &mut out);
            out.push(c);
        } else {
            flush(&mut digits, &mut out);
        }
    }
    flush(&mut digits, &mut out);
    out
}

/// Whether one insertion, deletion or substitution turns `a` into `b`.
fn within_one_edit(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let (short, long) = if a.len() <= b.len() { (&a, &b) } else { (&b, &a) };
    if long.len() - short.len() > 1 {
        return false;
    }
    let prefix = short.iter().zip(long.iter()).take_while(|(x, y)| x == y).count();
    if short.len() == long.len() {
        prefix == short.len() || short[prefix + 1..] == long[prefix + 1..]
    } else {
        short[prefix..] == long[prefix + 1..]
    }
}

/// Refuses a new household id that looks like a typo of an existing one,
/// unless the surveyor confirmed it is new.
pub fn check_new_household(
    household: &str,
    existing: &[String],
    confirmed: bool,
    lang: Lang,
) -> anyhow::Result<()> {
    if confirmed || existing.iter().any(|e| e == household) {
        return Ok(());
    }
    let like = look_alikes(household, existing);
    if like.is_empty() {
        return Ok(());
    }
    let like = like.join(", ");
    Err(failure(
        EXIT_DATA_REFUSED,
        match lang {
            Lang::En => format!(
                "household {household} does not exist, but {like} does: did you mean {like}? \
                 Nothing was written; if {household} is a new household, run the command again with --new-household"
            ),
            Lang::Vi => format!(
                "hộ {household} chưa có, nhưng đã có {like}: có phải ý bạn là {like}? \
                 Chưa ghi gì; nếu {household} là hộ mới, chạy lại lệnh với --new-household"
            ),
        },
    ))
}

pub use rules::new_breaches;

/// A breach the surveyor's own edit would make, said in their language.
pub fn breach_message(issue: &DataQualityIssue, after: &Value, lang: Lang) -> String {
    rules::breach_message(issue, after, replica_lang(lang))
}

/// What a breach is, in words of `lang`, with the values `survey` (a
/// snapshot as JSON) holds: `adults (6) cannot be more than members (5)`.
pub fn breach_words(issue: &DataQualityIssue, survey: &Value, lang: Lang) -> String {
    rules::breach_words(issue, survey, replica_lang(lang))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_of_household_ids_are_found() {
        let existing = vec!["hh-05".to_owned(), "hh-012".to_owned(), "hh-100".to_owned()];
        assert_eq!(look_alikes("hh-5", &existing), ["hh-05"]);
        assert_eq!(look_alikes("HH_005", &existing), ["hh-05"]);
        assert_eq!(look_alikes("hb-012", &existing), ["hh-012"]);
        assert_eq!(look_alikes("hh012", &existing), ["hh-012"]);
        assert!(look_alikes("hh-013", &existing).is_empty(), "the next household of the list");
        assert!(look_alikes("hh-200", &existing).is_empty());
        assert!(look_alikes("hh-777", &existing).is_empty());
        assert!(look_alikes("hh-05", &existing).is_empty(), "itself is no typo");
    }

    #[test]
    fn numbers_are_grouped_per_language() {
        assert_eq!(grouped(1_000_000, Lang::En), "1,000,000");
        assert_eq!(grouped(1_000_000, Lang::Vi), "1.000.000");
        assert_eq!(grouped(999, Lang::En), "999");
    }
}
