//! The simulator's configuration: [`SimConfig`] (plain data) and [`SimArgs`] (the
//! `nowpilot sim` command line that produces it).

use std::{collections::BTreeMap, fmt, net::SocketAddr, time::Duration};

use base64::Engine as _;
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use url::Url;

use crate::error::SimConfigError;

/// A user who can authenticate (Basic auth, the OAuth password grant, the authorize form).
#[derive(Clone, Debug)]
pub struct SimUser {
    /// `sys_user.user_name`.
    pub user_name: String,
    /// The password.
    pub password: SecretString,
}

impl SimUser {
    /// A user with this name and password.
    pub fn new(user_name: impl Into<String>, password: impl Into<String>) -> Self {
        SimUser {
            user_name: user_name.into(),
            password: SecretString::from(password.into()),
        }
    }
}

/// An OAuth client registered in the "Application Registry".
#[derive(Clone, Debug)]
pub struct OAuthClient {
    /// `client_id`.
    pub client_id: String,
    /// `client_secret`.
    pub client_secret: SecretString,
    /// The "OAuth Application User" whose identity a `client_credentials` token carries; the
    /// first configured user when `None`.
    pub app_user: Option<String>,
}

impl OAuthClient {
    /// A client with this id and secret.
    pub fn new(client_id: impl Into<String>, client_secret: impl Into<String>) -> Self {
        OAuthClient {
            client_id: client_id.into(),
            client_secret: SecretString::from(client_secret.into()),
            app_user: None,
        }
    }
}

/// The HMAC key of the callbacks, given as `whsec_<base64>` (Standard Webhooks).
#[derive(Clone, Debug)]
pub struct WebhookSecret(SecretSlice<u8>);

impl WebhookSecret {
    /// Parses `whsec_<base64 key bytes>`.
    pub fn parse(secret: &str) -> Result<Self, SimConfigError> {
        let encoded = secret
            .strip_prefix("whsec_")
            .ok_or(SimConfigError::BadWebhookSecret)?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| SimConfigError::BadWebhookSecret)?;
        if key.is_empty() {
            return Err(SimConfigError::BadWebhookSecret);
        }
        Ok(WebhookSecret(SecretSlice::from(key)))
    }

    /// The raw key bytes.
    pub(crate) fn key(&self) -> &[u8] {
        self.0.expose_secret()
    }
}

/// Where the business rule sends callbacks.
#[derive(Clone, Debug, Default)]
pub struct WebhookConfig {
    /// The receiver; no callbacks are sent without one.
    pub url: Option<Url>,
    /// The signing key; without one, callbacks go out unsigned.
    pub secret: Option<WebhookSecret>,
    /// Changes made by this user fire nothing (the script's echo suppression).
    pub skip_user: Option<String>,
}

/// Injected latency and failures.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultSettings {
    /// Added to every Table API and token request.
    pub latency: Duration,
    /// The fraction (0..=1) of Table API requests that fail before doing anything, alternately
    /// with a 500 error envelope and a load balancer's 503 HTML page.
    pub fault_rate: f64,
    /// Seed of the fault sequence; random when `None`.
    pub seed: Option<u64>,
    /// Answer every Table API and token request with a fixed status for a while.
    pub forced: Option<ForcedStatus>,
}

/// "Answer every request with `status` for `duration`", counted from when it is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForcedStatus {
    /// The HTTP status to answer with.
    pub status: u16,
    /// For how long.
    pub duration: Duration,
}

/// Everything a [`crate::Simulator`] is built from. `Default` gives a test instance with one
/// user, `admin` / `admin`.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Users who can authenticate. They also become `sys_user` rows.
    pub users: Vec<SimUser>,
    /// Roles per user name (configured or seeded); a configured user without an entry here
    /// (and without a seeded role) is `admin`.
    pub user_roles: BTreeMap<String, Vec<String>>,
    /// Registered OAuth clients.
    pub oauth_clients: Vec<OAuthClient>,
    /// Access token lifespan.
    pub token_ttl: Duration,
    /// Refresh token lifespan.
    pub refresh_token_ttl: Duration,
    /// Table API requests allowed per user and window; no rate-limit rule when `None`.
    pub rate_limit: Option<u32>,
    /// The rate-limit window.
    pub rate_limit_window: Duration,
    /// Latency and failure injection at start.
    pub faults: FaultSettings,
    /// Load the demo estate (people, groups, CIs, changes, open incidents).
    pub seed_demo: bool,
    /// Callback target at start.
    pub webhook: WebhookConfig,
    /// `instance_name` as the callbacks report it.
    pub instance_name: String,
    /// How many requests the request log keeps.
    pub request_log_capacity: usize,
    /// How many callback outcomes the callback log keeps.
    pub callback_log_capacity: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            users: vec![SimUser::new("admin", "admin")],
            user_roles: BTreeMap::new(),
            oauth_clients: Vec::new(),
            token_ttl: Duration::from_secs(30 * 60),
            refresh_token_ttl: Duration::from_secs(100 * 24 * 3600),
            rate_limit: None,
            rate_limit_window: Duration::from_secs(3600),
            faults: FaultSettings::default(),
            seed_demo: false,
            webhook: WebhookConfig::default(),
            instance_name: "snowsim".to_owned(),
            request_log_capacity: 100_000,
            callback_log_capacity: 10_000,
        }
    }
}

