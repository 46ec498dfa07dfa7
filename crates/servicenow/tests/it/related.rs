//! Related records, choices and the priority matrix: the queries sent and the answers used.

use chrono::{TimeZone, Utc};
use nowpilot_model::{Impact, Priority, PriorityMatrix, Record, Urgency};
use nowpilot_servicenow::MatrixSource;

use crate::fake::*;

const CI: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

#[tokio::test]
async fn configuration_item_missing_is_none() {
    let fake = Fake::start(|_| {
        Reply::envelope(
            404,
            "No Record found",
            Some("Record doesn't exist or ACL restricts the record retrieval"),
        )
    })
    .await;
    assert_eq!(fake.basic().configuration_item(CI).await.unwrap(), None);
    assert_eq!(
        fake.requests()[0].path,
        format!("/api/now/v2/table/cmdb_ci/{CI}")
    );
}

#[tokio::test]
async fn changes_on_ci_combines_direct_and_task_ci_changes_newest_first() {
    let fake = Fake::start(|r| match r.path.as_str() {
        "/api/now/v2/table/change_request"
            if r.param("sysparm_query")
                .is_some_and(|q| q.starts_with("cmdb_ci=")) =>
        {
            Reply::result(serde_json::json!([
                {"sys_id": "c1", "number": "CHG1", "work_start": "2026-05-01 08:00:00"},
                {"sys_id": "c2", "number": "CHG2", "start_date": "2026-05-01 09:30:00"}
            ]))
        }
        "/api/now/v2/table/change_request" => Reply::result(serde_json::json!([
            {"sys_id": "c3", "number": "CHG3", "work_start": "2026-05-01 09:00:00"}
        ])),
        "/api/now/v2/table/task_ci" => {
            Reply::result(serde_json::json!([{"task": "c1"}, {"task": "c3"}, {"task": "c3"}]))
        }
        other => panic!("unexpected {other}"),
    })
    .await;
    let from = Utc.with_ymd_and_hms(2026, 5, 1, 6, 0, 0).unwrap();
    let to = Utc.with_ymd_and_hms(2026, 5, 1, 10, 0, 0).unwrap();
    let changes = fake.basic().changes_on_ci(CI, from, to).await.unwrap();
    let numbers: Vec<_> = changes.iter().map(|c| c.value("number").unwrap()).collect();
    assert_eq!(numbers, ["CHG2", "CHG3", "CHG1"]);

    let requests = fake.requests();
    assert_eq!(requests.len(), 3);
    let window = "work_start>=2026-05-01 06:00:00^ORwork_end>=2026-05-01 06:00:00^ORstart_date>=2026-05-01 06:00:00^ORend_date>=2026-05-01 06:00:00\
^work_start<=2026-05-01 10:00:00^ORwork_end<=2026-05-01 10:00:00^ORstart_date<=2026-05-01 10:00:00^ORend_date<=2026-05-01 10:00:00";
    assert_eq!(
        requests[0].param("sysparm_query").unwrap(),
        format!("cmdb_ci={CI}^{window}^ORDERBYDESCsys_created_on^ORDERBYsys_id")
    );
    assert_eq!(
        requests[1].param("sysparm_query").unwrap(),
        format!(
            "ci_item={CI}^task.sys_class_name=change_request^ORDERBYDESCsys_created_on^ORDERBYsys_id"
        )
    );
    assert_eq!(requests[1].param("sysparm_fields"), Some("task"));
    // Only the change not already found is asked for, within the same window.
    assert_eq!(
        requests[2].param("sysparm_query").unwrap(),
        format!("sys_idINc3^{window}^ORDERBYsys_created_on^ORDERBYsys_id")
    );
}

#[tokio::test]
async fn open_incidents_children_parent_and_affected_cis() {
    let fake = Fake::start(|r| match r.path.as_str() {
        "/api/now/v2/table/incident" => Reply::result(serde_json::json!([{"sys_id": "i2", "number": "INC2"}])),
        "/api/now/v2/table/task_ci" => Reply::result(serde_json::json!([{"ci_item": "ci1"}, {"ci_item": "ci2"}])),
        "/api/now/v2/table/cmdb_ci" => Reply::result(serde_json::json!([{"sys_id": "ci1", "name": "edge-lb"}, {"sys_id": "ci2", "name": "checkout-api"}])),
        path if path.starts_with("/api/now/v2/table/incident/") => Reply::result(serde_json::json!({"sys_id": "p1", "number": "INC0"})),
        other => panic!("unexpected {other}"),
    })
    .await;
    let client = fake.basic();
    let open = client.open_incidents_on_ci(CI, Some(SYS_ID)).await.unwrap();
    assert_eq!(open.len(), 1);
    let children = client.children(SYS_ID).await.unwrap();
    assert_eq!(children.len(), 1);
    let mut incident = Record::new();
    assert_eq!(
        client.parent(&incident).await.unwrap(),
        None,
        "no parent, no call"
    );
    incident.set("parent_incident", "p1");
    assert_eq!(
        client
            .parent(&incident)
            .await
            .unwrap()
            .unwrap()
            .value("number"),
        Some("INC0")
    );
    let cis = client.affected_cis(SYS_ID).await.unwrap();
    assert_eq!(cis.len(), 2);

    let queries: Vec<_> = fake
        .requests()
        .iter()
        .map(|r| (r.path.clone(), r.param("sysparm_query").map(str::to_owned)))
        .collect();
    assert_eq!(
        queries,
        [
            (
                "/api/now/v2/table/incident".to_owned(),
                Some(format!(
                    "cmdb_ci={CI}^active=true^sys_id!={SYS_ID}^ORDERBYDESCsys_created_on^ORDERBYsys_id"
                ))
            ),
            (
                "/api/now/v2/table/incident".to_owned(),
                Some(format!(
                    "parent_incident={SYS_ID}^ORDERBYsys_created_on^ORDERBYsys_id"
                ))
            ),
            ("/api/now/v2/table/incident/p1".to_owned(), None),
            (
                "/api/now/v2/table/task_ci".to_owned(),
                Some(format!("task={SYS_ID}^ORDERBYsys_created_on^ORDERBYsys_id"))
            ),
            (
                "/api/now/v2/table/cmdb_ci".to_owned(),
                Some("sys_idINci1,ci2^ORDERBYsys_created_on^ORDERBYsys_id".to_owned())
            ),
        ]
    );
}

