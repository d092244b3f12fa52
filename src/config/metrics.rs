//! Metrics (`GET /metrics`, `crate::metrics`): whether they are served, the bearer token that
//! guards them, and the separate address they may be served on instead of the main listener.

use std::net::SocketAddr;

use super::values::{boolean, parsed};
use super::{ConfigError, Secret, ServerConfig};

/// The shortest METRICS_TOKEN: a bearer secret that is not guessable.
pub const METRICS_TOKEN_MIN_LENGTH: usize = 16;

#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Metrics")]
pub struct MetricsConfig {
    /// Serve GET /metrics (Prometheus / OpenMetrics text); false: /metrics is 404 and no
    /// request is measured
    #[arg(
        id = "metrics",
        long = "metrics",
        env = "METRICS",
        value_name = "BOOL",
        default_value = "true",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = boolean
    )]
    pub enabled: bool,

    /// A secret (at least 16 characters) that GET /metrics then requires as
    /// `Authorization: Bearer <token>` (default: none, /metrics is open)
    #[arg(
        long = "metrics-token",
        env = "METRICS_TOKEN",
        value_name = "TOKEN",
        value_parser = token,
        hide_env_values = true
    )]
    pub token: Option<Secret<String>>,

    /// Serve /metrics on a listener of its own at this address (such as 127.0.0.1:9100; port 0
    /// picks a free one) and not on the main one (default: on the main listener)
    #[arg(
        long = "metrics-address",
        env = "METRICS_ADDRESS",
        value_name = "ADDRESS:PORT",
        value_parser = parsed::<SocketAddr>
    )]
    pub address: Option<SocketAddr>,
}

fn token(text: &str) -> Result<Secret<String>, String> {
    let token = text.trim();
    // The token is a secret: no error repeats it.
    if token.chars().count() < METRICS_TOKEN_MIN_LENGTH {
        return Err(format!(
            "must be at least {METRICS_TOKEN_MIN_LENGTH} characters (openssl rand -hex 32 makes one)"
        ));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be printable ASCII without spaces (it is sent in a header)".into());
    }
    Ok(Secret::new(token.to_string()))
}

impl MetricsConfig {
    /// The separate listener's address must not be the main one's.
    pub fn validate(&self, server: &ServerConfig) -> Result<(), ConfigError> {
        if let Some(address) = self.address
            && address.port() != 0
            && address.port() == server.port
            && (address.ip() == server.host
                || address.ip().is_unspecified()
                || server.host.is_unspecified())
        {
            return Err(ConfigError::new(
                "METRICS_ADDRESS",
                format!(
                    "{address} is the main listener's address (HOST, PORT); leave METRICS_ADDRESS unset to serve /metrics there"
                ),
            ));
        }
        Ok(())
    }

    /// Where /metrics is served, if anywhere.
    pub fn exposure(&self) -> Exposure {
        match (self.enabled, self.address) {
            (false, _) => Exposure::Off,
            (true, None) => Exposure::MainListener,
            (true, Some(address)) => Exposure::Separate(address),
        }
    }
}

/// Where GET /metrics is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exposure {
    /// METRICS=false: nowhere.
    Off,
    MainListener,
    /// METRICS_ADDRESS: on a listener of its own.
    Separate(SocketAddr),
}
