//! Passkeys (WebAuthn): whether they are offered, the relying party they are made for (its RP
//! ID, name and the web origins allowed to use them), how long a ceremony lives, and what a
//! signature counter that did not grow means.

use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use super::values::{List, boolean, list, parsed, seconds, text, web_origin, within};
use super::{ConfigError, MfaConfig, ServerConfig};

#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Passkeys")]
pub struct PasskeyConfig {
    /// Offer passkeys (WebAuthn): registration, sign-in with a passkey, a passkey as second
    /// factor. false removes every passkey route, and passkeys stop counting as a second factor
    #[arg(
        id = "passkeys",
        long = "passkeys",
        env = "PASSKEYS",
        value_name = "BOOL",
        default_value = "true",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = boolean
    )]
    pub enabled: bool,

    /// The WebAuthn relying party ID: a domain (never an IP address) that every origin below is
    /// or lies under; passkeys are bound to it, so changing it orphans every passkey (default:
    /// the host of PUBLIC_URL)
    #[arg(
        long = "webauthn-rp-id",
        env = "WEBAUTHN_RP_ID",
        value_name = "DOMAIN",
        value_parser = rp_id
    )]
    rp_id: Option<String>,

    /// The relying party's name, which authenticators show beside the passkey (default:
    /// MFA_ISSUER)
    #[arg(
        long = "webauthn-rp-name",
        env = "WEBAUTHN_RP_NAME",
        value_name = "NAME",
        value_parser = text
    )]
    rp_name: Option<String>,

    /// Comma-separated web origins (https://app.example.com, http://localhost:8000) whose pages
    /// may use the passkeys, compared exactly (scheme, host, port); each host must be the RP ID
    /// or lie under it (default: the origins of PUBLIC_URL and API_URL that do)
    #[arg(
        long = "webauthn-origins",
        env = "WEBAUTHN_ORIGINS",
        value_name = "ORIGINS",
        default_value = "",
        hide_default_value = true,
        value_parser = list(web_origin)
    )]
    origins: List<String>,

    /// How long a passkey ceremony (registration, sign-in, step-up) may take, between its
    /// options and the answer (30 to 900; also the options' `timeout`)
    #[arg(
        long = "webauthn-challenge-seconds",
        env = "WEBAUTHN_CHALLENGE_SECONDS",
        value_name = "SECONDS",
        default_value = "300",
        value_parser = seconds(within(30u64, 900))
    )]
    pub challenge_ttl: Duration,

    /// What a signature counter that did not grow means (a possibly cloned authenticator):
    /// `refuse` the sign-in (401 PASSKEY_COUNTER_REGRESSED) or `report` it and let it through;
    /// either way it is logged and the user is mailed
    #[arg(
        long = "webauthn-counter-policy",
        env = "WEBAUTHN_COUNTER_POLICY",
        value_name = "POLICY",
        default_value = "refuse",
        value_parser = parsed::<CounterPolicy>
    )]
    pub counter_policy: CounterPolicy,
}

/// What WEBAUTHN_COUNTER_POLICY does with a counter that did not grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterPolicy {
    Refuse,
    Report,
}

impl FromStr for CounterPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "refuse" => Ok(Self::Refuse),
            "report" => Ok(Self::Report),
            _ => Err(format!("`{s}` is not one of refuse, report")),
        }
    }
}

/// A relying party ID as given: lower case, no trailing dot; refused when it is an IP address
/// or not a domain at all.
fn rp_id(text: &str) -> Result<String, String> {
    let id = text.trim().trim_end_matches('.').to_ascii_lowercase();
    check_domain(&id)?;
    Ok(id)
}

fn check_domain(id: &str) -> Result<(), String> {
    if id
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .is_ok()
    {
        return Err(format!(
            "`{id}` is an IP address; WebAuthn needs a domain (use localhost for local development)"
        ));
    }
    let labels_ok = !id.is_empty()
        && id.len() <= 253
        && id.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if !labels_ok {
        return Err(format!(
            "`{id}` is not a domain such as example.com (internationalised names in their xn-- form)"
        ));
    }
    Ok(())
}

/// The host of an origin (`https://app.example.com:8443` → `app.example.com`).
fn origin_host(origin: &str) -> Option<String> {
    let url = url::Url::parse(origin).ok()?;
    url.host_str().map(str::to_ascii_lowercase)
}

