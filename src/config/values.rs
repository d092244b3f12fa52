//! How a setting's text becomes its value: the parsers the sections name in `value_parser = ...`.
//!
//! Each trims the text first (surrounding spaces never matter) and, on a bad value, says why in
//! the words of the one-line error (`invalid PORT: `eighty`: invalid digit found in string`).
//! Bounds that were always applied silently (a cap) stay silent; the others are refused.

use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

/// A comma-separated list, read as one value (clap would take a `Vec` field as a repeated flag).
/// Empty items are skipped, so an empty text is an empty list.
pub type List<T> = Vec<T>;

/// What every value parser here is: clap takes any such function.
pub trait Parser<T>: Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static {}
impl<T, F: Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static> Parser<T> for F {}

/// The whole-number types settings are read as.
pub trait Whole:
    FromStr<Err: Display> + Ord + Copy + Display + From<u8> + Send + Sync + 'static
{
}
impl<T: FromStr<Err: Display> + Ord + Copy + Display + From<u8> + Send + Sync + 'static> Whole
    for T
{
}

/// Any value with a `FromStr`.
pub fn parsed<T: FromStr<Err: Display>>(text: &str) -> Result<T, String> {
    let text = text.trim();
    text.parse().map_err(|e| format!("`{text}`: {e}"))
}

/// Text, as given (trimmed).
pub fn text(text: &str) -> Result<String, String> {
    Ok(text.trim().to_string())
}

/// A whole number greater than 0.
pub fn positive<T: Whole>(text: &str) -> Result<T, String> {
    let value: T = parsed(text)?;
    if value == T::from(0) {
        return Err("must be greater than 0".into());
    }
    Ok(value)
}

/// A whole number from `min` to `max`.
pub fn within<T: Whole>(min: T, max: T) -> impl Parser<T> {
    move |text: &str| {
        let value: T = parsed(text)?;
        if value < min || value > max {
            return Err(format!("{value} must be {min} to {max}"));
        }
        Ok(value)
    }
}

/// A whole number up to `max`; more is refused.
pub fn at_most<T: Whole>(max: T) -> impl Parser<T> {
    move |text: &str| {
        let value: T = parsed(text)?;
        if value > max {
            return Err(format!("{value} is larger than the maximum {max}"));
        }
        Ok(value)
    }
}

/// A whole number greater than 0 and up to `max`; more is refused.
pub fn positive_at_most<T: Whole>(max: T) -> impl Parser<T> {
    move |text: &str| {
        let value: T = positive(text)?;
        if value > max {
            return Err(format!("{value} is larger than the maximum {max}"));
        }
        Ok(value)
    }
}

/// A whole number, lowered to `max` if it is more.
pub fn capped<T: Whole>(max: T) -> impl Parser<T> {
    move |text: &str| Ok(parsed::<T>(text)?.min(max))
}

/// A whole number greater than 0, lowered to `max` if it is more.
pub fn positive_capped<T: Whole>(max: T) -> impl Parser<T> {
    move |text: &str| Ok(positive::<T>(text)?.min(max))
}

/// A number of seconds (read by `count`) as a duration.
pub fn seconds(count: impl Parser<u64>) -> impl Parser<Duration> {
    scaled(count, 1)
}

/// A number of minutes as a duration.
pub fn minutes(count: impl Parser<u64>) -> impl Parser<Duration> {
    scaled(count, 60)
}

/// A number of hours as a duration.
pub fn hours(count: impl Parser<u64>) -> impl Parser<Duration> {
    scaled(count, 3600)
}

/// A number of days as a duration.
pub fn days(count: impl Parser<u64>) -> impl Parser<Duration> {
    scaled(count, 86_400)
}

/// A number of milliseconds as a duration.
pub fn milliseconds(count: impl Parser<u64>) -> impl Parser<Duration> {
    move |text: &str| count(text).map(Duration::from_millis)
}

/// Every bound above keeps these products far from overflowing.
fn scaled(count: impl Parser<u64>, unit_seconds: u64) -> impl Parser<Duration> {
    move |text: &str| count(text).map(|n| Duration::from_secs(n.saturating_mul(unit_seconds)))
}