#[tokio::test]
async fn a_sys_id_that_would_widen_a_query_is_refused() {
    let fake = Fake::start(|_| Reply::result(serde_json::json!([]))).await;
    let error = fake
        .basic()
        .open_incidents_on_ci("x^ORactive=false", None)
        .await
        .unwrap_err();
    assert!(
        matches!(error, nowpilot_servicenow::Error::Query(_)),
        "{error:?}"
    );
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn choices_are_read_in_order_and_deduplicated_across_languages() {
    let fake = Fake::start(|_| {
        Reply::result(serde_json::json!([
            {"value": "Solution provided", "label": "Solution provided", "sequence": "10"},
            {"value": "Workaround provided", "label": "Workaround provided", "sequence": "20"},
            {"value": "Solution provided", "label": "Lösung bereitgestellt", "sequence": "10"},
            {"value": "Duplicate", "label": "Duplicate", "sequence": ""}
        ]))
    })
    .await;
    let codes = fake.basic().close_codes().await.unwrap();
    let values: Vec<_> = codes
        .iter()
        .map(|c| (c.value.as_str(), c.sequence))
        .collect();
    assert_eq!(
        values,
        [
            ("Solution provided", Some(10)),
            ("Workaround provided", Some(20)),
            ("Duplicate", None)
        ]
    );
    let r = &fake.requests()[0];
    assert_eq!(r.path, "/api/now/v2/table/sys_choice");
    assert_eq!(
        r.param("sysparm_query"),
        Some("name=incident^element=close_code^inactive=false^ORDERBYsequence")
    );
    assert_eq!(r.param("sysparm_fields"), Some("value,label,sequence"));
    fake.basic().hold_reasons().await.unwrap();
    assert_eq!(
        fake.requests()[1].param("sysparm_query"),
        Some("name=incident^element=hold_reason^inactive=false^ORDERBYsequence")
    );
}

#[tokio::test]
async fn priority_matrix_from_the_instance_or_the_default() {
    let fake = Fake::start(|_| {
        let mut rows = Vec::new();
        for i in 1..=3 {
            for u in 1..=3 {
                // A customised lookup: everything is one step more urgent than out of the box.
                let p = (i + u - 2).max(1);
                rows.push(serde_json::json!({"impact": i.to_string(), "urgency": u.to_string(), "priority": p.to_string()}));
            }
        }
        Reply::result(serde_json::Value::Array(rows))
    })
    .await;
    let report = fake.basic().priority_matrix().await;
    assert_eq!(
        report.source,
        MatrixSource::Instance {
            rows: 9,
            missing_cells: 0
        }
    );
    assert_eq!(
        report.matrix.priority(Impact::Medium, Urgency::Medium),
        Priority::High
    );
    assert_eq!(fake.requests()[0].path, "/api/now/v2/table/dl_u_priority");
    assert!(
        fake.requests()[0]
            .param("sysparm_query")
            .unwrap()
            .starts_with("active=true")
    );

    let empty = Fake::start(|_| Reply::result(serde_json::json!([]))).await;
    let report = empty.basic().priority_matrix().await;
    assert_eq!(report.source, MatrixSource::DefaultEmpty);
    assert_eq!(report.matrix, PriorityMatrix::default());

    let denied = Fake::start(|_| {
        Reply::envelope(
            403,
            "User Not Authorized",
            Some("Failed API level ACL Validation"),
        )
    })
    .await;
    let report = denied.basic().priority_matrix().await;
    assert!(
        matches!(report.source, MatrixSource::DefaultUnreadable { ref reason } if reason.contains("403")),
        "{:?}",
        report.source
    );
    assert_eq!(report.matrix, PriorityMatrix::default());
}