/// The `nowpilot sim` command line.
///
/// The simulator is for tests and demos only: its `/_sim/` control endpoints need no
/// authentication, and it keeps everything in memory.
#[derive(Clone, clap::Args)]
pub struct SimArgs {
    /// Address to listen on (used by the caller that binds the listener).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// A user who can sign in, as NAME:PASSWORD (split at the first ':'); repeatable.
    /// Without any, the instance has admin:admin.
    #[arg(long = "user", value_name = "NAME:PASSWORD")]
    pub users: Vec<String>,
    /// Roles of a user, as NAME=ROLE[,ROLE...] (e.g. itil); repeatable. Users default to admin.
    #[arg(long = "user-roles", value_name = "NAME=ROLES")]
    pub user_roles: Vec<String>,
    /// A registered OAuth client, as ID:SECRET; repeatable.
    #[arg(long = "oauth-client", value_name = "ID:SECRET")]
    pub oauth_clients: Vec<String>,
    /// The OAuth Application User of a client (client_credentials grant), as ID=USER;
    /// repeatable. Default: the first --user.
    #[arg(long = "oauth-client-user", value_name = "ID=USER")]
    pub oauth_client_users: Vec<String>,
    /// Access token lifespan (e.g. 30m, 1s).
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = humantime::parse_duration)]
    pub token_ttl: Duration,
    /// Refresh token lifespan.
    #[arg(long, value_name = "DURATION", default_value = "100d", value_parser = humantime::parse_duration)]
    pub refresh_token_ttl: Duration,
    /// Table API requests allowed per user and window (a rate-limit rule); none by default.
    #[arg(long, value_name = "N")]
    pub rate_limit: Option<u32>,
    /// The rate-limit window.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = humantime::parse_duration)]
    pub rate_limit_window: Duration,
    /// Milliseconds added to every Table API and token request.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub latency_ms: u64,
    /// Fraction (0..1) of Table API requests that fail with 500 or 503.
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    pub fault_rate: f64,
    /// Seed for a repeatable fault sequence.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Load a small demo estate: users, groups, CIs, changes and open incidents.
    #[arg(long)]
    pub seed_demo: bool,
    /// Where the incident business rule POSTs its signed callbacks.
    #[arg(long, value_name = "URL")]
    pub webhook_url: Option<String>,
    /// Callback signing secret: whsec_ followed by the base64 key bytes.
    #[arg(
        long,
        value_name = "SECRET",
        env = "NOWPILOT_SIM_WEBHOOK_SECRET",
        hide_env_values = true
    )]
    pub webhook_secret: Option<String>,
    /// Changes made by this user fire no callback (echo suppression).
    #[arg(long, value_name = "NAME")]
    pub webhook_skip_user: Option<String>,
    /// The instance name the callbacks report.
    #[arg(long, value_name = "NAME", default_value = "snowsim")]
    pub instance_name: String,
    /// Serve HTTPS with a self-signed certificate for localhost, 127.0.0.1 and ::1 (real
    /// instances are HTTPS-only, and some clients refuse http://).
    #[arg(long)]
    pub tls: bool,
    /// With --tls, write the certificate (PEM) here so clients can trust it.
    #[arg(long, value_name = "FILE", requires = "tls")]
    pub tls_cert_out: Option<std::path::PathBuf>,
}