/// Whether `host` is `rp_id` or lies under it.
fn is_under(host: &str, rp_id: &str) -> bool {
    host == rp_id || host.ends_with(&format!(".{rp_id}"))
}

impl PasskeyConfig {
    /// The relying party ID (after [`PasskeyConfig::validate`]).
    pub fn rp_id(&self) -> &str {
        self.rp_id.as_deref().unwrap_or("localhost")
    }

    /// The relying party's name (after [`PasskeyConfig::validate`]).
    pub fn rp_name(&self) -> &str {
        self.rp_name.as_deref().unwrap_or("auth-server")
    }

    /// The allowed origins (after [`PasskeyConfig::validate`]).
    pub fn origins(&self) -> &[String] {
        &self.origins
    }

    /// Fills in the defaults from PUBLIC_URL, API_URL and MFA_ISSUER, and checks that every
    /// origin lies under the RP ID. Nothing is checked while passkeys are off.
    pub fn validate(&mut self, server: &ServerConfig, mfa: &MfaConfig) -> Result<(), ConfigError> {
        if self.rp_name.is_none() {
            self.rp_name = Some(mfa.issuer.clone());
        }
        if !self.enabled {
            return Ok(());
        }
        let public = web_origin(&origin_of(&server.public_url))
            .map_err(|e| ConfigError::new("PUBLIC_URL", e))?;
        let rp_id = match &self.rp_id {
            Some(id) => id.clone(),
            None => {
                let host = origin_host(&public).unwrap_or_default();
                let host = host.trim_start_matches('[').trim_end_matches(']');
                check_domain(host).map_err(|e| {
                    ConfigError::new(
                        "WEBAUTHN_RP_ID",
                        format!(
                            "unset, so PUBLIC_URL's host is taken, and {e}; set WEBAUTHN_RP_ID (or PASSKEYS=false)"
                        ),
                    )
                })?;
                host.to_string()
            }
        };
        if self.origins.is_empty() {
            let api = web_origin(&origin_of(server.api_url())).ok();
            for origin in std::iter::once(public).chain(api) {
                let under = origin_host(&origin).is_some_and(|h| is_under(&h, &rp_id));
                if under && !self.origins.contains(&origin) {
                    self.origins.push(origin);
                }
            }
            if self.origins.is_empty() {
                return Err(ConfigError::new(
                    "WEBAUTHN_ORIGINS",
                    format!(
                        "unset, and neither PUBLIC_URL's nor API_URL's host is WEBAUTHN_RP_ID `{rp_id}` or under it: name the origins the passkeys are used from"
                    ),
                ));
            }
        } else if let Some(stray) = self
            .origins
            .iter()
            .find(|o| !origin_host(o).is_some_and(|h| is_under(&h, &rp_id)))
        {
            return Err(ConfigError::new(
                "WEBAUTHN_ORIGINS",
                format!("`{stray}`'s host is neither WEBAUTHN_RP_ID `{rp_id}` nor under it"),
            ));
        }
        self.rp_id = Some(rp_id);
        Ok(())
    }
}

/// The scheme, host and port of an `http(s)://` address (a path after them dropped).
fn origin_of(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) => parsed.origin().ascii_serialization(),
        Err(_) => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rp_ids_are_domains() {
        assert_eq!(rp_id(" Example.COM. ").as_deref(), Ok("example.com"));
        assert_eq!(rp_id("localhost").as_deref(), Ok("localhost"));
        for bad in [
            "127.0.0.1",
            "::1",
            "[::1]",
            "exa mple.com",
            "a..b",
            "",
            "https://x.com",
        ] {
            assert!(rp_id(bad).is_err(), "{bad}");
        }
        assert!(rp_id("10.0.0.1").unwrap_err().contains("IP address"));
    }

    #[test]
    fn origins_lie_under_the_rp_id() {
        assert!(is_under("example.com", "example.com"));
        assert!(is_under("app.example.com", "example.com"));
        assert!(!is_under("badexample.com", "example.com"));
        assert!(!is_under("example.com", "app.example.com"));
        assert_eq!(
            origin_host("https://App.example.com:8443").as_deref(),
            Some("app.example.com")
        );
    }

    #[test]
    fn counter_policies() {
        assert_eq!("REFUSE".parse::<CounterPolicy>(), Ok(CounterPolicy::Refuse));
        assert_eq!("report".parse::<CounterPolicy>(), Ok(CounterPolicy::Report));
        assert!("ignore".parse::<CounterPolicy>().is_err());
    }
}
