//! Who may call: credentials, roles, the ACL model, and OAuth tokens.
//!
//! The ACL model is deliberately small, just enough to test permission handling: `admin` may
//! do everything; `itil` reads and writes incidents and reads the reference tables, but not
//! `sys_journal_field` (lists come back empty, single reads 404: the pitfall real integration
//! accounts hit); a user with neither role fails the API-level ACL on every table call.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use base64::Engine as _;
use rand::RngExt as _;
use secrecy::{ExposeSecret, SecretString};

use crate::{config::SimConfig, schema::id, seed::DEMO_USERS};

/// What a caller's roles allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AccessLevel {
    /// `admin`: everything.
    Admin,
    /// `itil`: incidents and the reference tables.
    Itil,
    /// Neither: no table access at all.
    NoRole,
}

/// How a table reads for a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadAccess {
    /// Rows are visible.
    Allowed,
    /// Rows are filtered out by a read ACL: lists are empty, single reads 404.
    Hidden,
}

/// A write operation, for ACL checks and error wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteOp {
    /// POST.
    Insert,
    /// PATCH / PUT.
    Update,
    /// DELETE.
    Delete,
}

impl WriteOp {
    /// The word ServiceNow uses in `ACL Exception <Op> Failed due to security constraints`.
    pub(crate) fn word(self) -> &'static str {
        match self {
            WriteOp::Insert => "Insert",
            WriteOp::Update => "Update",
            WriteOp::Delete => "Delete",
        }
    }
}

/// Read access of a caller with a role (callers without one never get this far).
pub(crate) fn read_access(level: AccessLevel, table: usize) -> ReadAccess {
    match level {
        AccessLevel::Admin => ReadAccess::Allowed,
        AccessLevel::Itil if table == id::SYS_JOURNAL_FIELD => ReadAccess::Hidden,
        AccessLevel::Itil => ReadAccess::Allowed,
        AccessLevel::NoRole => ReadAccess::Hidden,
    }
}

/// Whether a caller may perform a write on a table.
pub(crate) fn can_write(level: AccessLevel, table: usize, op: WriteOp) -> bool {
    match level {
        AccessLevel::Admin => true,
        AccessLevel::Itil => table == id::INCIDENT && op != WriteOp::Delete,
        AccessLevel::NoRole => false,
    }
}

/// Passwords and roles, fixed at start.
#[derive(Debug)]
pub(crate) struct Accounts {
    passwords: HashMap<String, SecretString>,
    roles: HashMap<String, Vec<String>>,
}

impl Accounts {
    /// Configured users (default role `admin`), seeded demo users (their own roles) and
    /// explicit role overrides.
    pub(crate) fn new(config: &SimConfig) -> Self {
        let mut roles: HashMap<String, Vec<String>> = HashMap::new();
        if config.seed_demo {
            for u in DEMO_USERS {
                roles.insert(
                    u.user_name.to_owned(),
                    u.roles.iter().map(|r| (*r).to_owned()).collect(),
                );
            }
        }
        let mut passwords = HashMap::new();
        for user in &config.users {
            roles
                .entry(user.user_name.clone())
                .or_insert_with(|| vec!["admin".to_owned()]);
            passwords.insert(user.user_name.clone(), user.password.clone());
        }
        for (user, list) in &config.user_roles {
            roles.insert(user.clone(), list.clone());
        }
        Accounts { passwords, roles }
    }

    /// Whether the password is right (compared in constant time).
    pub(crate) fn check_password(&self, user: &str, password: &str) -> bool {
        self.passwords
            .get(user)
            .is_some_and(|p| constant_time_eq(p.expose_secret().as_bytes(), password.as_bytes()))
    }

    /// What a user's roles allow.
    pub(crate) fn level(&self, user: &str) -> AccessLevel {
        let roles = self.roles.get(user).map(Vec::as_slice).unwrap_or_default();
        if roles.iter().any(|r| r == "admin") {
            AccessLevel::Admin
        } else if roles.iter().any(|r| r == "itil") {
            AccessLevel::Itil
        } else {
            AccessLevel::NoRole
        }
    }