impl fmt::Debug for SimArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let before_colon = |v: &String| v.split(':').next().unwrap_or_default().to_owned();
        f.debug_struct("SimArgs")
            .field("listen", &self.listen)
            .field(
                "users",
                &self.users.iter().map(before_colon).collect::<Vec<_>>(),
            )
            .field("user_roles", &self.user_roles)
            .field(
                "oauth_clients",
                &self
                    .oauth_clients
                    .iter()
                    .map(before_colon)
                    .collect::<Vec<_>>(),
            )
            .field("oauth_client_users", &self.oauth_client_users)
            .field("token_ttl", &self.token_ttl)
            .field("refresh_token_ttl", &self.refresh_token_ttl)
            .field("rate_limit", &self.rate_limit)
            .field("rate_limit_window", &self.rate_limit_window)
            .field("latency_ms", &self.latency_ms)
            .field("fault_rate", &self.fault_rate)
            .field("seed", &self.seed)
            .field("seed_demo", &self.seed_demo)
            .field("webhook_url", &self.webhook_url)
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| "[REDACTED]"),
            )
            .field("webhook_skip_user", &self.webhook_skip_user)
            .field("instance_name", &self.instance_name)
            .field("tls", &self.tls)
            .field("tls_cert_out", &self.tls_cert_out)
            .finish()
    }
}

impl SimArgs {
    /// Checks the flags and builds the configuration.
    pub fn into_config(self) -> Result<SimConfig, SimConfigError> {
        let mut config = SimConfig {
            users: Vec::new(),
            seed_demo: self.seed_demo,
            instance_name: self.instance_name,
            token_ttl: nonzero(self.token_ttl, "--token-ttl")?,
            refresh_token_ttl: nonzero(self.refresh_token_ttl, "--refresh-token-ttl")?,
            rate_limit: self.rate_limit,
            rate_limit_window: nonzero(self.rate_limit_window, "--rate-limit-window")?,
            ..SimConfig::default()
        };
        for spec in &self.users {
            let (name, password) = spec.split_once(':').ok_or(SimConfigError::BadUser)?;
            if name.is_empty() {
                return Err(SimConfigError::BadUser);
            }
            if config.users.iter().any(|u| u.user_name == name) {
                return Err(SimConfigError::DuplicateUser(name.to_owned()));
            }
            config.users.push(SimUser::new(name, password));
        }
        if config.users.is_empty() {
            config.users = SimConfig::default().users;
        }
        for spec in &self.user_roles {
            let (name, roles) = spec
                .split_once('=')
                .ok_or_else(|| SimConfigError::BadUserRoles(spec.clone()))?;
            let roles: Vec<String> = roles
                .split(',')
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
                .collect();
            if name.is_empty() {
                return Err(SimConfigError::BadUserRoles(spec.clone()));
            }
            config.user_roles.insert(name.to_owned(), roles);
        }
        for spec in &self.oauth_clients {
            let (id, secret) = spec.split_once(':').ok_or(SimConfigError::BadOAuthClient)?;
            if id.is_empty() {
                return Err(SimConfigError::BadOAuthClient);
            }
            if config.oauth_clients.iter().any(|c| c.client_id == id) {
                return Err(SimConfigError::DuplicateOAuthClient(id.to_owned()));
            }
            config.oauth_clients.push(OAuthClient::new(id, secret));
        }
        for spec in &self.oauth_client_users {
            let bad = || SimConfigError::BadOAuthClientUser(spec.clone());
            let (id, user) = spec.split_once('=').ok_or_else(bad)?;
            let client = config
                .oauth_clients
                .iter_mut()
                .find(|c| c.client_id == id)
                .ok_or_else(bad)?;
            if user.is_empty() {
                return Err(bad());
            }
            client.app_user = Some(user.to_owned());
        }
        if !(0.0..=1.0).contains(&self.fault_rate) {
            return Err(SimConfigError::BadFaultRate(self.fault_rate));
        }
        config.faults = FaultSettings {
            latency: Duration::from_millis(self.latency_ms),
            fault_rate: self.fault_rate,
            seed: self.seed,
            forced: None,
        };
        if let Some(raw) = &self.webhook_url {
            let url = Url::parse(raw).map_err(|_| SimConfigError::BadWebhookUrl(raw.clone()))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(SimConfigError::BadWebhookUrl(raw.clone()));
            }
            config.webhook.url = Some(url);
        }
        if let Some(secret) = &self.webhook_secret {
            config.webhook.secret = Some(WebhookSecret::parse(secret)?);
        }
        config.webhook.skip_user = self.webhook_skip_user.filter(|u| !u.is_empty());
        Ok(config)
    }
}

