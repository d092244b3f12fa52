//! The database: which one (`DATABASE_URL`), its pool, how durably SQLite commits, and how
//! often ended sessions, spent tokens and old mail are purged.

use std::str::FromStr;
use std::time::Duration;

use super::values::{converted, parsed, positive, positive_capped, seconds};

#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Database")]
pub struct DatabaseConfig {
    /// sqlite://path (created if missing; sqlite:///abs/path for an absolute path) or
    /// postgres://user:password@host:5432/db; the original service's
    /// sqlite+aiosqlite:///./sqlite.db form is accepted too
    #[arg(
        long = "database-url",
        env = "DATABASE_URL",
        value_name = "URL",
        default_value = "sqlite://sqlite.db",
        value_parser = DatabaseUrl::parse,
        hide_env_values = true
    )]
    pub url: DatabaseUrl,

    /// The pool size (default: 8 on SQLite, 10 on PostgreSQL; at most 10000)
    #[arg(
        id = "database_max_connections",
        long = "database-max-connections",
        env = "DATABASE_MAX_CONNECTIONS",
        value_name = "N",
        value_parser = converted(positive_capped(10_000u64), |n| n as u32)
    )]
    pub max_connections: Option<u32>,

    /// How long start-up waits for an unreachable database before it exits
    #[arg(
        long = "database-connect-timeout-seconds",
        env = "DATABASE_CONNECT_TIMEOUT_SECONDS",
        value_name = "SECONDS",
        default_value = "10",
        value_parser = seconds(parsed::<u64>)
    )]
    pub connect_timeout: Duration,

    /// SQLite only: off, normal, full or extra. full: an acknowledged write survives a power
    /// loss; normal: it survives a crash of the process, but a power loss can undo the latest
    /// commits
    #[arg(
        long = "sqlite-synchronous",
        env = "SQLITE_SYNCHRONOUS",
        value_name = "MODE",
        default_value = "normal",
        value_parser = parsed::<SqliteSynchronous>
    )]
    pub sqlite_synchronous: SqliteSynchronous,

    /// How often ended sessions, spent tokens and old mail are deleted
    #[arg(
        long = "purge-interval-seconds",
        env = "PURGE_INTERVAL_SECONDS",
        value_name = "SECONDS",
        default_value = "3600",
        value_parser = seconds(positive)
    )]
    pub purge_interval: Duration,
}

/// Which database the `DATABASE_URL` selects. The URL is kept in the form sqlx understands.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `sqlite://path` (sqlx form) or `sqlite+aiosqlite:///path` (the original service's form).
    Sqlite(String),
    /// `postgres://...` or `postgresql://...`.
    Postgres(String),
}

impl DatabaseUrl {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        let (scheme, rest) = raw.split_once(':').ok_or_else(|| {
            "expected a URL such as sqlite://sqlite.db or postgres://...".to_string()
        })?;
        // `sqlite+aiosqlite`, `postgresql+asyncpg`: SQLAlchemy's dialect+driver form.
        let dialect = scheme
            .split('+')
            .next()
            .unwrap_or(scheme)
            .to_ascii_lowercase();
        match dialect.as_str() {
            "sqlite" => {
                if scheme.contains('+') {
                    // SQLAlchemy: `sqlite:///relative.db`, `sqlite:////absolute.db`.
                    let path = rest.strip_prefix("///").ok_or_else(|| {
                        "expected sqlite+aiosqlite:///path/to/file.db".to_string()
                    })?;
                    if path.is_empty() {
                        return Err("the SQLite file path is empty".into());
                    }
                    Ok(Self::Sqlite(format!("sqlite://{path}")))
                } else {
                    let path = rest.trim_start_matches("//");
                    if path.is_empty() {
                        return Err("the SQLite file path is empty".into());
                    }
                    Ok(Self::Sqlite(format!("sqlite:{rest}")))
                }
            }
            "postgres" | "postgresql" => Ok(Self::Postgres(format!("postgres:{rest}"))),
            other => Err(format!(
                "unsupported database `{other}`: use sqlite://... or postgres://..."
            )),
        }
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }
}

/// A PostgreSQL URL may carry a password: `Debug` shows the URL without it.
impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(url) => f.debug_tuple("Sqlite").field(url).finish(),
            Self::Postgres(url) => {
                let shown = match url::Url::parse(url) {
                    Ok(mut parsed) => {
                        if parsed.password().is_some() {
                            let _ = parsed.set_password(Some("redacted"));
                        }
                        if parsed.query().is_some() {
                            parsed.set_query(Some("redacted"));
                        }
                        parsed.to_string()
                    }
                    Err(_) => "[redacted]".to_string(),
                };
                f.debug_tuple("Postgres").field(&shown).finish()
            }
        }
    }
}

/// How durably SQLite commits (`PRAGMA synchronous`, in WAL mode). See the README.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SqliteSynchronous {
    /// No fsync at all: survives a crash of the process, not of the machine.
    Off,
    /// The WAL is synced at checkpoints only: a power loss can undo the latest commits.
    Normal,
    /// The WAL is synced at every commit: an acknowledged write survives a power loss.
    Full,
    /// As FULL (in WAL mode SQLite syncs nothing more).
    Extra,
}

impl FromStr for SqliteSynchronous {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" => Ok(Self::Off),
            "normal" => Ok(Self::Normal),
            "full" => Ok(Self::Full),
            "extra" => Ok(Self::Extra),
            _ => Err(format!("`{s}` is not one of off, normal, full, extra")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_forms() {
        assert_eq!(
            DatabaseUrl::parse("sqlite+aiosqlite:///./sqlite.db").unwrap(),
            DatabaseUrl::Sqlite("sqlite://./sqlite.db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite+aiosqlite:////var/lib/a.db").unwrap(),
            DatabaseUrl::Sqlite("sqlite:///var/lib/a.db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("postgresql://u@h/db").unwrap(),
            DatabaseUrl::Postgres("postgres://u@h/db".into())
        );
        assert!(DatabaseUrl::parse("mysql://x").is_err());
    }

    #[test]
    fn debug_hides_the_database_password() {
        let url = DatabaseUrl::parse("postgres://app:hunter2-secret@db:5432/auth").unwrap();
        let shown = format!("{url:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("db:5432/auth"), "{shown}");
    }
}
