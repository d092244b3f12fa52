//! Time-based one-time passwords (RFC 6238) and recovery codes, the second factor.
//!
//! The parameters are the ones every authenticator app understands without being told: HMAC-SHA1,
//! six digits, a 30 second period. Apps that read `algorithm`, `digits` and `period` from the
//! otpauth URI get them spelled out anyway, so nothing depends on their defaults.
//!
//! Everything here is pure: the caller supplies the time (Unix milliseconds, from
//! `crate::clock`), stores the secret (sealed, see `crate::auth::seal`) and remembers the last
//! step used, so that a code cannot be replayed inside its window.

use hmac::{Hmac, Mac};
use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};
use sha1::Sha1;
use url::form_urlencoded;

/// The error of [`qr_svg`]: in practice only `DataTooLong`, for a text past what a QR code
/// holds (about 2,300 bytes at level M; an otpauth URI is a few hundred).
pub use qrcode::types::QrError;

pub const DIGITS: u32 = 6;
pub const PERIOD_SECONDS: i64 = 30;
/// 160 bits, the length of an HMAC-SHA1 output, as RFC 4226 recommends.
pub const SECRET_BYTES: usize = 20;
/// How many steps either side of the current one are accepted, for clocks that drift and for
/// codes typed just as they change.
pub const SKEW_STEPS: i64 = 1;

const PERIOD_MS: i64 = PERIOD_SECONDS * 1000;

/// A fresh random secret: [`SECRET_BYTES`] bytes from the OS.
pub fn new_secret() -> Vec<u8> {
    let mut secret = vec![0u8; SECRET_BYTES];
    getrandom::fill(&mut secret).expect("the OS random number generator works");
    secret
}

/// RFC 4648 base32, upper case, without padding: the form authenticator apps take, in the
/// otpauth URI and when a user types the secret in by hand.
pub fn base32(secret: &[u8]) -> String {
    data_encoding::BASE32_NOPAD.encode(secret)
}

/// The time step of a Unix time in milliseconds: the number of whole periods since the epoch,
/// rounded down (so times before 1970 fall in negative steps rather than all in step 0).
pub fn step_at(now_ms: i64) -> i64 {
    now_ms.div_euclid(PERIOD_MS)
}

/// The code of `step`, zero-padded to [`DIGITS`] digits: RFC 4226 HOTP with HMAC-SHA1 and
/// dynamic truncation, with the step as the counter (RFC 6238).
///
/// A negative step (a time before 1970) is taken as its two's complement, as the 64-bit counter
/// of RFC 4226 has no sign; no real clock gets there.
pub fn code_at(secret: &[u8], step: i64) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(&step.to_be_bytes());
    let hash = mac.finalize().into_bytes();
    // RFC 4226 §5.3: the low nibble of the last byte picks four bytes, of which the low 31 bits
    // are the number (the top bit is dropped so that signed and unsigned readings agree).
    let offset = usize::from(hash[hash.len() - 1] & 0x0f);
    let number = u32::from_be_bytes([
        hash[offset] & 0x7f,
        hash[offset + 1],
        hash[offset + 2],
        hash[offset + 3],
    ]);
    let code = number % 10u32.pow(DIGITS);
    format!("{code:0width$}", width = DIGITS as usize)
}

/// Reads a code as a user typed it: ASCII digits, with spaces anywhere (apps show codes as
/// "123 456", and people copy them that way). `Some` only with exactly [`DIGITS`] digits, which
/// are returned without the spaces. Other digits (Arabic-Indic, full width, ...) are refused
/// rather than translated: no app shows them.
pub fn parse_code(input: &str) -> Option<String> {
    let mut code = String::with_capacity(DIGITS as usize);
    for c in input.chars() {
        match c {
            ' ' => {}
            '0'..='9' => code.push(c),
            _ => return None,
        }
    }
    (code.len() == DIGITS as usize).then_some(code)
}

/// The step, among the [`SKEW_STEPS`] either side of `step_at(now_ms)` and that one, whose code
/// is `code` (as [`parse_code`] returns it); the earliest if several are.
///
/// Every candidate is computed and compared in full, in constant time, whatever matches: how
/// long a check takes tells nothing about how close a guess was. The caller refuses a step not
/// after the last one it accepted, which stops replays.
pub fn matching_step(secret: &[u8], code: &str, now_ms: i64) -> Option<i64> {
    let current = step_at(now_ms);
    let mut found = None;
    for delta in -SKEW_STEPS..=SKEW_STEPS {
        let step = current.saturating_add(delta);
        let equal = constant_time_eq(code_at(secret, step).as_bytes(), code.as_bytes());
        if equal && found.is_none() {
            found = Some(step);
        }
    }
    found
}

