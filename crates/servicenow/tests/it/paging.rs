//! list / list_all over Link and X-Total-Count.

use std::sync::Arc;

use nowpilot_servicenow::{DisplayValue, EncodedQuery, ListRequest};

use crate::fake::*;

/// A table of `total` rows that answers like ServiceNow: `X-Total-Count`, a `Link` header with
/// first/prev/next/last, and optionally hides some rows of each page (ACLs apply after the
/// limit) or omits the count.
fn table(
    total: usize,
    hidden_per_page: usize,
    with_count: bool,
) -> impl Fn(&Recorded) -> Reply + Send + Sync + 'static {
    let rows: Arc<Vec<serde_json::Value>> = Arc::new(
        (0..total)
            .map(|i| serde_json::json!({"sys_id": format!("{i:032x}"), "number": format!("INC{i:07}")}))
            .collect(),
    );
    move |r: &Recorded| {
        let limit: usize = r
            .param("sysparm_limit")
            .and_then(|v| v.parse().ok())
            .unwrap_or(10_000);
        let offset: usize = r
            .param("sysparm_offset")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let page: Vec<_> = rows
            .iter()
            .skip(offset)
            .take(limit)
            .skip(hidden_per_page)
            .cloned()
            .collect();
        let base = "http://instance/api/now/v2/table/incident";
        let link = |o: usize, rel: &str| {
            format!("<{base}?sysparm_limit={limit}&sysparm_offset={o}>;rel=\"{rel}\"")
        };
        let mut links = vec![link(0, "first")];
        if offset > 0 {
            links.push(link(offset.saturating_sub(limit), "prev"));
        }
        if offset + limit < total {
            links.push(link(offset + limit, "next"));
        }
        links.push(link(total.saturating_sub(1) / limit * limit, "last"));
        let mut reply = Reply::result(serde_json::Value::Array(page));
        if total > limit {
            reply = reply.header("Link", links.join(","));
        }
        if with_count {
            reply = reply.header("X-Total-Count", total.to_string());
        }
        reply
    }
}

fn offsets(fake: &Fake) -> Vec<String> {
    fake.requests()
        .iter()
        .map(|r| r.param("sysparm_offset").unwrap_or("0").to_owned())
        .collect()
}

#[tokio::test]
async fn list_all_pages_through_2500_rows_with_a_stable_order() {
    let fake = Fake::start(table(2500, 0, true)).await;
    let request = ListRequest::from_query(&EncodedQuery::new().eq("active", "true"))
        .unwrap()
        .limit(1000);
    let rows = fake
        .basic()
        .list_all("incident", &request, usize::MAX)
        .await
        .unwrap();
    assert_eq!(rows.len(), 2500);
    assert_eq!(rows[0].value("number"), Some("INC0000000"));
    assert_eq!(rows[2499].value("number"), Some("INC0002499"));
    assert_eq!(offsets(&fake), ["0", "1000", "2000"]);
    for r in fake.requests() {
        assert_eq!(
            r.param("sysparm_query"),
            Some("active=true^ORDERBYsys_created_on^ORDERBYsys_id")
        );
        assert_eq!(r.param("sysparm_limit"), Some("1000"));
    }
}

#[tokio::test]
async fn an_existing_order_is_kept_and_max_rows_stops_early() {
    let fake = Fake::start(table(2500, 0, true)).await;
    let request = ListRequest::new()
        .query("active=true^ORDERBYDESCnumber")
        .limit(500);
    let rows = fake
        .basic()
        .list_all("incident", &request, 1200)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1200);
    assert_eq!(offsets(&fake), ["0", "500", "1000"]);
    assert_eq!(
        fake.requests()[0].param("sysparm_query"),
        Some("active=true^ORDERBYDESCnumber")
    );
}

#[tokio::test]
async fn short_pages_do_not_end_paging_while_the_count_says_more() {
    // Each page hides 10 rows (ACLs are applied after sysparm_limit).
    let fake = Fake::start(table(2500, 10, true)).await;
    let rows = fake
        .basic()
        .list_all("incident", &ListRequest::new().limit(1000), usize::MAX)
        .await
        .unwrap();
    assert_eq!(rows.len(), 2500 - 30);
    assert_eq!(offsets(&fake), ["0", "1000", "2000"]);
}

#[tokio::test]
async fn without_a_count_the_link_header_and_page_size_decide() {
    let fake = Fake::start(table(2500, 0, false)).await;
    let request = ListRequest::new().limit(1000).no_count(true);
    let rows = fake
        .basic()
        .list_all("incident", &request, usize::MAX)
        .await
        .unwrap();
    assert_eq!(rows.len(), 2500);
    assert_eq!(offsets(&fake), ["0", "1000", "2000"]);
    assert_eq!(fake.requests()[0].param("sysparm_no_count"), Some("true"));

    // An exact multiple: the last full page's Link header has no `next`, so no extra call.
    let fake = Fake::start(table(1000, 0, false)).await;
    let rows = fake
        .basic()
        .list_all(
            "incident",
            &ListRequest::new().limit(500).no_count(true),
            usize::MAX,
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1000);
    assert_eq!(offsets(&fake), ["0", "500"]);
}

#[tokio::test]
async fn one_page_reports_total_next_and_parameters() {
    let fake = Fake::start(table(2500, 0, true)).await;
    let request = ListRequest::new()
        .query("active=true")
        .fields(["sys_id", "number", "cmdb_ci.name"])
        .limit(100)
        .offset(200)
        .display_value(DisplayValue::Both)
        .exclude_reference_link(true);
    let page = fake.basic().list("incident", &request).await.unwrap();
    assert_eq!(page.records.len(), 100);
    assert_eq!(page.total, Some(2500));
    assert_eq!(page.next_offset, Some(300));
    let r = &fake.requests()[0];
    assert_eq!(r.path, "/api/now/v2/table/incident");
    assert_eq!(
        r.param("sysparm_fields"),
        Some("sys_id,number,cmdb_ci.name")
    );
    assert_eq!(r.param("sysparm_display_value"), Some("all"));
    assert_eq!(r.param("sysparm_exclude_reference_link"), Some("true"));
    assert_eq!(
        r.param("sysparm_query"),
        Some("active=true"),
        "a single page is not reordered"
    );
}

#[tokio::test]
async fn invalid_names_are_refused_before_sending() {
    let fake = Fake::start(table(1, 0, true)).await;
    let client = fake.basic();
    assert!(
        client
            .list("incident/../sys_user", &ListRequest::new())
            .await
            .is_err()
    );
    assert!(
        client
            .list("incident", &ListRequest::new().fields(["a,b"]))
            .await
            .is_err()
    );
    assert!(
        client
            .get("incident", "", &Default::default())
            .await
            .is_err()
    );
    assert!(fake.requests().is_empty());
}
