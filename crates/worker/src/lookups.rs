//! Cached reads of instance data the actions need: the priority matrix, close codes, hold
//! reasons, users, groups and group membership.
//!
//! Everything is cached per connection (a new connection starts empty) with a time-to-live,
//! so a changed matrix or a new group member is picked up without a restart. The caches are
//! bounded: past [`MAX_ENTRIES`] a map is simply cleared.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use nowpilot_servicenow::query::EncodedQuery;
use nowpilot_servicenow::{Choice, Client, Error, ListRequest, PriorityMatrixReport};
use tokio::time::Instant;

/// How long the priority matrix is trusted.
const MATRIX_TTL: Duration = Duration::from_secs(3600);
/// How long choice lists, users and groups are trusted.
const REFERENCE_TTL: Duration = Duration::from_secs(600);
/// How long a membership answer is trusted.
const MEMBERSHIP_TTL: Duration = Duration::from_secs(300);
/// Entries per map before it is cleared.
const MAX_ENTRIES: usize = 10_000;

/// A ServiceNow user, as far as nowpilot needs one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserRef {
    /// `sys_id`.
    pub(crate) sys_id: String,
    /// `user_name`.
    pub(crate) user_name: String,
    /// `name` (the display name).
    pub(crate) name: String,
}

/// Who a journal author is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Author {
    /// Exactly one user has this user name or display name.
    User(UserRef),
    /// No user has it.
    Unknown,
    /// Several users have it (e.g. one's display name is another's user name).
    Ambiguous(usize),
}

struct Timed<V> {
    at: Instant,
    value: V,
}

struct TtlMap<K, V> {
    ttl: Duration,
    map: HashMap<K, Timed<V>>,
}

impl<K: Eq + Hash, V: Clone> TtlMap<K, V> {
    fn new(ttl: Duration) -> Self {
        TtlMap {
            ttl,
            map: HashMap::new(),
        }
    }

    fn get(&self, key: &K) -> Option<V> {
        self.map
            .get(key)
            .filter(|t| t.at.elapsed() < self.ttl)
            .map(|t| t.value.clone())
    }

    fn put(&mut self, key: K, value: V) {
        if self.map.len() >= MAX_ENTRIES {
            self.map.clear();
        }
        self.map.insert(
            key,
            Timed {
                at: Instant::now(),
                value,
            },
        );
    }
}

struct Caches {
    generation: u64,
    matrix: TtlMap<(), PriorityMatrixReport>,
    choices: TtlMap<&'static str, Vec<Choice>>,
    users_by_name: TtlMap<String, Option<UserRef>>,
    authors: TtlMap<String, Author>,
    groups: TtlMap<String, Option<String>>,
    members: TtlMap<(String, String), bool>,
}

impl Caches {
    fn new(generation: u64) -> Self {
        Caches {
            generation,
            matrix: TtlMap::new(MATRIX_TTL),
            choices: TtlMap::new(REFERENCE_TTL),
            users_by_name: TtlMap::new(REFERENCE_TTL),
            authors: TtlMap::new(REFERENCE_TTL),
            groups: TtlMap::new(REFERENCE_TTL),
            members: TtlMap::new(MEMBERSHIP_TTL),
        }
    }
}

/// The caches of one worker process.
pub(crate) struct Lookups {
    caches: Mutex<Caches>,
    /// Held while filling a cache entry, so a burst of passes on a cold cache asks ServiceNow
    /// once instead of once per pass (the others wait, then find the entry).
    fill: tokio::sync::Mutex<()>,
}

impl Default for Lookups {
    fn default() -> Self {
        Lookups {
            caches: Mutex::new(Caches::new(0)),
            fill: tokio::sync::Mutex::new(()),
        }
    }
}

/// One connection's view of the caches: the client plus the generation it belongs to.
pub(crate) struct Scoped<'a> {
    lookups: &'a Lookups,
    client: &'a Client,
}

fn first_user(records: &[nowpilot_model::Record]) -> Option<UserRef> {
    records.first().map(|r| UserRef {
        sys_id: r.value_or_empty("sys_id").to_owned(),
        user_name: r.value_or_empty("user_name").to_owned(),
        name: r.value_or_empty("name").to_owned(),
    })
}

