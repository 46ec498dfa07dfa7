//! `nowpilot connect`: choose Basic or OAuth 2.0, verify, save.
//!
//! The checks run in order (endpoint format, reachability, credentials, incident read and
//! write, journal, close codes) and stop at the first failure, which is printed with the
//! troubleshooting advice and its own exit code. Only a verified connection is saved, so a typo
//! never replaces a working one. Connecting again changes the credentials.

use std::{
    io::Read,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{Args, ValueEnum};
use nowpilot_admin::store::ConnectionStore;
use nowpilot_servicenow::{AuthKind, Grant, InstanceUrl, ServiceNowConfig, check_connection};
use secrecy::SecretString;

use super::{EXIT_CONFIG, EXIT_FAILURE, fail, report};
use crate::{Exit, output::Style, telemetry};

mod authorize;

/// `nowpilot connect` flags.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The instance root, e.g. https://acme.service-now.com (https required except for localhost).
    #[arg(long, value_name = "URL")]
    instance: String,
    /// How to authenticate.
    #[arg(long, value_enum, default_value_t = AuthArg::Basic)]
    auth: AuthArg,
    /// The integration user (Basic, and the OAuth password grant).
    #[arg(long, value_name = "NAME")]
    username: Option<String>,
    /// A file holding the integration user's password ("-" reads standard input).
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// The OAuth grant.
    #[arg(long, value_enum)]
    grant: Option<GrantArg>,
    /// The OAuth client id (Application Registry).
    #[arg(long, value_name = "ID")]
    client_id: Option<String>,
    /// A file holding the OAuth client secret ("-" reads standard input).
    #[arg(long, value_name = "FILE")]
    client_secret_file: Option<PathBuf>,
    /// A file holding an OAuth refresh token (grant refresh_token).
    #[arg(long, value_name = "FILE")]
    refresh_token_file: Option<PathBuf>,
    /// The redirect URL registered on the OAuth client (grant authorization_code); nowpilot
    /// listens on it, so it must be a loopback address.
    #[arg(
        long,
        value_name = "URL",
        default_value = "http://127.0.0.1:8765/oauth/callback"
    )]
    redirect_uri: String,
    /// How long to wait for the browser sign-in (grant authorization_code).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    authorize_timeout: Duration,
    /// Time limit for each call to the instance.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Also switch on the Quickstart plan ([worker] quickstart = true): High (priority 2)
    /// incidents are acknowledged and investigated autonomously.
    #[arg(long)]
    quickstart: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AuthArg {
    Basic,
    Oauth,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum GrantArg {
    ClientCredentials,
    Password,
    RefreshToken,
    AuthorizationCode,
}

impl From<GrantArg> for Grant {
    fn from(g: GrantArg) -> Self {
        match g {
            GrantArg::ClientCredentials => Grant::ClientCredentials,
            GrantArg::Password => Grant::Password,
            GrantArg::RefreshToken => Grant::RefreshToken,
            GrantArg::AuthorizationCode => Grant::AuthorizationCode,
        }
    }
}

/// Runs `nowpilot connect`.
pub async fn run(config_path: &Path, args: ConnectArgs) -> Result<(), Exit> {
    telemetry::init_logging(&telemetry::TelemetryConfig::default(), Some("warn"));
    let style = Style::detect();
    let mut config = build_config(&args)?;

    if config.grant == Some(Grant::AuthorizationCode) && config.refresh_token.is_none() {
        let refresh = authorize::run(&config, &args.redirect_uri, args.authorize_timeout).await?;
        config.refresh_token = Some(refresh);
    }

    let base_dir = config_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    if !args.json {
        println!(
            "Checking the connection to {} ...",
            config.instance_url.trim()
        );
    }
    let report = check_connection(&config, base_dir).await;
    if args.json {
        let json = serde_json::to_string_pretty(&report)
            .map_err(|e| fail(EXIT_FAILURE, format!("cannot encode the report: {e}")))?;
        println!("{json}");
    } else {
        report::print(&report, config.auth, style);
    }
    if let Some(failure) = report.failure() {
        if !args.json {
            println!("\nNothing was saved; the previous connection, if any, is unchanged.");
        }
        return Err(Exit(report::exit_code(failure)));
    }

    // Save the instance URL as normalised by the checks (no trailing slash).
    config.instance_url = report.instance.clone();
    let section = toml::Table::try_from(config.with_secrets())
        .map_err(|e| fail(EXIT_FAILURE, format!("cannot encode the connection: {e}")))?;
    let store = ConnectionStore::new(config_path);
    let outcome = store
        .save(section)
        .map_err(|e| fail(EXIT_FAILURE, format!("cannot save the connection: {e}")))?;
    if !args.json {
        println!(
            "\nSaved to {} (readable only by you){}.",
            store.connection_file().display(),
            if outcome.had_connection_file {
                ", replacing the previous connection"
            } else {
                ""
            }
        );
        if outcome.created_main {
            println!("Created {} to include it.", store.main_config().display());
        } else if outcome.changed_include {
            println!("{} now includes it.", store.main_config().display());
        }
        if outcome.removed_inline_section {
            println!(
                "Moved the [servicenow] section out of {}.",
                store.main_config().display()
            );
        }
    }
    if args.quickstart {
        let changed = store.enable_quickstart().map_err(|e| {
            fail(
                EXIT_FAILURE,
                format!("cannot enable the Quickstart plan: {e}"),
            )
        })?;
        if !args.json {
            println!(
                "Quickstart plan {}: High (priority 2) incidents are acknowledged and investigated autonomously, after your own plans.",
                if changed { "on" } else { "already on" }
            );
        }
    }
    Ok(())
}

/// Turns the flags into a `[servicenow]` section, reading secrets from their files now, so the
/// saved connection does not depend on files that may be temporary.
fn build_config(args: &ConnectArgs) -> Result<ServiceNowConfig, Exit> {
    let usage = |msg: &str| fail(EXIT_CONFIG, format!("connect: {msg}"));
    // Validate the URL's shape before anything else (trailing slashes are fine: removed).
    if let Err(e) = InstanceUrl::parse(&args.instance) {
        let style = Style::detect();
        println!(
            "{}",
            style.red(&style.bold(report::headline(
                nowpilot_servicenow::FailureKind::EndpointFormat,
                AuthKind::Basic
            )))
        );
        println!("  {e}");
        return Err(Exit(report::exit_code(
            nowpilot_servicenow::FailureKind::EndpointFormat,
        )));
    }
    let mut config = match args.auth {
        AuthArg::Basic => {
            let username = args
                .username
                .clone()
                .ok_or_else(|| usage("--auth basic needs --username"))?;
            let password = read_secret(args.password_file.as_deref(), "--password-file")?
                .ok_or_else(|| usage("--auth basic needs --password-file"))?;
            ServiceNowConfig::basic(args.instance.clone(), username, password)
        }
        AuthArg::Oauth => {
            let grant: Grant = args
                .grant
                .ok_or_else(|| {
                    usage("--auth oauth needs --grant (client-credentials, password, refresh-token or authorization-code)")
                })?
                .into();
            let client_id = args
                .client_id
                .clone()
                .ok_or_else(|| usage("--auth oauth needs --client-id"))?;
            let secret = read_secret(args.client_secret_file.as_deref(), "--client-secret-file")?
                .ok_or_else(|| usage("--auth oauth needs --client-secret-file"))?;
            let mut config =
                ServiceNowConfig::oauth(args.instance.clone(), client_id, secret, grant);
            match grant {
                Grant::Password => {
                    config.username = Some(
                        args.username
                            .clone()
                            .ok_or_else(|| usage("--grant password needs --username"))?,
                    );
                    config.password = Some(
                        read_secret(args.password_file.as_deref(), "--password-file")?
                            .ok_or_else(|| usage("--grant password needs --password-file"))?,
                    );
                }
                Grant::RefreshToken => {
                    config.refresh_token = Some(
                        read_secret(args.refresh_token_file.as_deref(), "--refresh-token-file")?
                            .ok_or_else(|| {
                                usage("--grant refresh-token needs --refresh-token-file")
                            })?,
                    );
                }
                Grant::ClientCredentials | Grant::AuthorizationCode => {}
            }
            config
        }
    };
    config.timeout = args.timeout;
    Ok(config)
}

/// Reads one secret from a file or, for `-`, from standard input. One trailing newline is
/// dropped; the secret is never printed.
fn read_secret(path: Option<&Path>, flag: &str) -> Result<Option<SecretString>, Exit> {
    let Some(path) = path else {
        return Ok(None);
    };
    let text = if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map_err(|e| {
            fail(
                EXIT_CONFIG,
                format!("connect: {flag}: cannot read standard input: {e}"),
            )
        })?;
        s
    } else {
        std::fs::read_to_string(path).map_err(|e| {
            fail(
                EXIT_CONFIG,
                format!("connect: {flag}: cannot read {}: {e}", path.display()),
            )
        })?
    };
    let secret = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    if secret.is_empty() {
        return Err(fail(
            EXIT_CONFIG,
            format!("connect: {flag}: {} is empty", path.display()),
        ));
    }
    Ok(Some(SecretString::from(secret.to_owned())))
}
