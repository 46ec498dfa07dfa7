//! Table API envelopes and status codes: CRUD, empty lists per version, request errors.

use reqwest::Method;
use serde_json::json;

use crate::common::{envelope, json, start};
use nowpilot_snowsim::SimConfig;

#[tokio::test]
async fn crud_envelopes_and_status_codes() {
    let sim = start(SimConfig::default()).await;
    let response = sim
        .admin(Method::POST, "/api/now/table/incident")
        .json(&json!({"short_description": "Disk full", "impact": 2, "bogus_field": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let created = json(response).await["result"].clone();
    let sys_id = created["sys_id"].as_str().unwrap().to_owned();
    assert_eq!(
        location,
        sim.url(&format!("/api/now/table/incident/{sys_id}"))
    );
    assert_eq!(sys_id.len(), 32);
    assert!(
        sys_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    assert_eq!(created["number"], "INC0010001");
    assert_eq!(created["impact"], "2"); // numbers come back as strings
    assert_eq!(created["sys_mod_count"], "0");
    assert_eq!(created["active"], "true");
    assert_eq!(created["sys_created_by"], "admin");
    assert!(created.get("bogus_field").is_none());
    // Every value is a string or a reference object.
    for (field, value) in created.as_object().unwrap() {
        assert!(value.is_string() || value.is_object(), "{field}: {value}");
    }

    let path = format!("/api/now/table/incident/{sys_id}");
    let read = sim.get_json(&path).await;
    assert_eq!(read["result"]["short_description"], "Disk full");

    for method in [Method::PATCH, Method::PUT] {
        let response = sim
            .admin(method, &path)
            .json(&json!({"short_description": "Disk full again"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let read = sim.get_json(&path).await;
    // The PUT changed nothing after the PATCH: one modification only.
    assert_eq!(read["result"]["sys_mod_count"], "1");

    let response = sim.admin(Method::DELETE, &path).send().await.unwrap();
    assert_eq!(response.status(), 204);
    assert!(response.bytes().await.unwrap().is_empty());
    let response = sim.admin(Method::GET, &path).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(
        json(response).await,
        envelope(
            "No Record found",
            "Record doesn't exist or ACL restricts the record retrieval"
        )
    );
    let response = sim
        .admin(Method::PATCH, &path)
        .json(&json!({"state": "2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn empty_lists_differ_between_v1_and_v2() {
    let sim = start(SimConfig::default()).await;
    let query = "?sysparm_query=short_description=nothing-matches";
    for prefix in ["/api/now/table", "/api/now/v2/table"] {
        let response = sim
            .admin(Method::GET, &format!("{prefix}/incident{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{prefix}");
        assert_eq!(response.headers()["x-total-count"], "0");
        assert_eq!(json(response).await, json!({"result": []}));
    }
    let response = sim
        .admin(Method::GET, &format!("/api/now/v1/table/incident{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let body = json(response).await;
    assert_eq!(body["error"]["message"], "No Record found");
    assert_eq!(body["status"], "failure");
}

#[tokio::test]
async fn request_errors_use_the_envelope() {
    let sim = start(SimConfig::default()).await;
    let response = sim
        .admin(Method::GET, "/api/now/table/sys_nonexistent")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        json(response).await,
        envelope(
            "Invalid table sys_nonexistent",
            "Table sys_nonexistent does not exist"
        )
    );
    let response = sim
        .admin(Method::GET, "/api/now/v9/table/incident")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(json(response).await["status"], "failure");

    let response = sim
        .admin(Method::GET, "/api/now/table/incident?sysparm_offset=-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        json(response).await,
        envelope("offset is -1", "Negative offset is not supported")
    );

    let post = |content_type: Option<&'static str>, body: &'static str| {
        let mut request = sim
            .admin(Method::POST, "/api/now/table/incident")
            .body(body);
        if let Some(ct) = content_type {
            request = request.header("Content-Type", ct);
        }
        request.send()
    };
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(status(post(None, "{}").await.unwrap()), 400);
    assert_eq!(status(post(Some("text/plain"), "{}").await.unwrap()), 415);
    assert_eq!(
        status(post(Some("application/json"), "not json").await.unwrap()),
        400
    );
    assert_eq!(
        status(post(Some("application/json"), "[1]").await.unwrap()),
        400
    );
    assert_eq!(
        status(post(Some("application/json"), "\"x\"").await.unwrap()),
        400
    );
    let response = post(Some("application/json"), "not json").await.unwrap();
    assert_eq!(json(response).await["status"], "failure");
    // An array: only the first object is processed.
    let response = post(
        Some("application/json; charset=utf-8"),
        r#"[{"short_description":"first"},{"short_description":"second"}]"#,
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(json(response).await["result"]["short_description"], "first");
    assert_eq!(sim.sim.query("incident", "").unwrap().len(), 1);

    let response = sim
        .http
        .get(sim.url("/api/now/table/incident"))
        .basic_auth("admin", Some("admin"))
        .header("Accept", "application/xml")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 406);
    assert_eq!(json(response).await["status"], "failure");
    let response = sim
        .admin(
            Method::POST,
            "/api/now/table/incident/0123456789abcdef0123456789abcdef",
        )
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
}

#[tokio::test]
async fn suppressed_bodies_and_noop_writes() {
    let sim = start(SimConfig::default()).await;
    let response = sim
        .admin(Method::POST, "/api/now/table/incident")
        .header("X-no-response-body", "true")
        .json(&json!({"short_description": "quiet"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert!(response.headers().get("location").is_some());
    assert!(response.bytes().await.unwrap().is_empty());
    let record = &sim
        .sim
        .query("incident", "short_description=quiet")
        .unwrap()[0];
    let path = format!(
        "/api/now/table/incident/{}",
        record.value("sys_id").unwrap()
    );
    let before = sim.get_json(&path).await["result"].clone();
    let response = sim
        .admin(Method::PATCH, &path)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let after = json(response).await["result"].clone();
    assert_eq!(after, before);
    assert_eq!(after["sys_mod_count"], "0");
}
