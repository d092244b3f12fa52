//! The crate's own types: input types built at the boundary (a value of one of these has passed
//! the contract's input rules), and what the service hands up (`Account`, `SessionView`), which
//! the HTTP layer turns into its responses; database rows stay below the service.

mod account;

pub use account::{Account, SessionView};

use validator::ValidateEmail;

use crate::config::PASSWORD_MAX_LENGTH;
use crate::error::FieldError;

/// Unicode Normalization Form C: visually identical text, one sequence of code points.
pub fn nfc(text: &str) -> String {
    icu_normalizer::ComposingNormalizerBorrowed::new_nfc()
        .normalize(text)
        .into_owned()
}

/// A valid email address in the one form it is stored and compared in: trimmed, NFC,
/// lower-cased, and its domain in IDNA ASCII form (`bücher.example`, written composed or
/// decomposed, is `xn--bcher-kva.example`), so that visually identical addresses are one account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub const MAX_LENGTH: usize = 254;

    /// The normalised form of an address, valid or not (the key for things such as the lockout,
    /// which count attempts at any address).
    pub fn normalise(raw: &str) -> String {
        // No address has control characters, and PostgreSQL text cannot hold NUL.
        let printable: String = raw.trim().chars().filter(|c| !c.is_control()).collect();
        let email = nfc(&printable.to_lowercase());
        let Some((local, domain)) = email.rsplit_once('@') else {
            return email;
        };
        if domain.starts_with('[') {
            return email;
        }
        match idna::domain_to_ascii(domain) {
            Ok(ascii) => format!("{local}@{ascii}"),
            Err(_) => email,
        }
    }

    /// A valid address: at most [`Self::MAX_LENGTH`] characters as sent and once normalised,
    /// no control character, and valid by the HTML form rules (`validator`), an
    /// internationalised domain included; surrounding spaces are trimmed.
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        // `normalise` drops control characters (for keys such as the lockout's); an address
        // that has one is refused, not taken for another.
        if raw.chars().any(char::is_control) {
            return Err(FieldError::new(field, "is not a valid email address"));
        }
        let email = Self::normalise(raw);
        if email.is_empty() {
            return Err(FieldError::new(field, "an email address is required"));
        }
        if raw.chars().count() > Self::MAX_LENGTH || email.chars().count() > Self::MAX_LENGTH {
            return Err(FieldError::new(
                field,
                format!("must be at most {} characters", Self::MAX_LENGTH),
            ));
        }
        if !email.validate_email() {
            return Err(FieldError::new(field, "is not a valid email address"));
        }
        Ok(Self(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A display name: at most 100 characters, no control characters, not only whitespace; stored
/// trimmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Name(String);

impl Name {
    pub const MAX_LENGTH: usize = 100;

    /// [`Name::parse`]'s rules as an ECMA-262 pattern (with `maxLength` 100), for the OpenAPI
    /// document: no control character (`char::is_control`: U+0000-U+001F, U+007F-U+009F)
    /// anywhere, and at least one character that `str::trim` keeps (neither a control character
    /// nor Unicode White_Space).
    pub const PATTERN: &'static str = r"^[^\u0000-\u001f\u007f-\u009f]*[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000-\u001f\u007f-\u009f]*$";

    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        Self::text(field, raw, Self::MAX_LENGTH).map(Self)
    }

    /// A name's rules (and [`Name::PATTERN`]) with another bound: at most `max` characters as
    /// sent, no control characters, not only whitespace; trimmed.
    pub fn text(field: &str, raw: &str, max: usize) -> Result<String, FieldError> {
        // The length as sent: what a client checks against `maxLength`.
        if raw.chars().count() > max {
            return Err(FieldError::new(
                field,
                format!("must be at most {max} characters"),
            ));
        }
        if raw.chars().any(char::is_control) {
            return Err(FieldError::new(
                field,
                "must not contain control characters",
            ));
        }
        let name = raw.trim();
        if name.is_empty() {
            return Err(FieldError::new(field, "must not be empty"));
        }
        Ok(name.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password in transit. Its `Debug` never shows it, so it cannot reach a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password([redacted])")
    }
}

impl Password {
    /// A password as given, for checking against a stored hash (no policy applies).
    pub fn given(raw: String) -> Self {
        Self(raw)
    }

    /// A new password: `min_length` to 128 Unicode characters, no composition rules.
    pub fn new_password(field: &str, raw: String, min_length: usize) -> Result<Self, FieldError> {
        let length = raw.chars().count();
        if length < min_length {
            return Err(FieldError::new(
                field,
                format!(
                    "must be at least {min_length} characters; a longer passphrase is easier to remember and harder to guess"
                ),
            ));
        }
        if length > PASSWORD_MAX_LENGTH {
            return Err(FieldError::new(
                field,
                format!("must be at most {PASSWORD_MAX_LENGTH} characters"),
            ));
        }
        Ok(Self(raw))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Collects field errors while parsing a request, so that one 422 names every bad field.
#[derive(Default)]
pub struct FieldErrors(Vec<FieldError>);

impl FieldErrors {
    /// Keeps the value, or records the error and returns `None`.
    pub fn check<T>(&mut self, result: Result<T, FieldError>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.0.push(e);
                None
            }
        }
    }

    pub fn push(&mut self, e: FieldError) {
        self.0.push(e);
    }

    /// `Ok(())` when nothing was recorded, else the 422 error with every field.
    pub fn finish(self) -> crate::Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(crate::Error::Validation(self.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_lower_cased() {
        let e = Email::parse("email", "  Alice@Example.COM ").unwrap();
        assert_eq!(e.as_str(), "alice@example.com");
        assert!(Email::parse("email", "not-an-email").is_err());
        assert!(Email::parse("email", "").is_err());
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(Email::parse("email", &long).is_err());
        // Control characters are refused, not dropped; the length counts as sent.
        assert!(Email::parse("email", "a\u{0}b@x.example").is_err());
        assert!(Email::parse("email", "alice@example.com\n").is_err());
        let padded = format!("{}a@example.com", " ".repeat(250));
        assert!(Email::parse("email", &padded).is_err());
    }

    #[test]
    fn visually_identical_addresses_are_one() {
        let composed = Email::parse("email", "ana@b\u{fc}cher.example").unwrap();
        let decomposed = Email::parse("email", "ana@bu\u{308}cher.example").unwrap();
        let ascii = Email::parse("email", "Ana@XN--BCHER-KVA.example").unwrap();
        assert_eq!(composed.as_str(), "ana@xn--bcher-kva.example");
        assert_eq!(composed, decomposed);
        assert_eq!(composed, ascii);
        // Upper case in an internationalised domain folds too.
        assert_eq!(
            Email::parse("email", "ana@B\u{dc}CHER.example").unwrap(),
            composed
        );
        assert_eq!(
            Email::parse("email", "x@[192.0.2.1]").unwrap().as_str(),
            "x@[192.0.2.1]"
        );
        assert_eq!(Email::normalise(" Not-An-Email "), "not-an-email");
        assert_eq!(Email::normalise("a\u{0}b@x.example"), "ab@x.example");
    }

    #[test]
    fn names_are_bounded_and_printable() {
        assert_eq!(Name::parse("name", "  Ada ").unwrap().as_str(), "Ada");
        assert!(Name::parse("name", "   ").is_err());
        assert!(Name::parse("name", "a\u{0007}b").is_err());
        assert!(Name::parse("name", &"é".repeat(100)).is_ok());
        assert!(Name::parse("name", &"é".repeat(101)).is_err());
        // The length and the characters as sent, before trimming.
        assert!(Name::parse("name", &format!(" {} ", "a".repeat(99))).is_err());
        assert!(Name::parse("name", "\tAda").is_err());
        assert!(Name::parse("name", "\u{3000}Ada\u{a0}").is_ok());
    }

    #[test]
    fn password_length_counts_characters_not_bytes() {
        // 8 characters, 16 bytes.
        assert!(Password::new_password("password", "éééééééé".into(), 8).is_ok());
        assert!(Password::new_password("password", "ééééééé".into(), 8).is_err());
        assert!(Password::new_password("password", "x".repeat(129), 8).is_err());
        assert!(Password::new_password("password", "x".repeat(10), 12).is_err());
        assert_eq!(
            format!("{:?}", Password::given("hunter22".into())),
            "Password([redacted])"
        );
    }
}

#[cfg(test)]
pub(crate) mod properties {
    use proptest::prelude::*;

    use super::*;

    /// Whether the document's rule for a name (`pattern`, `maxLength` 100) admits `raw`.
    fn documented_name(raw: &str) -> bool {
        let pattern = regex::Regex::new(Name::PATTERN).unwrap();
        pattern.is_match(raw) && raw.chars().count() <= Name::MAX_LENGTH
    }

    #[test]
    fn the_name_pattern_reads_as_intended() {
        for good in ["Ann", " Ann ", "\u{3000}Ann\u{a0}", "\u{feff}", "a b"] {
            assert!(documented_name(good), "{good:?}");
        }
        for bad in [
            "",
            " ",
            "\u{2003}\u{3000}",
            "Ann\n",
            "\tAnn",
            "A\u{0}",
            "A\u{9f}",
        ] {
            assert!(!documented_name(bad), "{bad:?}");
        }
    }

    /// Local parts as people type them: ASCII with dots, plus and hyphens, Latin letters with
    /// diacritics (composed), upper case, anything printable.
    fn local_part() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => "[a-zA-Z0-9]([a-zA-Z0-9._+-]{0,20}[a-zA-Z0-9])?",
            2 => "[a-zA-ZàéîõüÀÉÎÕÜñçøåß]{1,10}(\\.[a-z0-9]{1,8}){0,2}",
            1 => "\\PC{1,12}",
        ]
    }

    /// Domains: ASCII, internationalised (Unicode or already in IDNA ASCII), address literals.
    fn domain() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "[a-zA-Z0-9]{1,12}(\\.[a-z0-9-]{1,10}){0,2}\\.(com|org|example|de|CO\\.UK)",
            2 => "(bücher|BÜCHER|ñandú|παράδειγμα|пример|例え|straße)\\.example",
            1 => Just("xn--bcher-kva.example".to_string()),
            1 => "\\[192\\.0\\.2\\.[0-9]{1,3}\\]",
        ]
    }

    /// A well-formed address.
    fn address() -> impl Strategy<Value = String> {
        (local_part(), domain()).prop_map(|(local, domain)| format!("{local}@{domain}"))
    }

    /// An address one slip away from valid: no `@`, two, a space or a control character
    /// inside, a trailing dot, an empty side, far too long.
    fn near_valid() -> impl Strategy<Value = String> {
        (address(), 0..8usize, any::<prop::sample::Index>()).prop_map(|(a, slip, at)| {
            let cut = a
                .char_indices()
                .map(|(i, _)| i)
                .nth(at.index(a.chars().count()))
                .unwrap_or(0);
            let (left, right) = a.split_at(cut);
            match slip {
                0 => a.replacen('@', "", 1),
                1 => format!("{left}@{right}"),
                2 => format!("{left} {right}"),
                3 => format!("{left}\u{0}{right}"),
                4 => format!("{a}."),
                5 => a.split('@').next().unwrap_or_default().to_string() + "@",
                6 => format!("@{}", a.rsplit('@').next().unwrap_or_default()),
                _ => format!("{}{a}", "x".repeat(250)),
            }
        })
    }

    /// Email addresses, valid and near-valid, with the surrounding spaces and the case people
    /// type, and noise.
    pub(crate) fn emails() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => address(),
            1 => address().prop_map(|a| a.to_ascii_uppercase()),
            1 => ("[ \t\r\n]{0,3}", address(), "[ \t\r\n]{0,3}")
                .prop_map(|(before, a, after)| format!("{before}{a}{after}")),
            3 => near_valid(),
            1 => ".{0,300}",
        ]
    }

    /// Passwords as people choose them: passphrases with spaces, Unicode (accents, other
    /// scripts, emoji), spaces at either end, printable ASCII of any length, very long ones.
    pub(crate) fn passwords() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => "([a-zäöüéèñ]{2,9} ){1,6}[a-z]{2,9}",
            2 => "[ -~]{0,140}",
            2 => "\\PC{0,140}",
            1 => "[😀-🙏🚀-🛿]{1,40}",
            1 => " {1,3}[a-zA-Z0-9 ]{4,20} {1,3}",
            1 => "\\PC{120,200}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The document's name rule is `Name::parse`'s, exactly: what a generated client lets
        /// through is what the server takes.
        #[test]
        fn the_documented_name_rule_is_the_servers(
            raw in "[\\x00-\\x21\\x7e-\\xa1\\u{1680}\\u{2000}-\\u{200b}\\u{2028}\\u{2029}\\u{202f}\\u{205f}\\u{3000}\\u{feff}aé]{0,103}"
        ) {
            prop_assert_eq!(Name::parse("name", &raw).is_ok(), documented_name(&raw), "{:?}", raw);
        }

        /// Rule: an address has one stored form, so the account lookup, the unique index and the
        /// lockout key all see one account: parsing the stored form again changes nothing, and it
        /// is trimmed, lower-cased, printable and at most 254 characters.
        #[test]
        fn an_address_has_one_stored_form(raw in emails()) {
            if let Ok(email) = Email::parse("email", &raw) {
                let again = Email::parse("email", email.as_str()).unwrap();
                prop_assert_eq!(again.as_str(), email.as_str());
                prop_assert_eq!(email.as_str(), email.as_str().trim().to_lowercase());
                prop_assert!(!email.as_str().chars().any(char::is_control));
                prop_assert!(email.as_str().chars().count() <= Email::MAX_LENGTH);
            }
        }

        /// Rule: spellings that look the same are never two accounts nor two lockout keys, so
        /// nobody can register a second account that looks like someone else's, nor dodge the
        /// lockout by re-spelling the address: decomposed accents, ASCII upper case and spaces
        /// around give the same normalised form (the lockout's key, valid address or not) and,
        /// when taken, the same address (a re-spelt one may be refused instead: the length
        /// counts as sent).
        #[test]
        fn spellings_that_look_the_same_are_one_address(raw in emails()) {
            let decomposed = icu_normalizer::DecomposingNormalizerBorrowed::new_nfd()
                .normalize(&raw)
                .into_owned();
            let original = Email::parse("email", &raw).ok();
            for variant in [decomposed, raw.to_ascii_uppercase(), format!("  {raw} ")] {
                prop_assert_eq!(
                    Email::normalise(&variant),
                    Email::normalise(&raw),
                    "{:?} and {:?}", raw, variant
                );
                if let (Some(original), Ok(respelt)) = (&original, Email::parse("email", &variant)) {
                    prop_assert_eq!(&respelt, original, "{:?} and {:?}", raw, variant);
                }
            }
        }

        /// Rule: a new password is judged by its length in characters, never bytes (a Unicode
        /// passphrase is not cut short nor passed for being long in bytes), is kept exactly as
        /// typed (nothing trimmed or normalised away), and never shows in `Debug`, so never in a
        /// log.
        #[test]
        fn a_password_is_counted_in_characters_kept_as_typed_and_never_shown(
            raw in passwords(),
            min_length in 8usize..=20,
        ) {
            let length = raw.chars().count();
            match Password::new_password("password", raw.clone(), min_length) {
                Ok(password) => {
                    prop_assert!((min_length..=PASSWORD_MAX_LENGTH).contains(&length));
                    prop_assert_eq!(password.expose(), raw.as_str());
                    prop_assert_eq!(format!("{password:?}"), "Password([redacted])");
                }
                Err(_) => prop_assert!(!(min_length..=PASSWORD_MAX_LENGTH).contains(&length)),
            }
            prop_assert_eq!(format!("{:?}", Password::given(raw)), "Password([redacted])");
        }
    }
}
