//! Logging: its format. `RUST_LOG` sets the filter (read by `telemetry`, as tracing does).

#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Logging")]
pub struct LoggingConfig {
    /// text, or json: one JSON object a line. Text is coloured only on a terminal, and never
    /// with NO_COLOR set
    #[arg(
        long = "log-format",
        env = "LOG_FORMAT",
        value_name = "FORMAT",
        default_value = "text",
        value_parser = log_format
    )]
    pub format: LogFormat,

    /// One INFO line per request (method, path, route, request id, status, latency) and the
    /// request's span around every line it logs. Off by default, as in Keycloak: it costs about
    /// a quarter of a cheap route's throughput. Off, a 5xx still logs one ERROR line with the
    /// method, route and request id
    #[arg(
        long = "access-log",
        env = "ACCESS_LOG",
        value_name = "BOOL",
        default_value = "false",
        value_parser = super::values::boolean
    )]
    pub access_log: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

fn log_format(text: &str) -> Result<LogFormat, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(format!("`{other}` is not text or json")),
    }
}
