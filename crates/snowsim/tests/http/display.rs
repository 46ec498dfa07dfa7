//! Reading: reference shapes, display-value modes, fields, paging headers, encoded queries.

use reqwest::Method;
use serde_json::json;

use crate::common::{json, start};
use nowpilot_snowsim::SimConfig;

#[tokio::test]
async fn references_and_display_values() {
    let sim = start(SimConfig {
        seed_demo: true,
        ..SimConfig::default()
    })
    .await;
    let list = sim
        .get_json("/api/now/table/incident?sysparm_query=short_descriptionLIKEp95")
        .await;
    let incident = &list["result"][0];
    let sys_id = incident["sys_id"].as_str().unwrap();
    let ci = incident["cmdb_ci"]["value"].as_str().unwrap();
    assert_eq!(
        incident["cmdb_ci"],
        json!({"link": sim.url(&format!("/api/now/table/cmdb_ci/{ci}")), "value": ci})
    );
    assert_eq!(incident["problem_id"], ""); // empty reference
    assert_eq!(incident["state"], "2");
    assert_eq!(incident["work_notes"], ""); // journal fields read back empty

    let get = |params: &str| sim.get_json(format!("/api/now/v2/table/incident/{sys_id}?{params}"));
    // Links follow the API version the client used.
    let v2 = get("").await;
    assert_eq!(
        v2["result"]["cmdb_ci"]["link"],
        sim.url(&format!("/api/now/v2/table/cmdb_ci/{ci}"))
    );

    let plain = get("sysparm_exclude_reference_link=true").await;
    assert_eq!(plain["result"]["cmdb_ci"], ci);

    let display = get("sysparm_display_value=true").await["result"].clone();
    assert_eq!(display["state"], "In Progress");
    assert_eq!(display["priority"], "3 - Moderate");
    assert_eq!(display["impact"], "2 - Medium");
    assert_eq!(display["category"], "Software");
    assert_eq!(display["number"], incident["number"]);
    assert_eq!(
        display["cmdb_ci"],
        json!({"display_value": "checkout-api", "link": sim.url(&format!("/api/now/v2/table/cmdb_ci/{ci}"))})
    );
    assert_eq!(display["assigned_to"]["display_value"], "Maya Patel");
    assert_eq!(display["assignment_group"]["display_value"], "Platform SRE");
    assert_eq!(display["problem_id"], "");

    let display_plain = get("sysparm_display_value=true&sysparm_exclude_reference_link=true").await;
    assert_eq!(display_plain["result"]["cmdb_ci"], "checkout-api");

    let all = get("sysparm_display_value=all").await["result"].clone();
    assert_eq!(
        all["state"],
        json!({"display_value": "In Progress", "value": "2"})
    );
    assert_eq!(
        all["cmdb_ci"],
        json!({
            "display_value": "checkout-api",
            "value": ci,
            "link": sim.url(&format!("/api/now/v2/table/cmdb_ci/{ci}")),
        })
    );
    assert_eq!(all["problem_id"], json!({"display_value": "", "value": ""}));
    assert_eq!(
        all["short_description"]["value"],
        all["short_description"]["display_value"]
    );
    let all_plain = get("sysparm_display_value=all&sysparm_exclude_reference_link=true").await;
    assert_eq!(
        all_plain["result"]["cmdb_ci"],
        json!({"display_value": "checkout-api", "value": ci})
    );

    // sysparm_fields: only those, unknown ones ignored, dot-walking allowed.
    let some = get("sysparm_fields=number,state,bogus,cmdb_ci.name,assigned_to.email").await;
    let mut keys: Vec<&String> = some["result"].as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["assigned_to.email", "cmdb_ci.name", "number", "state"]
    );
    assert_eq!(some["result"]["cmdb_ci.name"], "checkout-api");
    assert_eq!(
        some["result"]["assigned_to.email"],
        "maya.patel@example.com"
    );

    // A task reference (task_ci.task) resolves into the concrete table.
    let task_ci = sim
        .get_json(&format!(
            "/api/now/table/task_ci?sysparm_query=task={sys_id}&sysparm_display_value=true"
        ))
        .await;
    assert_eq!(
        task_ci["result"][0]["task"]["display_value"],
        incident["number"]
    );
    assert_eq!(
        task_ci["result"][0]["ci_item"]["display_value"],
        "checkout-api"
    );
}

