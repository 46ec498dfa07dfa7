//! The journal from sys_journal_field, and from the display-value blob when that is empty.

use nowpilot_model::time::parse_glide;
use nowpilot_servicenow::JournalKind;

use crate::fake::*;

#[tokio::test]
async fn reads_structured_rows_oldest_first() {
    let fake = Fake::start(|r| {
        assert_eq!(r.path, "/api/now/v2/table/sys_journal_field");
        Reply::result(serde_json::json!([
            {"element": "work_notes", "value": "[nowpilot] acknowledged", "sys_created_on": "2026-05-01 10:00:00", "sys_created_by": "nowpilot.integration"},
            {"element": "comments", "value": "Any news?", "sys_created_on": "2026-05-01 10:02:00", "sys_created_by": "abel.tuter"},
            {"element": "work_notes", "value": "/nowpilot approve p-1", "sys_created_on": "2026-05-01 10:03:00", "sys_created_by": "beth.anglin"}
        ]))
        .header("X-Total-Count", "3")
    })
    .await;
    let entries = fake.basic().journal("incident", SYS_ID).await.unwrap();
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0].element, JournalKind::WorkNotes);
    assert_eq!(entries[1].element, JournalKind::Comments);
    assert_eq!(entries[2].created_by, "beth.anglin");
    assert_eq!(entries[2].value, "/nowpilot approve p-1");
    assert_eq!(entries[2].created_on, parse_glide("2026-05-01 10:03:00"));

    let requests = fake.requests();
    assert_eq!(requests.len(), 1, "no fallback when rows exist");
    assert_eq!(
        requests[0].param("sysparm_query"),
        Some(
            format!(
                "element_id={SYS_ID}^element=work_notes^ORelement=comments^ORDERBYsys_created_on"
            )
            .as_str()
        )
    );
    assert_eq!(
        requests[0].param("sysparm_fields"),
        Some("element,value,sys_created_on,sys_created_by")
    );
}

#[tokio::test]
async fn falls_back_to_the_display_value_blob() {
    let fake = Fake::start(|r| {
        if r.path.ends_with("/sys_journal_field") {
            // What a user without the sys_journal_field read ACL gets: 200 and nothing.
            return Reply::result(serde_json::json!([])).header("X-Total-Count", "0");
        }
        Reply::result(serde_json::json!({
            "work_notes": "2026-05-01 10:03:00 - Beth Anglin (Work notes)\n/nowpilot approve p-1\n\n2026-05-01 10:00:00 - nowpilot integration (Work notes)\n[nowpilot] acknowledged\nline two\n\n",
            "comments": "2026-05-01 10:02:00 - Abel Tuter (Additional comments)\nAny news?\n\n"
        }))
    })
    .await;
    let entries = fake.basic().journal("incident", SYS_ID).await.unwrap();
    let summary: Vec<_> = entries
        .iter()
        .map(|e| (e.created_by.as_str(), e.value.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("nowpilot integration", "[nowpilot] acknowledged\nline two"),
            ("Abel Tuter", "Any news?"),
            ("Beth Anglin", "/nowpilot approve p-1"),
        ]
    );
    assert_eq!(entries[1].element, JournalKind::Comments);
    let fallback = &fake.requests()[1];
    assert_eq!(
        fallback.path,
        format!("/api/now/v2/table/incident/{SYS_ID}")
    );
    assert_eq!(
        fallback.param("sysparm_fields"),
        Some("work_notes,comments")
    );
    assert_eq!(fallback.param("sysparm_display_value"), Some("true"));
}

#[tokio::test]
async fn an_empty_journal_is_empty() {
    let fake = Fake::start(|r| {
        if r.path.ends_with("/sys_journal_field") {
            Reply::result(serde_json::json!([]))
        } else {
            Reply::result(serde_json::json!({"work_notes": "", "comments": ""}))
        }
    })
    .await;
    assert!(
        fake.basic()
            .journal("incident", SYS_ID)
            .await
            .unwrap()
            .is_empty()
    );
}
