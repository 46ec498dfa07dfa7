//! Records related to an incident, for investigation notes: its configuration item, changes
//! on that CI around the incident, other open incidents on it, parent and children, and the
//! affected CIs listed in `task_ci`.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use nowpilot_model::Record;
use nowpilot_model::time::parse_glide;

use crate::client::{Client, ListRequest, ReadOptions};
use crate::error::Error;
use crate::query::EncodedQuery;

/// Most rows any helper here returns; investigation notes need the recent few, not history.
pub const RELATED_MAX_ROWS: usize = 200;

/// Fields read for change requests.
pub const CHANGE_FIELDS: &[&str] = &[
    "sys_id",
    "number",
    "short_description",
    "state",
    "type",
    "cmdb_ci",
    "assignment_group",
    "start_date",
    "end_date",
    "work_start",
    "work_end",
];

/// The date fields of a change whose values place it in time.
const CHANGE_DATES: [&str; 4] = ["work_start", "work_end", "start_date", "end_date"];

/// Sys_ids per `IN` condition, so URLs stay far below the 2 048 characters some proxies allow.
const IN_CHUNK: usize = 40;

/// `(any date >= from) AND (any date <= to)`: the change was planned or worked during the
/// window, including changes that started before it and ended after it. Each group is an
/// `^OR` chain, which ServiceNow binds tighter than `^`.
fn within_window(mut query: EncodedQuery, from: DateTime<Utc>, to: DateTime<Utc>) -> EncodedQuery {
    for (i, field) in CHANGE_DATES.iter().enumerate() {
        query = if i == 0 {
            query.gte_time(field, from)
        } else {
            query.or_gte_time(field, from)
        };
    }
    for (i, field) in CHANGE_DATES.iter().enumerate() {
        query = if i == 0 {
            query.lte_time(field, to)
        } else {
            query.or_lte_time(field, to)
        };
    }
    query
}

/// When a change happened, for ordering: actual start, else planned start, else the ends.
fn change_time(record: &Record) -> Option<DateTime<Utc>> {
    CHANGE_DATES
        .iter()
        .filter_map(|field| record.value(field).and_then(parse_glide))
        .next()
}

fn reference_values(rows: &[Record], field: &str) -> Vec<String> {
    let mut seen = HashSet::new();
    rows.iter()
        .filter_map(|row| row.value(field))
        .filter(|v| !v.is_empty())
        .filter(|v| seen.insert(v.to_string()))
        .map(str::to_owned)
        .collect()
}

