//! `auth-server`: the command line. Every command reads the same configuration as the server.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use auth_server::app::StartError;
use auth_server::auth::tokens::TokenKeys;
use auth_server::config;
use auth_server::db::Db;
use auth_server::domain::{Email, Name};
use auth_server::service::admin::{self, SuperuserOutcome};
use auth_server::state::AppState;
use auth_server::{Application, Config, telemetry};
use clap::{Parser, Subcommand};

/// An authentication server: registration, login, JWT access and refresh tokens, sessions.
///
/// Configuration comes from the environment and an optional .env file in the working
/// directory (DATABASE_URL, SECRET_KEY, ...; see the README and .env.example). Every variable
/// is also a flag of `serve`: `auth-server serve --help` lists them all, with their defaults.
#[derive(Parser)]
#[command(name = "auth-server", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default): migrate the database, then serve HTTP on HOST:PORT.
    ///
    /// Every setting is a flag here and an environment variable (or a line of .env); a flag
    /// wins over its variable. The other commands read the same variables.
    Serve(Box<Config>),
    /// Apply the database migrations and exit.
    Migrate,
    /// Create a superuser (or, with --promote-existing, make the existing account one).
    ///
    /// The password of a new account is read from the AUTH_SERVER_PASSWORD environment
    /// variable or, without it, from the first line of standard input. It must pass the
    /// password policy. If an account already has the email, the command fails and changes
    /// nothing, unless --promote-existing is given: then that account, if its address is
    /// verified and it is active, becomes a superuser and keeps its password.
    CreateSuperuser {
        /// The account's email address.
        #[arg(long)]
        email: String,
        /// The account's display name (used for a new account).
        #[arg(long, default_value = "Administrator")]
        name: String,
        /// If an account already has this email (verified and active), make it a superuser (it
        /// keeps its password).
        #[arg(long)]
        promote_existing: bool,
    },
    /// Write a new private key for ALGORITHM=RS256, ES256 or EdDSA (PKCS#8 PEM, mode 0600).
    ///
    /// Point PRIVATE_KEY_FILE at it. An existing file is never overwritten.
    GenerateKey {
        /// RS256 (RSA 2048), ES256 (P-256) or EdDSA (Ed25519).
        #[arg(long)]
        algorithm: String,
        /// Where to write the key.
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Copy accounts from the original Python service's SQLite database.
    ///
    /// Copies email, name, the is_active / is_verified / is_superuser flags and the password
    /// hashes (passlib's bcrypt: each is verified at the account's next login and replaced by
    /// argon2id). Accounts whose email is already here are skipped and reported, so running it
    /// twice is safe. The target is the configured DATABASE_URL.
    ImportUsers {
        /// The original database, e.g. sqlite:///srv/old/sqlite.db or sqlite+aiosqlite:///./sqlite.db.
        #[arg(long)]
        from: String,
    },
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("auth-server: {message}");
    ExitCode::FAILURE
}

#[tokio::main]
async fn main() -> ExitCode {
    // .env before the command line: clap reads the settings' variables as it parses.
    let dotenv = config::load_dotenv();
    let cli: Cli = match config::parse_command_line() {
        Ok(cli) => cli,
        Err(e) => return fail(e),
    };
    // Making a key needs no configuration (and may come before there is a valid one).
    if let Some(Command::GenerateKey { algorithm, out }) = &cli.command {
        return generate_key(algorithm, out);
    }
    // `serve` has its settings from its flags and the environment; the other commands, and
    // none (which serves), from the environment.
    let (command, config) = match cli.command {
        Some(Command::Serve(flags)) => (None, dotenv.and_then(|()| flags.validated())),
        command => (command, dotenv.and_then(|()| Config::from_env())),
    };
    let config = match config {
        Ok(config) => config,
        Err(e) => return fail(e),
    };
    telemetry::init(config.logging.format);
    match command {
        None => serve(config).await,
        Some(Command::Migrate) => migrate(config).await,
        Some(Command::CreateSuperuser {
            email,
            name,
            promote_existing,
        }) => create_superuser(config, &email, &name, promote_existing).await,
        Some(Command::ImportUsers { from }) => import_users(config, &from).await,
        Some(Command::Serve(_) | Command::GenerateKey { .. }) => {
            unreachable!("handled before the configuration is read")
        }
    }
}

