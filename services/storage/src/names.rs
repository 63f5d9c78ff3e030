//! People's names: the one normalisation and check every way of naming someone goes
//! through (the gRPC people API, the CLI, the web page via the API, enrolment), and the
//! one every lookup by name goes through, so "John " finds "John".
//!
//! A name is put in NFKC form (compatibility look-alikes such as full-width letters or
//! ligatures become their plain letters), trimmed, and inner runs of white space become
//! one space. It is then refused when empty, too long, holding characters unsafe in file
//! names and logs, or mixing letters of scripts that are not normally written together:
//! "Jоhn" with a Cyrillic `о` looks exactly like "John" and would be a second person.
//! Names already stored are not rewritten; they are compared as stored.

use unicode_normalization::UnicodeNormalization;
use unicode_security::{RestrictionLevel, RestrictionLevelDetection};

/// Longest accepted name, in characters (after normalisation).
pub const MAX_NAME_CHARS: usize = 100;

/// Why a name was refused. Each message says what is wrong and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Nothing but white space.
    #[error("a name must not be empty")]
    Empty,
    /// Over [`MAX_NAME_CHARS`].
    #[error("a name must be at most {MAX_NAME_CHARS} characters")]
    TooLong,
    /// Starts with `.` (a hidden file name).
    #[error("a name must not start with '.'")]
    LeadingDot,
    /// A control character (line break, tab, NUL, ...).
    #[error("a name must not hold control characters such as line breaks or tabs")]
    Control,
    /// A character other than letters, digits, spaces, `-`, `_`, `.`, `'`.
    #[error(
        "{0:?} is not allowed: only letters, digits, spaces, '-', '_', '.' and '\\'' are (no path characters)"
    )]
    Disallowed(char),
    /// Letters of scripts that are not written together (e.g. Latin with Cyrillic).
    #[error(
        "a name must not mix letters of different scripts, such as a Cyrillic 'о' among Latin \
         letters: they look alike but are different names; type the name in one script"
    )]
    MixedScripts,
}

/// Normalises `raw` as described in the module docs and checks it: the name to store or
/// look up, or why it is refused.
pub fn normalize_name(raw: &str) -> Result<String, NameError> {
    let nfkc: String = raw.nfkc().collect();
    // Control characters are refused rather than folded into spaces: a line break in a
    // name is a mistake (or an attempt at log injection), not formatting.
    if nfkc.chars().any(char::is_control) {
        return Err(NameError::Control);
    }
    let name = nfkc.split_whitespace().collect::<Vec<_>>().join(" ");
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(NameError::TooLong);
    }
    if name.starts_with('.') {
        return Err(NameError::LeadingDot);
    }
    if let Some(c) = name
        .chars()
        .find(|&c| !(c.is_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.' | '\'')))
    {
        return Err(NameError::Disallowed(c));
    }
    // Only the letters and digits decide the script mix (spaces and punctuation belong
    // to every script). "Highly restrictive" (UTS #39) allows one script, or Latin with
    // Han and the Japanese or Korean scripts, which are written together; it refuses
    // Latin with Cyrillic or Greek, the classic look-alike pairs.
    let letters: String = name.chars().filter(|c| c.is_alphanumeric()).collect();
    if !letters
        .as_str()
        .check_restriction_level(RestrictionLevel::HighlyRestrictive)
    {
        return Err(NameError::MixedScripts);
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_collapses_and_folds_look_alike_forms() {
        assert_eq!(normalize_name("  Ada   Lovelace ").unwrap(), "Ada Lovelace");
        assert_eq!(normalize_name("John ").unwrap(), "John");
        // Full-width letters and a no-break space are compatibility forms.
        assert_eq!(normalize_name("Ｊｏｈｎ\u{a0}Ｓ").unwrap(), "John S");
        // "e" + combining acute becomes the single "é".
        assert_eq!(normalize_name("Zoe\u{301}").unwrap(), "Zoé");
        assert!(normalize_name("Zoë O'Neil-Smith_2.0").is_ok());
    }

    #[test]
    fn one_script_or_scripts_written_together_are_fine() {
        for ok in [
            "Иван Петров",
            "Γιώργος",
            "山田 太郎",
            "やまだ タロウ",
            "Li 李",
            "김민준",
        ] {
            assert!(normalize_name(ok).is_ok(), "{ok:?} refused");
        }
    }

    #[test]
    fn mixed_script_look_alikes_are_refused() {
        // Cyrillic о (U+043E) in a Latin name; Greek Ο (U+039F) likewise.
        assert_eq!(normalize_name("J\u{43e}hn"), Err(NameError::MixedScripts));
        assert_eq!(normalize_name("\u{39f}livia"), Err(NameError::MixedScripts));
        assert!(normalize_name("J\u{43e}hn")
            .unwrap_err()
            .to_string()
            .contains("different scripts"));
    }

    #[test]
    fn bad_names_are_refused() {
        assert_eq!(normalize_name(""), Err(NameError::Empty));
        assert_eq!(normalize_name(" \u{3000} "), Err(NameError::Empty));
        assert_eq!(normalize_name("a\nb"), Err(NameError::Control));
        assert_eq!(normalize_name("tab\there"), Err(NameError::Control));
        assert_eq!(normalize_name("nul\0"), Err(NameError::Control));
        assert_eq!(normalize_name(".hidden"), Err(NameError::LeadingDot));
        assert_eq!(normalize_name("a/b"), Err(NameError::Disallowed('/')));
        assert_eq!(normalize_name("../etc"), Err(NameError::LeadingDot));
        assert_eq!(normalize_name("a\\b"), Err(NameError::Disallowed('\\')));
        assert_eq!(normalize_name(&"x".repeat(101)), Err(NameError::TooLong));
        assert!(normalize_name(&"x".repeat(100)).is_ok());
        // Length counts after collapsing: 100 letters with extra spaces around is fine.
        assert!(normalize_name(&format!("  {}  ", "x".repeat(100))).is_ok());
    }
}
