//! Writing: journal fields, the priority lookup and the resolve data policy.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{envelope, json, start};
use nowpilot_snowsim::SimConfig;

#[tokio::test]
async fn journal_reads_back_empty_and_as_a_blob() {
    let sim = start(SimConfig::default()).await;
    let created = sim
        .create(
            "incident",
            json!({"short_description": "x", "work_notes": "first note"}),
        )
        .await;
    assert_eq!(created["work_notes"], "");
    let sys_id = created["sys_id"].as_str().unwrap().to_owned();
    let path = format!("/api/now/table/incident/{sys_id}");
    let patched = json(
        sim.admin(Method::PATCH, &path)
            .json(&json!({"comments": "to the caller", "work_notes": "second note"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(patched["result"]["work_notes"], "");
    assert_eq!(patched["result"]["comments"], "");
    assert_eq!(patched["result"]["sys_mod_count"], "1");

    let rows = sim
        .get_json(&format!(
            "/api/now/table/sys_journal_field?sysparm_query=element_id={sys_id}^ORDERBYsys_created_on&sysparm_fields=element,value,sys_created_by,sys_created_on,name"
        ))
        .await;
    let rows = rows["result"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["element"], "work_notes");
    assert_eq!(rows[0]["value"], "first note");
    assert_eq!(rows[0]["name"], "incident");
    assert_eq!(rows[0]["sys_created_by"], "admin");
    let on = |i: usize| rows[i]["sys_created_on"].as_str().unwrap().to_owned();
    // Same-second entries keep their order; the blob is newest first.
    let (first, comment, second) = (on(0), on(1), on(2));
    let entries = sim.sim.journal("incident", &sys_id);
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[2].value, "second note");
    let comment_on = entries
        .iter()
        .find(|e| e.element == "comments")
        .map(|e| e.created_on.clone())
        .unwrap();
    assert_eq!(comment_on, comment);

    let display = sim
        .get_json(&format!(
            "{path}?sysparm_display_value=true&sysparm_fields=work_notes,comments,comments_and_work_notes"
        ))
        .await["result"]
        .clone();
    let note = |on: &str, label: &str, text: &str| {
        format!("{on} - System Administrator ({label})\n{text}\n\n")
    };
    assert_eq!(
        display["work_notes"],
        format!(
            "{}{}",
            note(&second, "Work notes", "second note"),
            note(&first, "Work notes", "first note")
        )
    );
    assert_eq!(
        display["comments"],
        note(&comment, "Additional comments", "to the caller")
    );
    let merged = display["comments_and_work_notes"].as_str().unwrap();
    let at = |text: &str| {
        merged
            .find(text)
            .unwrap_or_else(|| panic!("{text} in {merged}"))
    };
    assert!(at("second note") < at("to the caller"), "{merged}");
    assert!(at("to the caller") < at("first note"), "{merged}");
    assert!(
        merged.contains("(Additional comments)\nto the caller"),
        "{merged}"
    );

    let all = sim
        .get_json(&format!(
            "{path}?sysparm_display_value=all&sysparm_fields=work_notes"
        ))
        .await;
    assert_eq!(all["result"]["work_notes"]["value"], "");
    assert_eq!(
        all["result"]["work_notes"]["display_value"],
        display["work_notes"]
    );
    // An empty journal write adds nothing.
    let response = sim
        .admin(Method::PATCH, &path)
        .json(&json!({"work_notes": "  "}))
        .send()
        .await
        .unwrap();
    assert_eq!(json(response).await["result"]["sys_mod_count"], "1");
}

#[tokio::test]
async fn priority_follows_impact_and_urgency() {
    let sim = start(SimConfig::default()).await;
    let created = sim
        .create(
            "incident",
            json!({"impact": "1", "urgency": "1", "priority": "5"}),
        )
        .await;
    assert_eq!(created["priority"], "1");
    let path = format!(
        "/api/now/table/incident/{}",
        created["sys_id"].as_str().unwrap()
    );
    let patch = |body: Value| {
        let request = sim.admin(Method::PATCH, &path).json(&body);
        async move { json(request.send().await.unwrap()).await["result"].clone() }
    };
    let after = patch(json!({"priority": "3"})).await;
    assert_eq!(
        after["priority"], "1",
        "a direct priority write is overwritten"
    );
    assert_eq!(after["sys_mod_count"], "0", "and changes nothing");
    let after = patch(json!({"urgency": "3"})).await;
    assert_eq!(after["priority"], "3");
    assert_eq!(after["sys_mod_count"], "1");
    let after = patch(json!({"impact": "3"})).await;
    assert_eq!(after["priority"], "5");
    // The lookup table is data: changing a rule changes the outcome.
    let rule = sim
        .get_json("/api/now/table/dl_u_priority?sysparm_query=impact=3^urgency=3")
        .await["result"][0]["sys_id"]
        .as_str()
        .unwrap()
        .to_owned();
    sim.admin(
        Method::PATCH,
        &format!("/api/now/table/dl_u_priority/{rule}"),
    )
    .json(&json!({"priority": "4"}))
    .send()
    .await
    .unwrap();
    let after = patch(json!({"short_description": "touch"})).await;
    assert_eq!(after["priority"], "4");
}

#[tokio::test]
async fn data_policy_refuses_resolve_without_resolution_fields() {
    let sim = start(SimConfig::default()).await;
    let created = sim
        .create("incident", json!({"short_description": "x"}))
        .await;
    let sys_id = created["sys_id"].as_str().unwrap().to_owned();
    let path = format!("/api/now/table/incident/{sys_id}");
    let response = sim
        .admin(Method::PATCH, &path)
        .json(&json!({"state": "6", "work_notes": "resolving", "short_description": "changed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(
        json(response).await,
        envelope(
            "Operation Failed",
            "Data Policy Exception: mandatory: Resolution code, Resolution notes"
        )
    );
    let response = sim
        .admin(Method::PATCH, &path)
        .json(&json!({"state": "7", "close_code": "Solution provided"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(
        json(response).await["error"]["detail"],
        "Data Policy Exception: mandatory: Resolution notes"
    );
    // Nothing was written: not the state, not the other field, not the work note.
    let read = sim.get_json(&path).await["result"].clone();
    assert_eq!(read["state"], "1");
    assert_eq!(read["short_description"], "x");
    assert_eq!(read["sys_mod_count"], "0");
    assert!(sim.sim.journal("incident", &sys_id).is_empty());
    // A resolving insert is refused the same way.
    let response = sim
        .admin(Method::POST, "/api/now/table/incident")
        .json(&json!({"state": "6"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(sim.sim.query("incident", "").unwrap().len(), 1);

    let resolved = json(
        sim.admin(Method::PATCH, &path)
            .json(
                &json!({"state": "6", "close_code": "Solution provided", "close_notes": "Fixed."}),
            )
            .send()
            .await
            .unwrap(),
    )
    .await["result"]
        .clone();
    assert_eq!(resolved["state"], "6");
    assert_eq!(resolved["incident_state"], "6");
    assert_eq!(resolved["active"], "false");
    assert!(!resolved["resolved_at"].as_str().unwrap().is_empty());
    let admin_id = sim.sim.query("sys_user", "user_name=admin").unwrap()[0]
        .value("sys_id")
        .unwrap()
        .to_owned();
    assert_eq!(resolved["resolved_by"]["value"], admin_id);
}