async fn serve(config: Config) -> ExitCode {
    if config.tokens.secret_key_generated {
        tracing::warn!(
            "SECRET_KEY is not set: a random key was generated, so tokens will not survive a restart \
             and several instances will not accept each other's tokens; set SECRET_KEY (32+ random bytes)"
        );
    }
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!("{e}");
            return fail(e);
        }
    };
    tracing::info!(
        address = %app.local_addr(),
        database = app.state().config.database.url.backend_name(),
        "auth-server listening; API docs at /docs"
    );
    match app.run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server error");
            ExitCode::FAILURE
        }
    }
}

async fn connect(config: &Config) -> Result<Db, StartError> {
    let database = &config.database;
    let db = Db::connect_with_retry(
        &database.url,
        Some(2),
        database.sqlite_synchronous,
        database.connect_timeout,
    )
    .await
    .map_err(|source| StartError::Connect {
        backend: database.url.backend_name(),
        source,
    })?;
    db.migrate().await?;
    Ok(db)
}

async fn migrate(config: Config) -> ExitCode {
    match connect(&config).await {
        Ok(db) => {
            db.close().await;
            println!("migrations applied");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn read_password() -> Result<String, String> {
    if let Ok(password) = std::env::var("AUTH_SERVER_PASSWORD") {
        return Ok(password);
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("Password for the new superuser (the input is shown): ");
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password: {e}"))?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    if password.is_empty() {
        return Err(
            "no password given: set AUTH_SERVER_PASSWORD or pipe it on standard input".into(),
        );
    }
    Ok(password)
}

async fn create_superuser(
    config: Config,
    email: &str,
    name: &str,
    promote_existing: bool,
) -> ExitCode {
    let email = match Email::parse("email", email) {
        Ok(e) => e,
        Err(e) => return fail(format!("--email {}", e.message)),
    };
    let name = match Name::parse("name", name) {
        Ok(n) => n,
        Err(e) => return fail(format!("--name {}", e.message)),
    };
    let tokens = match TokenKeys::new(&config.tokens) {
        Ok(tokens) => tokens,
        Err(e) => return fail(e),
    };
    let db = match connect(&config).await {
        Ok(db) => db,
        Err(e) => return fail(e),
    };
    let state = match AppState::new(config, db.clone(), tokens, auth_server::Clock::system()) {
        Ok(state) => state,
        Err(e) => return fail(e),
    };
    let outcome =
        admin::create_superuser(&state, &email, &name, promote_existing, read_password).await;
    db.close().await;
    match outcome {
        Ok(SuperuserOutcome::Created(id)) => {
            println!("created superuser {} ({id})", email.as_str());
            ExitCode::SUCCESS
        }
        Ok(SuperuserOutcome::Promoted(id)) => {
            println!("{} ({id}) is now a superuser", email.as_str());
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

async fn import_users(config: Config, from: &str) -> ExitCode {
    let db = match connect(&config).await {
        Ok(db) => db,
        Err(e) => return fail(e),
    };
    let limits = auth_server::auth::password::HashLimits::from_config(&config.argon2);
    let result = auth_server::service::import::import_users(
        &db,
        auth_server::Clock::system().now_ms(),
        from,
        &limits,
    )
    .await;
    db.close().await;
    match result {
        Ok(report) => {
            for email in &report.duplicates {
                println!("skipped {email}: an account with this email exists already");
            }
            for (email, why) in &report.invalid {
                println!("skipped {email}: {why}");
            }
            println!(
                "imported {} account(s); skipped {} already present, {} invalid",
                report.imported,
                report.duplicates.len(),
                report.invalid.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn generate_key(algorithm: &str, out: &std::path::Path) -> ExitCode {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let algorithm = match algorithm.parse::<auth_server::config::SigningAlgorithm>() {
        Ok(a) if !a.is_symmetric() => a,
        _ => {
            return fail(format!(
                "--algorithm `{algorithm}`: use RS256, ES256 or EdDSA"
            ));
        }
    };
    let pem = match auth_server::auth::keys::generate(algorithm.jwt()) {
        Ok(pem) => pem,
        Err(e) => return fail(e),
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out);
    let written = file.and_then(|mut f| f.write_all(pem.as_bytes()));
    match written {
        Ok(()) => {
            println!(
                "wrote a new {} private key to {}; set ALGORITHM={} and PRIVATE_KEY_FILE={}",
                algorithm.name(),
                out.display(),
                algorithm.name(),
                out.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("cannot write {}: {e}", out.display())),
    }
}