impl Lookups {
    /// The caches for `client`, emptied first when the connection changed.
    pub(crate) fn scoped<'a>(&'a self, client: &'a Client, generation: u64) -> Scoped<'a> {
        let mut caches = self.lock();
        if caches.generation != generation {
            *caches = Caches::new(generation);
        }
        Scoped {
            lookups: self,
            client,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Caches> {
        self.caches.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Scoped<'_> {
    /// The instance's priority matrix (or the default, with the reason, when unreadable).
    pub(crate) async fn priority_matrix(&self) -> PriorityMatrixReport {
        if let Some(report) = self.lookups.lock().matrix.get(&()) {
            return report;
        }
        let _fill = self.lookups.fill.lock().await;
        if let Some(report) = self.lookups.lock().matrix.get(&()) {
            return report;
        }
        let report = self.client.priority_matrix().await;
        self.lookups.lock().matrix.put((), report.clone());
        report
    }

    async fn choices(&self, element: &'static str) -> Result<Vec<Choice>, Error> {
        if let Some(list) = self.lookups.lock().choices.get(&element) {
            return Ok(list);
        }
        let _fill = self.lookups.fill.lock().await;
        if let Some(list) = self.lookups.lock().choices.get(&element) {
            return Ok(list);
        }
        let list = self.client.choices("incident", element).await?;
        self.lookups.lock().choices.put(element, list.clone());
        Ok(list)
    }

    /// `incident.close_code` choices.
    pub(crate) async fn close_codes(&self) -> Result<Vec<Choice>, Error> {
        self.choices("close_code").await
    }

    /// `incident.hold_reason` choices.
    pub(crate) async fn hold_reasons(&self) -> Result<Vec<Choice>, Error> {
        self.choices("hold_reason").await
    }

    /// The user with this exact user name.
    pub(crate) async fn user_by_name(&self, user_name: &str) -> Result<Option<UserRef>, Error> {
        let key = user_name.to_owned();
        if let Some(user) = self.lookups.lock().users_by_name.get(&key) {
            return Ok(user);
        }
        let _fill = self.lookups.fill.lock().await;
        if let Some(user) = self.lookups.lock().users_by_name.get(&key) {
            return Ok(user);
        }
        let query = EncodedQuery::new().eq("user_name", user_name);
        let request = ListRequest::from_query(&query)?
            .fields(["sys_id", "user_name", "name"])
            .limit(2);
        let page = self.client.list("sys_user", &request).await?;
        let user = first_user(&page.records);
        self.lookups.lock().users_by_name.put(key, user.clone());
        Ok(user)
    }

    /// Who wrote a journal entry: the one user whose user name or display name is `author`.
    pub(crate) async fn author(&self, author: &str) -> Result<Author, Error> {
        let key = author.to_owned();
        if let Some(found) = self.lookups.lock().authors.get(&key) {
            return Ok(found);
        }
        let _fill = self.lookups.fill.lock().await;
        if let Some(found) = self.lookups.lock().authors.get(&key) {
            return Ok(found);
        }
        let query = EncodedQuery::new()
            .eq("user_name", author)
            .or_eq("name", author);
        let found = match ListRequest::from_query(&query) {
            // A name that cannot be queried safely (e.g. containing '^') is nobody we know.
            Err(_) => Author::Unknown,
            Ok(request) => {
                let request = request.fields(["sys_id", "user_name", "name"]).limit(10);
                let page = self.client.list("sys_user", &request).await?;
                let mut ids: Vec<&str> = page
                    .records
                    .iter()
                    .map(|r| r.value_or_empty("sys_id"))
                    .collect();
                ids.sort_unstable();
                ids.dedup();
                match ids.len() {
                    0 => Author::Unknown,
                    1 => first_user(&page.records).map_or(Author::Unknown, Author::User),
                    n => Author::Ambiguous(n),
                }
            }
        };
        self.lookups.lock().authors.put(key, found.clone());
        Ok(found)
    }

    /// The sys_id of the group with this exact name.
    pub(crate) async fn group_id(&self, name: &str) -> Result<Option<String>, Error> {
        let key = name.to_owned();
        if let Some(id) = self.lookups.lock().groups.get(&key) {
            return Ok(id);
        }
        let query = EncodedQuery::new().eq("name", name);
        let request = ListRequest::from_query(&query)?.fields(["sys_id"]).limit(2);
        let page = self.client.list("sys_user_group", &request).await?;
        let id = page
            .records
            .first()
            .map(|r| r.value_or_empty("sys_id").to_owned())
            .filter(|id| !id.is_empty());
        self.lookups.lock().groups.put(key, id.clone());
        Ok(id)
    }

    /// Whether the user is a member of the group (`sys_user_grmember`).
    pub(crate) async fn is_member(&self, group_id: &str, user_id: &str) -> Result<bool, Error> {
        let key = (group_id.to_owned(), user_id.to_owned());
        if let Some(member) = self.lookups.lock().members.get(&key) {
            return Ok(member);
        }
        let query = EncodedQuery::new()
            .eq("group", group_id)
            .eq("user", user_id);
        let request = ListRequest::from_query(&query)?.fields(["sys_id"]).limit(1);
        let page = self.client.list("sys_user_grmember", &request).await?;
        let member = !page.records.is_empty();
        self.lookups.lock().members.put(key, member);
        Ok(member)
    }

    /// A group name or sys_id as a sys_id (acknowledge's `assignment_group`).
    pub(crate) async fn resolve_group(&self, name_or_id: &str) -> Result<Option<String>, Error> {
        if nowpilot_model::is_sys_id(name_or_id) {
            return Ok(Some(name_or_id.to_owned()));
        }
        self.group_id(name_or_id).await
    }

    /// A user name or sys_id as a sys_id (acknowledge's `assigned_to`).
    pub(crate) async fn resolve_user(&self, name_or_id: &str) -> Result<Option<String>, Error> {
        if nowpilot_model::is_sys_id(name_or_id) {
            return Ok(Some(name_or_id.to_owned()));
        }
        Ok(self.user_by_name(name_or_id).await?.map(|u| u.sys_id))
    }
}

/// Finds a choice by value or label, case-insensitively; returns its stored value.
pub(crate) fn match_choice<'a>(choices: &'a [Choice], wanted: &str) -> Option<&'a Choice> {
    let wanted = wanted.trim();
    choices.iter().find(|c| c.value == wanted).or_else(|| {
        choices.iter().find(|c| {
            c.value.eq_ignore_ascii_case(wanted) || c.label.trim().eq_ignore_ascii_case(wanted)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choice(value: &str, label: &str) -> Choice {
        Choice {
            value: value.into(),
            label: label.into(),
            sequence: None,
        }
    }

    #[test]
    fn choices_match_value_or_label_ignoring_case() {
        let list = [
            choice("1", "Awaiting Caller"),
            choice("5", "Awaiting Change"),
            choice("Solution provided", "Solution provided"),
        ];
        assert_eq!(match_choice(&list, "awaiting change").unwrap().value, "5");
        assert_eq!(match_choice(&list, "1").unwrap().value, "1");
        assert_eq!(
            match_choice(&list, "SOLUTION PROVIDED").unwrap().value,
            "Solution provided"
        );
        assert!(match_choice(&list, "Awaiting").is_none());
    }
}