/// Whether `a` and `b` are equal, in a time that depends only on their lengths (which are
/// public: a code has [`DIGITS`] digits).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Percent-encodes `text` for a label or a query value: everything but ASCII letters, digits
/// and `*-._` is encoded, spaces as `%20`. `form_urlencoded` writes a space as `+` (and a `+` as
/// `%2B`); some authenticator apps show a `+` as it is, so it is turned into `%20`.
fn percent_encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// The otpauth URI that authenticator apps read from the QR code (Google's Key URI format):
///
/// `otpauth://totp/{issuer}:{account}?secret={base32}&issuer={issuer}&algorithm=SHA1&digits=6&period=30`
///
/// The issuer and the account are percent-encoded in the label and in the query, a `:` in
/// either included, so the label splits at the one `:` between them. The issuer is in both
/// places because older apps read it only from the label and newer ones prefer the parameter.
/// An empty issuer is left out of both.
pub fn otpauth_uri(issuer: &str, account: &str, secret: &[u8]) -> String {
    let account = percent_encode(account);
    let secret = base32(secret);
    if issuer.is_empty() {
        return format!(
            "otpauth://totp/{account}?secret={secret}&algorithm=SHA1&digits={DIGITS}&period={PERIOD_SECONDS}"
        );
    }
    let issuer = percent_encode(issuer);
    format!(
        "otpauth://totp/{issuer}:{account}?secret={secret}&issuer={issuer}&algorithm=SHA1&digits={DIGITS}&period={PERIOD_SECONDS}"
    )
}

/// The QR code of `text` as a standalone SVG document, black on white, with the quiet zone
/// (scanners need it), at least 200 by 200 pixels. Error correction level M, the usual
/// compromise between size and resistance to a scratched or glaring screen.
pub fn qr_svg(text: &str) -> Result<String, QrError> {
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M)?;
    Ok(code
        .render::<svg::Color<'_>>()
        .quiet_zone(true)
        .min_dimensions(200, 200)
        .build())
}

/// How many recovery codes a user gets at once.
pub const RECOVERY_CODES: usize = 10;
/// The characters of recovery codes: lower-case letters and digits without the look-alikes
/// `0 o 1 l i`. That leaves 31, not 32, so characters are drawn by rejection sampling rather
/// than five bits at a time; ten of them are 10 × log2(31) ≈ 49.5 bits.
pub const RECOVERY_ALPHABET: &str = "23456789abcdefghjkmnpqrstuvwxyz";
/// Characters in a recovery code, without the hyphen.
const RECOVERY_LENGTH: usize = 10;

/// `count` distinct recovery codes, each `xxxxx-xxxxx` from [`RECOVERY_ALPHABET`], drawn from
/// the OS without bias. The hyphen is only for reading; store the
/// [`normalise_recovery_code`] form (hashed).
pub fn new_recovery_codes(count: usize) -> Vec<String> {
    let mut codes: Vec<String> = Vec::with_capacity(count);
    while codes.len() < count {
        let code = new_recovery_code();
        // A repeat is all but impossible at 49.5 bits, but two equal codes would be one code.
        if !codes.contains(&code) {
            codes.push(code);
        }
    }
    codes
}

fn new_recovery_code() -> String {
    let alphabet = RECOVERY_ALPHABET.as_bytes();
    let n = alphabet.len();
    // The largest multiple of 31 that fits in a byte: bytes below it, taken modulo 31, are
    // uniform; the few above are thrown away.
    let limit = 256 - 256 % n;
    let mut code = String::with_capacity(RECOVERY_LENGTH + 1);
    let mut taken = 0;
    let mut buffer = [0u8; 16];
    while taken < RECOVERY_LENGTH {
        getrandom::fill(&mut buffer).expect("the OS random number generator works");
        for &byte in &buffer {
            if taken == RECOVERY_LENGTH {
                break;
            }
            let byte = usize::from(byte);
            if byte >= limit {
                continue;
            }
            if taken == RECOVERY_LENGTH / 2 {
                code.push('-');
            }
            code.push(char::from(alphabet[byte % n]));
            taken += 1;
        }
    }
    code
}

