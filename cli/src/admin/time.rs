//! Times for people: shown in Vietnam's time zone (UTC+7, no daylight saving)
//! unless `--utc` is given, written the way the command's language writes
//! dates (`05/03/2024` in Vietnamese, `2024-03-05` in English), and read
//! back from what an officer types (either way).

use super::text::{self, Lang};

/// Vietnam's offset from UTC, in milliseconds. Vietnam keeps no daylight saving time.
pub const VIETNAM_OFFSET_MS: i64 = 7 * 3_600_000;
const DAY_MS: i64 = 86_400_000;

/// The offset in force for the chosen display.
pub fn offset_ms(utc: bool) -> i64 {
    if utc {
        0
    } else {
        VIETNAM_OFFSET_MS
    }
}

/// `UTC+7` or `UTC`, for column headers.
pub fn zone(utc: bool) -> &'static str {
    if utc {
        "UTC"
    } else {
        "UTC+7"
    }
}

// Howard Hinnant's days-from-civil and civil-from-days.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `2024-03-05 14:30:12` (English) or `05/03/2024 14:30:12` (Vietnamese)
/// in Vietnam time (or UTC), in the command's language.
pub fn format(ms: i64, utc: bool) -> String {
    format_in(ms, utc, text::current())
}

/// [`format()`] in a given language.
pub fn format_in(ms: i64, utc: bool, lang: Lang) -> String {
    let (y, m, d, s) = civil(ms, utc);
    let clock = format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60);
    match lang {
        Lang::En => format!("{y:04}-{m:02}-{d:02} {clock}"),
        Lang::Vi => format!("{d:02}/{m:02}/{y:04} {clock}"),
    }
}

/// Year, month, day and seconds into the day, in Vietnam time (or UTC).
fn civil(ms: i64, utc: bool) -> (i64, i64, i64, i64) {
    let local = ms + offset_ms(utc);
    let (days, rest) = (local.div_euclid(DAY_MS), local.rem_euclid(DAY_MS));
    let (y, m, d) = civil_from_days(days);
    (y, m, d, rest / 1000)
}

/// `2024-03-05T14:30:12+07:00` (or `Z`): unambiguous, for exports, in every language.
pub fn format_iso(ms: i64, utc: bool) -> String {
    let text = format_in(ms, utc, Lang::En).replace(' ', "T");
    if utc {
        format!("{text}Z")
    } else {
        format!("{text}+07:00")
    }
}

/// Reads `2024-03-05` (or `05/03/2024`), `2024-03-05 14:30`, `2024-03-05T14:30:12`, with an
/// optional `Z` or `+07:00`-style offset; without one the time is Vietnam
/// time (or UTC with `utc`). A date alone means the end of that day.
/// Returns milliseconds since 1970.
pub fn parse(text: &str, utc: bool) -> Option<i64> {
    let t = text.trim();
    let (body, offset) = split_offset(t).unwrap_or((t, offset_ms(utc)));
    let (date, clock) = match body.split_once(['T', ' ']) {
        Some((d, c)) => (d, Some(c.trim())),
        None => (body, None),
    };
    // `2024-03-05`, or day first as Vietnamese write it: `05/03/2024`.
    let (mut parts, day_first) =
        if date.contains('/') { (date.split('/'), true) } else { (date.split('-'), false) };
    let a: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let b: i64 = parts.next()?.parse().ok()?;
    let (y, d) = if day_first { (b, a) } else { (a, b) };
    if parts.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let day = days_from_civil(y, m, d);
    if civil_from_days(day) != (y, m, d) {
        return None;
    }
    let within = match clock {
        None => DAY_MS - 1,
        Some(c) => {
            let mut f = c.split(':');
            let h: i64 = f.next()?.parse().ok()?;
            let min: i64 = f.next()?.parse().ok()?;
            let sec: f64 = f.next().map(str::parse).transpose().ok()?.unwrap_or(0.0);
            if f.next().is_some()
                || !(0..24).contains(&h)
                || !(0..60).contains(&min)
                || !(0.0..60.0).contains(&sec)
            {
                return None;
            }
            h * 3_600_000 + min * 60_000 + (sec * 1000.0) as i64
        }
    };
    Some(day * DAY_MS + within - offset)
}

/// Like [`parse`], but a date alone means the start of that day: for the
/// lower end of a range (`--received-since 2024-03-05` includes that day).
pub fn parse_start(text: &str, utc: bool) -> Option<i64> {
    let end = parse(text, utc)?;
    let date_only = !text.trim().trim_end_matches(['Z', 'z']).contains(['T', ' ']);
    Some(if date_only { end - (DAY_MS - 1) } else { end })
}

fn split_offset(t: &str) -> Option<(&str, i64)> {
    if let Some(body) = t.strip_suffix('Z').or_else(|| t.strip_suffix('z')) {
        return Some((body, 0));
    }
    // An offset follows the clock: look for + or - after a 'T' or ' '.
    let clock_at = t.find(['T', ' '])?;
    let sign_at = clock_at + t[clock_at..].find(['+', '-'])?;
    let sign = if &t[sign_at..sign_at + 1] == "-" { -1 } else { 1 };
    let (h, m) = t[sign_at + 1..].split_once(':').unwrap_or((&t[sign_at + 1..], "0"));
    let minutes = h.parse::<i64>().ok()? * 60 + m.parse::<i64>().ok()?;
    Some((t[..sign_at].trim_end(), sign * minutes * 60_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vietnam_time_is_seven_hours_ahead() {
        // 2024-03-05 07:30:00 UTC.
        let ms = 1_709_623_800_000;
        assert_eq!(format_in(ms, true, Lang::En), "2024-03-05 07:30:00");
        assert_eq!(format_in(ms, false, Lang::En), "2024-03-05 14:30:00");
        assert_eq!(format_in(ms, false, Lang::Vi), "05/03/2024 14:30:00");
        assert_eq!(format_iso(ms, false), "2024-03-05T14:30:00+07:00");
        assert_eq!(format_in(0, true, Lang::En), "1970-01-01 00:00:00");
    }

    #[test]
    fn typed_times_read_back() {
        let ms = 1_709_623_800_000;
        assert_eq!(parse("2024-03-05 14:30", false), Some(ms));
        assert_eq!(parse("2024-03-05T14:30:00", false), Some(ms));
        assert_eq!(parse("2024-03-05 07:30", true), Some(ms));
        assert_eq!(parse("2024-03-05T07:30:00Z", false), Some(ms));
        assert_eq!(parse("2024-03-05T14:30:00+07:00", true), Some(ms));
        assert_eq!(parse("2024-03-05T02:30:00-05:00", false), Some(ms));
        // A date alone: the end of that day, Vietnam time.
        let en = |ms| format_in(ms, false, Lang::En);
        assert_eq!(en(parse("2024-03-05", false).unwrap()), "2024-03-05 23:59:59");
        // Day first, as Vietnamese write dates.
        assert_eq!(parse("05/03/2024 14:30", false), Some(ms));
        assert_eq!(parse("05/03/2024", false), parse("2024-03-05", false));
        // The start of a range: a date alone is the start of that day.
        assert_eq!(en(parse_start("2024-03-05", false).unwrap()), "2024-03-05 00:00:00");
        assert_eq!(parse_start("2024-03-05 14:30", false), Some(ms));
        assert_eq!(parse_start("2024-03-05Z", false), parse("2024-03-05 00:00", true));
        for bad in ["", "yesterday", "2024-02-30", "2024-13-01", "2024-03-05 25:00", "3f2a9c1e"] {
            assert_eq!(parse(bad, false), None, "{bad}");
        }
    }
}