fn links(response: &reqwest::Response) -> Vec<(String, String)> {
    let Some(header) = response.headers().get("link") else {
        return Vec::new();
    };
    header
        .to_str()
        .unwrap()
        .split(',')
        .map(|part| {
            let (url, rel) = part.split_once(";rel=").unwrap();
            (
                rel.trim_matches('"').to_owned(),
                url.trim_start_matches('<').trim_end_matches('>').to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn paging_with_link_and_total_count() {
    let sim = start(SimConfig::default()).await;
    for i in 0..5 {
        sim.create(
            "incident",
            json!({"short_description": format!("page item {i}")}),
        )
        .await;
    }
    sim.create("incident", json!({"short_description": "other"}))
        .await;
    let path =
        "/api/now/table/incident?sysparm_query=short_descriptionSTARTSWITHpage%5EORDERBYnumber";

    let first = sim
        .admin(Method::GET, &format!("{path}&sysparm_limit=2"))
        .send()
        .await
        .unwrap();
    assert_eq!(first.headers()["x-total-count"], "5");
    let rels: Vec<String> = links(&first).into_iter().map(|(rel, _)| rel).collect();
    assert_eq!(rels, ["first", "next", "last"]);
    let last_url = links(&first)
        .into_iter()
        .find(|(r, _)| r == "last")
        .unwrap()
        .1;
    assert!(last_url.contains("sysparm_offset=4"), "{last_url}");
    assert!(last_url.contains("sysparm_limit=2"), "{last_url}");
    assert!(
        last_url.starts_with(&sim.url("/api/now/table/incident?")),
        "{last_url}"
    );

    let middle = sim
        .admin(
            Method::GET,
            &format!("{path}&sysparm_limit=2&sysparm_offset=2"),
        )
        .send()
        .await
        .unwrap();
    let rels: Vec<String> = links(&middle).into_iter().map(|(rel, _)| rel).collect();
    assert_eq!(rels, ["first", "prev", "next", "last"]);
    let end = sim
        .admin(
            Method::GET,
            &format!("{path}&sysparm_limit=2&sysparm_offset=4"),
        )
        .send()
        .await
        .unwrap();
    let rels: Vec<String> = links(&end).into_iter().map(|(rel, _)| rel).collect();
    assert_eq!(rels, ["first", "prev", "last"]);

    // Following `next` visits every record once, in order.
    let mut url = sim.url(&format!("{path}&sysparm_limit=2"));
    let mut numbers = Vec::new();
    loop {
        let response = sim
            .http
            .get(&url)
            .basic_auth("admin", Some("admin"))
            .send()
            .await
            .unwrap();
        let next = links(&response).into_iter().find(|(r, _)| r == "next");
        for record in json(response).await["result"].as_array().unwrap() {
            numbers.push(record["number"].as_str().unwrap().to_owned());
        }
        match next {
            Some((_, next)) => url = next,
            None => break,
        }
    }
    assert_eq!(
        numbers,
        [
            "INC0010001",
            "INC0010002",
            "INC0010003",
            "INC0010004",
            "INC0010005"
        ]
    );

    let one_page = sim
        .admin(Method::GET, &format!("{path}&sysparm_limit=10"))
        .send()
        .await
        .unwrap();
    assert!(one_page.headers().get("link").is_none());
    let suppressed = sim
        .admin(
            Method::GET,
            &format!("{path}&sysparm_limit=2&sysparm_suppress_pagination_header=true&sysparm_no_count=true"),
        )
        .send()
        .await
        .unwrap();
    assert!(suppressed.headers().get("link").is_none());
    assert!(suppressed.headers().get("x-total-count").is_none());
    assert_eq!(
        json(suppressed).await["result"].as_array().unwrap().len(),
        2
    );
}

#[tokio::test]
async fn encoded_queries_over_http() {
    let sim = start(SimConfig::default()).await;
    for (text, impact) in [
        ("alpha", "1"),
        ("beta", "2"),
        ("gamma", "3"),
        ("alphabet", "3"),
    ] {
        sim.create(
            "incident",
            json!({"short_description": text, "impact": impact}),
        )
        .await;
    }
    let sim = &sim;
    let numbers = |query: &str| {
        let path = format!(
            "/api/now/table/incident?sysparm_fields=short_description&sysparm_query={query}"
        );
        async move {
            sim.get_json(&path).await["result"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["short_description"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        numbers("short_descriptionSTARTSWITHalpha").await,
        ["alpha", "alphabet"]
    );
    assert_eq!(
        numbers("impactIN1,2^ORDERBYDESCnumber").await,
        ["beta", "alpha"]
    );
    assert_eq!(
        numbers("impact=3^ORshort_description=beta^ORDERBYshort_description").await,
        ["alphabet", "beta", "gamma"]
    );
    assert_eq!(numbers("impact=1^NQimpact=2").await, ["alpha", "beta"]);
    assert_eq!(
        numbers("sys_created_by=javascript:gs.getUserName()^impact=2").await,
        ["beta"]
    );
    assert_eq!(
        numbers("opened_by=javascript:gs.getUserID()^impact=2").await,
        ["beta"]
    );
    assert_eq!(
        numbers("opened_atRELATIVEGT@hour@ago@1^short_descriptionLIKEbet").await,
        ["beta", "alphabet"]
    );
    // An unknown field is dropped silently: the query widens.
    assert_eq!(numbers("no_such_field=1").await.len(), 4);
    // Plain name=value parameters filter when there is no sysparm_query.
    let plain = sim
        .get_json("/api/now/table/incident?impact=3&sysparm_fields=short_description")
        .await;
    assert_eq!(plain["result"].as_array().unwrap().len(), 2);
}