    /// The first configured user, the default OAuth Application User.
    pub(crate) fn first_user(config: &SimConfig) -> Option<String> {
        config.users.first().map(|u| u.user_name.clone())
    }
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `Authorization: Basic ...` → (user, password); `None` when malformed.
pub(crate) fn parse_basic(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// `Authorization: Bearer ...` → the token.
pub(crate) fn parse_bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// An issued token or code: whose it is and until when.
#[derive(Debug, Clone)]
struct Grant {
    user: String,
    client_id: String,
    expires: Instant,
    /// The redirect URI an authorization code was issued for.
    redirect_uri: String,
}

/// Issued access tokens, refresh tokens and authorization codes.
#[derive(Default)]
pub(crate) struct Tokens {
    access: HashMap<String, Grant>,
    refresh: HashMap<String, Grant>,
    codes: HashMap<String, Grant>,
}

impl std::fmt::Debug for Tokens {
    // The maps are keyed by live credentials: show only how many there are.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("access", &self.access.len())
            .field("refresh", &self.refresh.len())
            .field("codes", &self.codes.len())
            .finish()
    }
}

/// A successful token grant.
pub(crate) struct Issued {
    pub(crate) access_token: String,
    pub(crate) refresh_token: Option<String>,
    pub(crate) user: String,
}

impl Tokens {
    /// The user an access token belongs to, if it is known and not expired.
    pub(crate) fn user_for_access(&self, token: &str, now: Instant) -> Option<String> {
        self.access
            .get(token)
            .filter(|g| g.expires > now)
            .map(|g| g.user.clone())
    }

    /// Issues an access token, and a refresh token when `refresh_ttl` is given.
    pub(crate) fn issue(
        &mut self,
        user: &str,
        client_id: &str,
        now: Instant,
        ttl: Duration,
        refresh_ttl: Option<Duration>,
    ) -> Issued {
        self.prune(now);
        let access_token = random_token();
        self.access
            .insert(access_token.clone(), grant(user, client_id, now, ttl, ""));
        let refresh_token = refresh_ttl.map(|ttl| {
            let token = random_token();
            self.refresh
                .insert(token.clone(), grant(user, client_id, now, ttl, ""));
            token
        });
        Issued {
            access_token,
            refresh_token,
            user: user.to_owned(),
        }
    }

    /// `grant_type=refresh_token`: a new access token; the refresh token stays the same.
    pub(crate) fn refresh(
        &mut self,
        refresh_token: &str,
        client_id: &str,
        now: Instant,
        ttl: Duration,
    ) -> Option<Issued> {
        let user = self
            .refresh
            .get(refresh_token)
            .filter(|g| g.expires > now && g.client_id == client_id)?
            .user
            .clone();
        let mut issued = self.issue(&user, client_id, now, ttl, None);
        issued.refresh_token = Some(refresh_token.to_owned());
        Some(issued)
    }

    /// Issues a single-use authorization code (valid 60 s).
    pub(crate) fn issue_code(
        &mut self,
        user: &str,
        client_id: &str,
        redirect_uri: &str,
        now: Instant,
    ) -> String {
        self.prune(now);
        let code = random_token();
        self.codes.insert(
            code.clone(),
            grant(user, client_id, now, Duration::from_secs(60), redirect_uri),
        );
        code
    }

    /// Redeems a code: removed on any attempt; the user when it is valid for this client (and
    /// this redirect URI, when one is given).
    pub(crate) fn redeem_code(
        &mut self,
        code: &str,
        client_id: &str,
        redirect_uri: Option<&str>,
        now: Instant,
    ) -> Option<String> {
        let grant = self.codes.remove(code)?;
        let uri_ok = redirect_uri.is_none_or(|uri| uri == grant.redirect_uri);
        (grant.expires > now && grant.client_id == client_id && uri_ok).then_some(grant.user)
    }

    /// Forgets every access token (refresh tokens stay valid), as when an administrator
    /// revokes sessions: clients must re-authenticate.
    pub(crate) fn revoke_access(&mut self) {
        self.access.clear();
    }

    fn prune(&mut self, now: Instant) {
        self.access.retain(|_, g| g.expires > now);
        self.refresh.retain(|_, g| g.expires > now);
        self.codes.retain(|_, g| g.expires > now);
    }
}

fn grant(user: &str, client_id: &str, now: Instant, ttl: Duration, redirect_uri: &str) -> Grant {
    Grant {
        user: user.to_owned(),
        client_id: client_id.to_owned(),
        // A TTL too large for the clock means "does not expire" in practice.
        expires: now
            .checked_add(ttl)
            .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 86_400)))
            .unwrap_or(now),
        redirect_uri: redirect_uri.to_owned(),
    }
}

