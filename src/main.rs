//! `auth-server`: loads the configuration and runs the server.

use std::process::ExitCode;

use auth_server::{Application, Config, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("auth-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    telemetry::init(config.log_format);
    if config.secret_key_generated {
        tracing::warn!(
            "SECRET_KEY is not set: a random key was generated, so tokens will not survive a restart \
             and several instances will not accept each other's tokens; set SECRET_KEY (32+ random bytes)"
        );
    }
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("auth-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        address = %app.local_addr(),
        database = app.state().config.database_url.backend_name(),
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