fn nonzero(d: Duration, flag: &'static str) -> Result<Duration, SimConfigError> {
    if d.is_zero() {
        Err(SimConfigError::ZeroDuration(flag))
    } else {
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }

    fn parse(args: &[&str]) -> Result<SimConfig, SimConfigError> {
        let mut argv = vec!["sim"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap().sim.into_config()
    }

    #[test]
    fn flags_become_config() {
        let secret = format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(b"0123456789abcdef")
        );
        let c = parse(&[
            "--user",
            "bob:pa:ss",
            "--user",
            "svc:x",
            "--user-roles",
            "svc=itil, other",
            "--oauth-client",
            "cid:csecret",
            "--oauth-client-user",
            "cid=svc",
            "--token-ttl",
            "1s",
            "--rate-limit",
            "5",
            "--rate-limit-window",
            "2s",
            "--latency-ms",
            "7",
            "--fault-rate",
            "0.5",
            "--seed",
            "3",
            "--seed-demo",
            "--webhook-url",
            "http://127.0.0.1:9/hook",
            "--webhook-secret",
            &secret,
            "--webhook-skip-user",
            "svc",
        ])
        .unwrap();
        assert_eq!(c.users.len(), 2);
        assert_eq!(c.users[0].password.expose_secret(), "pa:ss");
        assert_eq!(c.user_roles["svc"], vec!["itil", "other"]);
        assert_eq!(c.oauth_clients[0].app_user.as_deref(), Some("svc"));
        assert_eq!(c.token_ttl, Duration::from_secs(1));
        assert_eq!(c.refresh_token_ttl, Duration::from_secs(100 * 86_400));
        assert_eq!(c.rate_limit, Some(5));
        assert_eq!(c.rate_limit_window, Duration::from_secs(2));
        assert_eq!(c.faults.latency, Duration::from_millis(7));
        assert_eq!(c.faults.seed, Some(3));
        assert!(c.seed_demo);
        assert_eq!(c.webhook.secret.unwrap().key(), b"0123456789abcdef");
        assert_eq!(c.webhook.skip_user.as_deref(), Some("svc"));
        assert_eq!(c.instance_name, "snowsim");
    }

    #[test]
    fn defaults_and_refusals() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.users.len(), 1);
        assert_eq!(c.users[0].user_name, "admin");
        assert_eq!(c.token_ttl, Duration::from_secs(1800));
        assert_eq!(c.rate_limit_window, Duration::from_secs(3600));

        assert_eq!(
            parse(&["--user", "nocolon"]).unwrap_err(),
            SimConfigError::BadUser
        );
        assert_eq!(
            parse(&["--user", ":pw"]).unwrap_err(),
            SimConfigError::BadUser
        );
        assert!(matches!(
            parse(&["--user", "a:1", "--user", "a:2"]),
            Err(SimConfigError::DuplicateUser(_))
        ));
        assert!(matches!(
            parse(&["--user-roles", "x"]),
            Err(SimConfigError::BadUserRoles(_))
        ));
        assert!(matches!(
            parse(&["--oauth-client-user", "nope=x"]),
            Err(SimConfigError::BadOAuthClientUser(_))
        ));
        assert!(matches!(
            parse(&["--fault-rate", "1.5"]),
            Err(SimConfigError::BadFaultRate(_))
        ));
        assert!(matches!(
            parse(&["--token-ttl", "0s"]),
            Err(SimConfigError::ZeroDuration(_))
        ));
        assert_eq!(
            parse(&["--webhook-secret", "plain"]).unwrap_err(),
            SimConfigError::BadWebhookSecret
        );
        assert!(matches!(
            parse(&["--webhook-url", "ftp://x"]),
            Err(SimConfigError::BadWebhookUrl(_))
        ));
    }

    #[test]
    fn every_flag_has_help() {
        use clap::CommandFactory;
        let command = Cli::command();
        for arg in command.get_arguments() {
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            assert!(!help.trim().is_empty(), "--{} has no help", arg.get_id());
        }
        let help = Cli::command().render_long_help().to_string();
        for flag in [
            "--user ",
            "--oauth-client-user",
            "--token-ttl",
            "--seed-demo",
            "--webhook-secret",
        ] {
            assert!(help.contains(flag), "{flag} missing from:\n{help}");
        }
    }

    #[test]
    fn debug_output_hides_secrets() {
        let cli = Cli::try_parse_from([
            "sim",
            "--user",
            "bob:hunter2",
            "--oauth-client",
            "cid:s3cret",
            "--webhook-secret",
            "whsec_c2VjcmV0",
        ])
        .unwrap();
        let shown = format!("{:?}", cli.sim);
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cret"),
            "{shown}"
        );
        assert!(!shown.contains("c2VjcmV0"), "{shown}");
        let config = cli.sim.into_config().unwrap();
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cret"),
            "{shown}"
        );
    }
}