/// An opaque token: 48 URL-safe characters.
fn random_token() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rng();
    (0..48)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SimUser;

    #[test]
    fn roles_and_acl() {
        let mut config = SimConfig {
            users: vec![
                SimUser::new("a", "pw"),
                SimUser::new("i", "pw"),
                SimUser::new("n", "pw"),
            ],
            seed_demo: true,
            ..SimConfig::default()
        };
        config.user_roles.insert("i".into(), vec!["itil".into()]);
        config.user_roles.insert("n".into(), vec!["other".into()]);
        let accounts = Accounts::new(&config);
        assert_eq!(accounts.level("a"), AccessLevel::Admin);
        assert_eq!(accounts.level("i"), AccessLevel::Itil);
        assert_eq!(accounts.level("n"), AccessLevel::NoRole);
        assert_eq!(accounts.level("nowpilot.integration"), AccessLevel::Itil);
        assert_eq!(accounts.level("stranger"), AccessLevel::NoRole);
        assert!(accounts.check_password("a", "pw"));
        assert!(!accounts.check_password("a", "pw2"));
        assert!(!accounts.check_password("nowpilot.integration", ""));

        assert_eq!(
            read_access(AccessLevel::Itil, id::SYS_JOURNAL_FIELD),
            ReadAccess::Hidden
        );
        assert_eq!(
            read_access(AccessLevel::Itil, id::SYS_USER),
            ReadAccess::Allowed
        );
        assert!(can_write(AccessLevel::Itil, id::INCIDENT, WriteOp::Update));
        assert!(!can_write(AccessLevel::Itil, id::INCIDENT, WriteOp::Delete));
        assert!(!can_write(
            AccessLevel::Itil,
            id::CHANGE_REQUEST,
            WriteOp::Insert
        ));
        assert!(can_write(
            AccessLevel::Admin,
            id::SYS_JOURNAL_FIELD,
            WriteOp::Delete
        ));
    }

    #[test]
    fn header_parsing() {
        assert_eq!(
            parse_basic("Basic YWRtaW46cDpx"),
            Some(("admin".into(), "p:q".into()))
        );
        assert_eq!(parse_basic("Basic !!!"), None);
        assert_eq!(parse_basic("Bearer x"), None);
        assert_eq!(parse_bearer("Bearer abc"), Some("abc"));
        assert_eq!(parse_bearer("bearer  abc "), Some("abc"));
        assert_eq!(parse_bearer("Bearer "), None);
    }

    #[test]
    fn tokens_expire_and_codes_are_single_use() {
        let mut tokens = Tokens::default();
        let t0 = Instant::now();
        let issued = tokens.issue(
            "u",
            "c",
            t0,
            Duration::from_secs(10),
            Some(Duration::from_secs(100)),
        );
        assert_eq!(
            tokens.user_for_access(&issued.access_token, t0),
            Some("u".into())
        );
        assert_eq!(
            tokens.user_for_access(&issued.access_token, t0 + Duration::from_secs(11)),
            None
        );
        let refresh = issued.refresh_token.unwrap();
        assert!(
            tokens
                .refresh(&refresh, "other", t0, Duration::from_secs(10))
                .is_none()
        );
        let again = tokens
            .refresh(&refresh, "c", t0, Duration::from_secs(10))
            .unwrap();
        assert_eq!(again.refresh_token.as_deref(), Some(refresh.as_str()));
        assert_ne!(again.access_token, issued.access_token);
        assert!(
            tokens
                .refresh(
                    &refresh,
                    "c",
                    t0 + Duration::from_secs(101),
                    Duration::from_secs(1)
                )
                .is_none()
        );

        let code = tokens.issue_code("u", "c", "http://x/cb", t0);
        assert_eq!(
            tokens.redeem_code(&code, "c", Some("http://x/cb"), t0),
            Some("u".into())
        );
        assert_eq!(
            tokens.redeem_code(&code, "c", Some("http://x/cb"), t0),
            None
        );
        let code = tokens.issue_code("u", "c", "http://x/cb", t0);
        assert_eq!(
            tokens.redeem_code(&code, "c", None, t0 + Duration::from_secs(61)),
            None
        );
        let code = tokens.issue_code("u", "c", "http://x/cb", t0);
        assert_eq!(
            tokens.redeem_code(&code, "c", Some("http://evil/cb"), t0),
            None
        );
    }
}