/// A number read by `parse`, then converted (a narrower type, a saturating one, ...).
pub fn converted<T: 'static, U: 'static>(
    parse: impl Parser<T>,
    convert: fn(T) -> U,
) -> impl Parser<U> {
    move |text: &str| parse(text).map(convert)
}

/// `true`, `1`, `yes`, `on` or `false`, `0`, `no`, `off`, in any case.
pub fn boolean(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        other => Err(format!("`{other}` is not true or false")),
    }
}

/// A comma-separated list of items each read by `item`.
pub fn list<T>(item: impl Parser<T>) -> impl Parser<List<T>> {
    move |text: &str| {
        text.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(&item)
            .collect()
    }
}

/// An `http://` or `https://` address, without a trailing `/`.
pub fn http_url(text: &str) -> Result<String, String> {
    let url = text.trim();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!("`{url}` must start with http:// or https://"));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// A web origin such as `https://app.example.com` or `http://localhost:3000`: `http://` or
/// `https://`, a host, an optional port, and nothing after it (a trailing `/` is allowed);
/// returned as browsers serialise it (lower case, no default port).
pub fn web_origin(text: &str) -> Result<String, String> {
    let text = text.trim();
    let refuse = || format!("`{text}` is not an origin such as https://app.example.com");
    let url = url::Url::parse(text).map_err(|_| refuse())?;
    let host_ok = match url.host() {
        Some(url::Host::Domain(name)) => name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'),
        Some(_) => true,
        None => false,
    };
    let bare = matches!(url.scheme(), "http" | "https")
        && host_ok
        && url.username().is_empty()
        && url.password().is_none()
        && url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none()
        // `Url` reads `https://a.example.com/.` and the like as `/`: only a slash may follow.
        && text.trim_end_matches('/').matches('/').count() == 2;
    if !bare {
        return Err(refuse());
    }
    Ok(url.origin().ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_say_why_they_are_refused() {
        assert_eq!(parsed::<u16>(" 80 "), Ok(80));
        assert_eq!(
            parsed::<u16>("eighty"),
            Err("`eighty`: invalid digit found in string".into())
        );
        assert_eq!(positive::<u64>("0"), Err("must be greater than 0".into()));
        assert_eq!(within(1u64, 128)("129"), Err("129 must be 1 to 128".into()));
        assert_eq!(
            positive_at_most(10u64)("11"),
            Err("11 is larger than the maximum 10".into())
        );
        assert_eq!(
            positive_at_most(10u64)("0"),
            Err("must be greater than 0".into())
        );
        assert_eq!(capped(10u32)("11"), Ok(10));
        assert!(positive_capped(10u64)("0").is_err());
        assert_eq!(minutes(positive)("2"), Ok(Duration::from_secs(120)));
    }

    #[test]
    fn booleans_and_lists() {
        for yes in ["true", "1", "YES", " on "] {
            assert_eq!(boolean(yes), Ok(true), "{yes}");
        }
        for no in ["false", "0", "No", "off"] {
            assert_eq!(boolean(no), Ok(false), "{no}");
        }
        assert_eq!(boolean("Maybe"), Err("`maybe` is not true or false".into()));
        assert_eq!(list(text)(" a, ,b ,"), Ok(vec!["a".into(), "b".into()]));
        assert_eq!(list(text)(""), Ok(vec![]));
        assert!(list(parsed::<u8>)("1, x").is_err());
    }

    #[test]
    fn web_origins_are_scheme_host_and_port_only() {
        for (given, origin) in [
            ("https://app.example.com", "https://app.example.com"),
            (" https://App.Example.com/ ", "https://app.example.com"),
            ("http://localhost:3000", "http://localhost:3000"),
            ("https://app.example.com:443", "https://app.example.com"),
            ("http://[::1]:8080/", "http://[::1]:8080"),
        ] {
            assert_eq!(web_origin(given).as_deref(), Ok(origin), "{given}");
        }
        for bad in [
            "",
            "app.example.com",
            "ftp://app.example.com",
            "https://app.example.com/path",
            "https://app.example.com/?q=1",
            "https://app.example.com/#top",
            "https://user:pw@app.example.com",
            "https://app.example.com//",
            "https://*.example.com",
            "null",
            "*",
        ] {
            assert!(web_origin(bad).is_err(), "{bad}");
        }
    }
}