impl Client {
    /// The configuration item (`cmdb_ci/<sys_id>`); `None` when it does not exist or an ACL
    /// hides it (ServiceNow cannot tell those apart).
    pub async fn configuration_item(&self, ci_sys_id: &str) -> Result<Option<Record>, Error> {
        match self
            .get("cmdb_ci", ci_sys_id, &ReadOptions::default())
            .await
        {
            Ok(record) => Ok(Some(record)),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Change requests on a CI that were planned or worked between `from` and `to`, newest
    /// first: those whose `cmdb_ci` is the CI, plus those that list it in `task_ci`.
    pub async fn changes_on_ci(
        &self,
        ci_sys_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Record>, Error> {
        let direct = within_window(EncodedQuery::new().eq("cmdb_ci", ci_sys_id), from, to)
            .order_by_desc("sys_created_on")
            .order_by("sys_id");
        let request = ListRequest::from_query(&direct)?.fields(CHANGE_FIELDS.iter().copied());
        let mut changes = self
            .list_all("change_request", &request, RELATED_MAX_ROWS)
            .await?;

        // On an instance that ignores the dot-walk, this reads every task on the CI; the
        // change_request query below still keeps only changes in the window.
        let links = EncodedQuery::new()
            .eq("ci_item", ci_sys_id)
            .eq("task.sys_class_name", "change_request")
            .order_by_desc("sys_created_on")
            .order_by("sys_id");
        let link_request = ListRequest::from_query(&links)?
            .fields(["task"])
            .exclude_reference_link(true);
        let link_rows = self
            .list_all("task_ci", &link_request, RELATED_MAX_ROWS * 5)
            .await?;
        let known: HashSet<String> = changes
            .iter()
            .filter_map(|c| c.sys_id())
            .map(str::to_owned)
            .collect();
        let extra: Vec<String> = reference_values(&link_rows, "task")
            .into_iter()
            .filter(|id| !known.contains(id))
            .collect();
        for chunk in extra.chunks(IN_CHUNK) {
            let query = within_window(EncodedQuery::new().in_list("sys_id", chunk), from, to);
            let request = ListRequest::from_query(&query)?.fields(CHANGE_FIELDS.iter().copied());
            changes.extend(
                self.list_all("change_request", &request, RELATED_MAX_ROWS)
                    .await?,
            );
        }
        // Newest first; changes without any date last.
        changes.sort_by_key(|c| std::cmp::Reverse(change_time(c)));
        changes.truncate(RELATED_MAX_ROWS);
        Ok(changes)
    }

    /// Active incidents on a CI, newest first, leaving out `exclude_sys_id` (the incident
    /// being investigated).
    pub async fn open_incidents_on_ci(
        &self,
        ci_sys_id: &str,
        exclude_sys_id: Option<&str>,
    ) -> Result<Vec<Record>, Error> {
        let mut query = EncodedQuery::new()
            .eq("cmdb_ci", ci_sys_id)
            .eq("active", "true");
        if let Some(exclude) = exclude_sys_id {
            query = query.ne("sys_id", exclude);
        }
        let query = query.order_by_desc("sys_created_on").order_by("sys_id");
        self.list_all(
            "incident",
            &ListRequest::from_query(&query)?,
            RELATED_MAX_ROWS,
        )
        .await
    }

    /// Incidents whose `parent_incident` is this one, oldest first.
    pub async fn children(&self, incident_sys_id: &str) -> Result<Vec<Record>, Error> {
        let query = EncodedQuery::new().eq("parent_incident", incident_sys_id);
        self.list_all(
            "incident",
            &ListRequest::from_query(&query)?,
            RELATED_MAX_ROWS,
        )
        .await
    }

    /// The incident's parent (`parent_incident`), `None` when it has none or it is not
    /// readable.
    pub async fn parent(&self, incident: &Record) -> Result<Option<Record>, Error> {
        let Some(parent) = incident.value("parent_incident").filter(|p| !p.is_empty()) else {
            return Ok(None);
        };
        match self.get("incident", parent, &ReadOptions::default()).await {
            Ok(record) => Ok(Some(record)),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The configuration items a task lists as affected (`task_ci.ci_item`), as `cmdb_ci`
    /// records.
    pub async fn affected_cis(&self, task_sys_id: &str) -> Result<Vec<Record>, Error> {
        let query = EncodedQuery::new().eq("task", task_sys_id);
        let request = ListRequest::from_query(&query)?
            .fields(["ci_item"])
            .exclude_reference_link(true);
        let rows = self.list_all("task_ci", &request, RELATED_MAX_ROWS).await?;
        let ids = reference_values(&rows, "ci_item");
        let mut cis = Vec::new();
        for chunk in ids.chunks(IN_CHUNK) {
            let query = EncodedQuery::new().in_list("sys_id", chunk);
            cis.extend(
                self.list_all(
                    "cmdb_ci",
                    &ListRequest::from_query(&query)?,
                    RELATED_MAX_ROWS,
                )
                .await?,
            );
        }
        Ok(cis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn window_query_shape() {
        let from = Utc.with_ymd_and_hms(2026, 5, 1, 8, 0, 0).unwrap();
        let to = Utc.with_ymd_and_hms(2026, 5, 1, 10, 0, 0).unwrap();
        let q = within_window(EncodedQuery::new().eq("cmdb_ci", "abc"), from, to)
            .build()
            .unwrap();
        assert_eq!(
            q,
            "cmdb_ci=abc^work_start>=2026-05-01 08:00:00^ORwork_end>=2026-05-01 08:00:00^ORstart_date>=2026-05-01 08:00:00^ORend_date>=2026-05-01 08:00:00\
^work_start<=2026-05-01 10:00:00^ORwork_end<=2026-05-01 10:00:00^ORstart_date<=2026-05-01 10:00:00^ORend_date<=2026-05-01 10:00:00"
        );
    }

    #[test]
    fn change_time_prefers_actual_start() {
        let mut r = Record::new();
        r.set("start_date", "2026-05-01 08:00:00");
        assert_eq!(change_time(&r), parse_glide("2026-05-01 08:00:00"));
        r.set("work_start", "2026-05-01 09:00:00");
        assert_eq!(change_time(&r), parse_glide("2026-05-01 09:00:00"));
        assert_eq!(change_time(&Record::new()), None);
    }
}
