//! The server: where it listens, the addresses it is known by, which browsers' origins may
//! call it, and which proxies' `X-Forwarded-For` it believes.

use std::net::IpAddr;

use super::values::{List, boolean, http_url, list, parsed};
use crate::net::IpNet;

#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Server")]
pub struct ServerConfig {
    /// The address to listen on
    #[arg(
        long = "host",
        env = "HOST",
        value_name = "ADDRESS",
        default_value = "127.0.0.1",
        value_parser = parsed::<IpAddr>
    )]
    pub host: IpAddr,

    /// The port to listen on (0 picks a free port)
    #[arg(
        long = "port",
        env = "PORT",
        value_name = "PORT",
        default_value = "8000",
        value_parser = parsed::<u16>
    )]
    pub port: u16,

    /// The base of the links in mail (your front end's address); never taken from the Host
    /// header
    #[arg(
        long = "public-url",
        env = "PUBLIC_URL",
        value_name = "URL",
        default_value = "http://localhost:8000",
        value_parser = http_url
    )]
    pub public_url: String,

    /// This server's own public address, for the discovery document (default: PUBLIC_URL)
    #[arg(
        long = "api-url",
        env = "API_URL",
        value_name = "URL",
        value_parser = http_url
    )]
    api_url: Option<String>,

    /// Comma-separated origins allowed to call the API from a browser
    /// (https://app.example.com); `*` and `null` are refused (default: none)
    #[arg(
        long = "cors-origins",
        env = "CORS_ORIGINS",
        value_name = "ORIGINS",
        default_value = "",
        hide_default_value = true,
        value_parser = list(origin)
    )]
    pub cors_origins: List<String>,

    /// Adds Strict-Transport-Security (only behind TLS)
    #[arg(
        long = "hsts",
        env = "HSTS",
        value_name = "BOOL",
        default_value = "false",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = boolean
    )]
    pub hsts: bool,

    /// Comma-separated addresses or CIDR networks (10.0.0.0/8, ::1) whose X-Forwarded-For is
    /// believed (default: none)
    #[arg(
        long = "trusted-proxies",
        env = "TRUSTED_PROXIES",
        value_name = "NETWORKS",
        default_value = "",
        hide_default_value = true,
        value_parser = list(parsed::<IpNet>)
    )]
    pub trusted_proxies: List<IpNet>,
}

impl ServerConfig {
    /// This server's own public address (API_URL, or else PUBLIC_URL), without a trailing `/`.
    pub fn api_url(&self) -> &str {
        self.api_url.as_deref().unwrap_or(&self.public_url)
    }
}

/// An origin such as `https://app.example.com`, without a trailing `/`: no wildcard, no `null`,
/// and nothing a response header could not carry.
fn origin(text: &str) -> Result<String, String> {
    let origin = text.trim();
    let bare = origin.trim_end_matches('/');
    // What `HeaderValue::from_str` accepts: visible characters and tabs, no control characters.
    let header_safe = origin
        .bytes()
        .all(|b| (b >= 0x20 && b != 0x7f) || b == b'\t');
    let valid = (origin.starts_with("http://") || origin.starts_with("https://"))
        && !bare.contains(['*', ' '])
        && header_safe;
    if !valid {
        return Err(format!(
            "`{origin}` is not an origin such as https://app.example.com (wildcards and `null` are not allowed)"
        ));
    }
    Ok(bare.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_exact() {
        assert_eq!(
            origin(" https://app.example.com/ ").as_deref(),
            Ok("https://app.example.com")
        );
        for bad in [
            "*",
            "null",
            "https://*.example.com",
            "ftp://x",
            "https://a\u{7f}",
        ] {
            assert!(origin(bad).is_err(), "{bad}");
        }
    }
}
