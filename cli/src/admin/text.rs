//! The language of labels and messages: Vietnamese or English, chosen with
//! `--lang` or from the locale. Place names always keep their diacritics.
//!
//! The command's language is set once when it starts ([`set_current`]), so
//! error messages built deep in a command ([`say`]) and numbers and dates
//! (`out`, `time`) follow it without each function taking it.

use std::sync::atomic::{AtomicU8, Ordering};

use clap::ValueEnum;

/// The command's language: 0 not chosen yet, 1 Vietnamese, 2 English.
static CURRENT: AtomicU8 = AtomicU8::new(0);

/// Chooses the language of this run's messages, numbers and dates.
pub fn set_current(lang: Lang) {
    CURRENT.store(if lang == Lang::Vi { 1 } else { 2 }, Ordering::Relaxed);
}

/// The language of this run: as set by [`set_current`], else from the locale.
pub fn current() -> Lang {
    match CURRENT.load(Ordering::Relaxed) {
        1 => Lang::Vi,
        2 => Lang::En,
        _ => Lang::from_env(),
    }
}

/// A whole message in this run's language, from its English and Vietnamese texts.
pub fn say(en: impl Into<String>, vi: impl Into<String>) -> String {
    match current() {
        Lang::En => en.into(),
        Lang::Vi => vi.into(),
    }
}

/// A language the administrator's commands speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    /// Tiếng Việt.
    Vi,
    /// English.
    En,
}

impl Lang {
    /// From `LC_ALL`, `LC_MESSAGES` or `LANG`: `vi*` is Vietnamese, anything else English.
    pub fn from_env() -> Self {
        let locale = ["LC_ALL", "LC_MESSAGES", "LANG"]
            .iter()
            .filter_map(|k| std::env::var(k).ok())
            .find(|v| !v.is_empty())
            .unwrap_or_default();
        Self::from_locale(&locale)
    }

    /// From a locale name such as `vi_VN.UTF-8`.
    pub fn from_locale(locale: &str) -> Self {
        if locale.to_ascii_lowercase().starts_with("vi") {
            Lang::Vi
        } else {
            Lang::En
        }
    }

    /// Picks the English or the Vietnamese text.
    pub fn t(self, en: &'static str, vi: &'static str) -> &'static str {
        match self {
            Lang::En => en,
            Lang::Vi => vi,
        }
    }

    /// A yes / no / not answered cell.
    pub fn yes_no(self, v: Option<bool>) -> &'static str {
        match v {
            Some(true) => self.t("yes", "có"),
            Some(false) => self.t("no", "không"),
            None => "—",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locale_picks_the_language() {
        assert_eq!(Lang::from_locale("vi_VN.UTF-8"), Lang::Vi);
        assert_eq!(Lang::from_locale("vi"), Lang::Vi);
        assert_eq!(Lang::from_locale("en_US.UTF-8"), Lang::En);
        assert_eq!(Lang::from_locale("C"), Lang::En);
        assert_eq!(Lang::from_locale(""), Lang::En);
    }
}