/// Reads a recovery code as a user typed it: any case, with spaces and hyphens anywhere. `Some`
/// only with exactly ten characters, all from [`RECOVERY_ALPHABET`], returned lower case
/// without the hyphen. Look-alikes are refused, not mapped: no code has them, so a `0` or an `l`
/// is a mistyped code.
pub fn normalise_recovery_code(input: &str) -> Option<String> {
    let mut code = String::with_capacity(RECOVERY_LENGTH);
    for c in input.chars() {
        match c.to_ascii_lowercase() {
            ' ' | '-' => {}
            c if c.is_ascii() && RECOVERY_ALPHABET.contains(c) => {
                if code.len() == RECOVERY_LENGTH {
                    return None;
                }
                code.push(c);
            }
            _ => return None,
        }
    }
    (code.len() == RECOVERY_LENGTH).then_some(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_SECRET: &[u8] = b"12345678901234567890";

    #[test]
    fn rfc_6238_sha1_vectors() {
        // Appendix B: the 8-digit codes' last six digits.
        let vectors: [(i64, &str); 6] = [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_111_111_111, "050471"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
            (20_000_000_000, "353130"),
        ];
        for (t, code) in vectors {
            assert_eq!(code_at(RFC_SECRET, step_at(t * 1000)), code, "T = {t}");
        }
    }

    #[test]
    fn rfc_4226_hotp_vectors() {
        let codes = [
            "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583",
            "399871", "520489",
        ];
        for (counter, code) in codes.iter().enumerate() {
            let counter = i64::try_from(counter).unwrap();
            assert_eq!(code_at(RFC_SECRET, counter), *code, "counter {counter}");
        }
    }

    #[test]
    fn steps_are_whole_periods_rounded_down() {
        assert_eq!(step_at(0), 0);
        assert_eq!(step_at(29_999), 0);
        assert_eq!(step_at(30_000), 1);
        assert_eq!(step_at(-1), -1);
    }

    #[test]
    fn codes_of_neighbouring_steps_match_and_further_ones_do_not() {
        let now_ms = 1_700_000_012_345;
        let step = step_at(now_ms);
        // A secret whose codes for the five steps around now are all different (two codes
        // collide about one time in a million), so that each code names one step.
        let (secret, codes) = loop {
            let secret = new_secret();
            let codes: Vec<String> = (-2..=2).map(|d| code_at(&secret, step + d)).collect();
            if (1..codes.len()).all(|i| !codes[..i].contains(&codes[i])) {
                break (secret, codes);
            }
        };
        for (delta, code) in (-2i64..=2).zip(&codes) {
            let expected = (delta.abs() <= SKEW_STEPS).then_some(step + delta);
            assert_eq!(matching_step(&secret, code, now_ms), expected, "{delta}");
        }
    }

    #[test]
    fn matching_returns_the_step_of_the_code() {
        // With the RFC secret around T = 59 the codes of steps 0..=3 are all different.
        let now_ms = 59_000;
        let step = step_at(now_ms);
        assert_eq!(step, 1);
        let codes: Vec<String> = (0..=3).map(|s| code_at(RFC_SECRET, s)).collect();
        assert_eq!(matching_step(RFC_SECRET, &codes[0], now_ms), Some(0));
        assert_eq!(matching_step(RFC_SECRET, &codes[1], now_ms), Some(1));
        assert_eq!(matching_step(RFC_SECRET, &codes[2], now_ms), Some(2));
        assert_eq!(matching_step(RFC_SECRET, &codes[3], now_ms), None);
        assert_eq!(
            matching_step(RFC_SECRET, &code_at(RFC_SECRET, -1), now_ms),
            None
        );
        assert_eq!(matching_step(RFC_SECRET, "12345", now_ms), None);
    }

    #[test]
    fn codes_are_parsed_from_digits_and_spaces() {
        assert_eq!(parse_code("123456").as_deref(), Some("123456"));
        assert_eq!(parse_code("123 456").as_deref(), Some("123456"));
        assert_eq!(parse_code("012345").as_deref(), Some("012345"));
        for bad in [
            "12345",
            "1234567",
            "12a456",
            "١٢٣٤٥٦",
            "１２３４５６",
            "",
            "      ",
            "123\t456",
            "+12345",
        ] {
            assert_eq!(parse_code(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn base32_is_rfc_4648_upper_case_unpadded() {
        assert_eq!(base32(b"Hello!\xde\xad\xbe\xef"), "JBSWY3DPEHPK3PXP");
        assert_eq!(base32(b"f"), "MY");
        let secret = new_secret();
        assert_eq!(secret.len(), SECRET_BYTES);
        assert_eq!(base32(&secret).len(), 32);
        assert_ne!(secret, new_secret());
    }

    #[test]
    fn otpauth_uri_parses_back() {
        let secret = b"Hello!\xde\xad\xbe\xef";
        let uri = otpauth_uri("ACME Co", "alice@example.com", secret);
        assert!(
            uri.starts_with("otpauth://totp/ACME%20Co:alice%40example.com?"),
            "{uri}"
        );
        let url = url::Url::parse(&uri).unwrap();
        assert_eq!(url.scheme(), "otpauth");
        assert_eq!(url.host_str(), Some("totp"));
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        let expected = [
            ("secret", "JBSWY3DPEHPK3PXP"),
            ("issuer", "ACME Co"),
            ("algorithm", "SHA1"),
            ("digits", "6"),
            ("period", "30"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(pairs, expected);
    }

    #[test]
    fn otpauth_label_keeps_one_colon() {
        let uri = otpauth_uri("A:B & C", "x:y?z#w", b"k");
        let url = url::Url::parse(&uri).unwrap();
        let label = url.path().trim_start_matches('/');
        assert_eq!(label.matches(':').count(), 1, "{label}");
        let (issuer, account) = label.split_once(':').unwrap();
        let decode = |s: &str| {
            form_urlencoded::parse(format!("v={s}").as_bytes())
                .into_owned()
                .next()
        };
        assert_eq!(decode(issuer).unwrap().1, "A:B & C");
        assert_eq!(decode(account).unwrap().1, "x:y?z#w");
        let issuer = url.query_pairs().find(|(k, _)| k == "issuer").unwrap().1;
        assert_eq!(issuer, "A:B & C");

        let bare = otpauth_uri("", "alice", b"k");
        assert!(bare.starts_with("otpauth://totp/alice?secret="), "{bare}");
        assert!(!bare.contains("issuer="), "{bare}");
    }

    #[test]
    fn qr_code_is_an_svg_document() {
        let svg = qr_svg(&otpauth_uri("ACME Co", "alice@example.com", &new_secret())).unwrap();
        assert!(svg.starts_with("<?xml") || svg.starts_with("<svg"));
        assert!(svg.contains("</svg>"));
        assert!(qr_svg(&"x".repeat(10_000)).is_err());
    }

    fn is_recovery_code(code: &str) -> bool {
        let in_alphabet =
            |s: &str| s.len() == 5 && s.chars().all(|c| RECOVERY_ALPHABET.contains(c));
        code.split_once('-')
            .is_some_and(|(a, b)| in_alphabet(a) && in_alphabet(b))
    }

    #[test]
    fn recovery_alphabet_has_no_look_alikes() {
        assert_eq!(RECOVERY_ALPHABET.len(), 31);
        for c in ['0', 'o', '1', 'l', 'i'] {
            assert!(!RECOVERY_ALPHABET.contains(c));
        }
        let mut sorted: Vec<char> = RECOVERY_ALPHABET.chars().collect();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 31);
    }

    #[test]
    fn recovery_codes_are_distinct_and_well_formed() {
        let codes = new_recovery_codes(RECOVERY_CODES);
        assert_eq!(codes.len(), RECOVERY_CODES);
        for (i, code) in codes.iter().enumerate() {
            assert!(is_recovery_code(code), "{code}");
            assert!(!codes[..i].contains(code));
        }
    }

    #[test]
    fn recovery_codes_use_the_whole_alphabet() {
        let codes = new_recovery_codes(200);
        for c in RECOVERY_ALPHABET.chars() {
            assert!(codes.iter().any(|code| code.contains(c)), "{c} never drawn");
        }
    }

    #[test]
    fn recovery_codes_normalise() {
        for code in new_recovery_codes(3) {
            let plain = code.replace('-', "");
            assert_eq!(normalise_recovery_code(&code).as_deref(), Some(&*plain));
            let typed = format!(" {} {} ", &plain[..5], &plain[5..]).to_uppercase();
            assert_eq!(normalise_recovery_code(&typed).as_deref(), Some(&*plain));
        }
        assert_eq!(
            normalise_recovery_code("ABCDE-FGHJK").as_deref(),
            Some("abcdefghjk")
        );
        for bad in [
            "",
            "abcde-fghj",
            "abcde-fghjkm",
            "abcde-fghj0",
            "abcde-fghjo",
            "abcde-fghj1",
            "abcde-fghjl",
            "abcde-fghji",
            "abcde-fghjI",
            "abcde_fghjk",
            "abcde-fghjé",
        ] {
            assert_eq!(normalise_recovery_code(bad), None, "{bad:?}");
        }
    }
}
