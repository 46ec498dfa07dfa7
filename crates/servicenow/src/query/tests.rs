//! Unit tests of the query module.
use super::*;
use chrono::TimeZone;

#[test]
fn builds_the_journal_query() {
    let q = EncodedQuery::new()
        .eq("element_id", "0123456789abcdef0123456789abcdef")
        .eq("element", "work_notes")
        .or_eq("element", "comments")
        .order_by("sys_created_on")
        .build()
        .unwrap();
    assert_eq!(
        q,
        "element_id=0123456789abcdef0123456789abcdef^element=work_notes^ORelement=comments^ORDERBYsys_created_on"
    );
}

#[test]
fn every_operator() {
    let t = Utc.with_ymd_and_hms(2026, 5, 1, 10, 0, 7).unwrap();
    let q = EncodedQuery::new()
        .ne("state", "7")
        .like("short_description", "disk")
        .not_like("short_description", "test")
        .starts_with("number", "INC")
        .ends_with("number", "1")
        .in_list("priority", ["1", "2"])
        .not_in("state", vec!["6".to_owned(), "7".to_owned()])
        .gte("impact", "1")
        .lte("impact", "3")
        .gt("sys_mod_count", "0")
        .lt("sys_mod_count", "9")
        .gte_time("sys_updated_on", t)
        .or_lt_time("opened_at", t)
        .is_empty("close_code")
        .or_is_not_empty("close_notes")
        .new_query()
        .eq("cmdb_ci.name", "edge-lb")
        .order_by_desc("sys_updated_on")
        .order_by("sys_id")
        .build()
        .unwrap();
    assert_eq!(
        q,
        "state!=7^short_descriptionLIKEdisk^short_descriptionNOT LIKEtest^numberSTARTSWITHINC^numberENDSWITH1^priorityIN1,2^stateNOT IN6,7^impact>=1^impact<=3^sys_mod_count>0^sys_mod_count<9^sys_updated_on>=2026-05-01 10:00:07^ORopened_at<2026-05-01 10:00:07^close_codeISEMPTY^ORclose_notesISNOTEMPTY^NQcmdb_ci.name=edge-lb^ORDERBYDESCsys_updated_on^ORDERBYsys_id"
    );
}

#[test]
fn refuses_values_that_would_widen_the_query() {
    type Expect = fn(&QueryError) -> bool;
    let cases: Vec<(EncodedQuery, Expect)> = vec![
        (EncodedQuery::new().eq("sys_id", "abc^ORactive=true"), |e| {
            matches!(e, QueryError::UnsafeValue { found: "'^'", .. })
        }),
        (EncodedQuery::new().eq("number", "INC1\nactive=true"), |e| {
            matches!(e, QueryError::UnsafeValue { .. })
        }),
        (EncodedQuery::new().eq("number", "INC1\r"), |e| {
            matches!(e, QueryError::UnsafeValue { .. })
        }),
        (EncodedQuery::new().in_list("sys_id", ["a", "b,c"]), |e| {
            matches!(e, QueryError::CommaInList { .. })
        }),
        (
            EncodedQuery::new().in_list("sys_id", Vec::<String>::new()),
            |e| matches!(e, QueryError::EmptyList { .. }),
        ),
        (EncodedQuery::new().eq("sys_id", ""), |e| {
            matches!(e, QueryError::EmptyValue { .. })
        }),
        (EncodedQuery::new().eq("sys id", "x"), |e| {
            matches!(e, QueryError::InvalidField { .. })
        }),
        (EncodedQuery::new().eq("ORactive", "x"), |e| {
            matches!(e, QueryError::InvalidField { .. })
        }),
        (EncodedQuery::new().eq("state=1^active", "x"), |e| {
            matches!(e, QueryError::InvalidField { .. })
        }),
        (EncodedQuery::new().eq("a..b", "x"), |e| {
            matches!(e, QueryError::InvalidField { .. })
        }),
        (EncodedQuery::new().or_eq("state", "1"), |e| {
            matches!(e, QueryError::DanglingOr { .. })
        }),
        (EncodedQuery::new().new_query(), |e| {
            matches!(e, QueryError::EmptySegment)
        }),
        (EncodedQuery::new().eq("a", "1").new_query(), |e| {
            matches!(e, QueryError::EmptySegment)
        }),
        (
            EncodedQuery::new().eq("a", "1").new_query().or_eq("b", "2"),
            |e| matches!(e, QueryError::DanglingOr { .. }),
        ),
        (EncodedQuery::new().raw(""), |e| {
            matches!(e, QueryError::InvalidRaw)
        }),
        (
            EncodedQuery::new().order_by("sys_created_on^active=true"),
            |e| matches!(e, QueryError::InvalidField { .. }),
        ),
    ];
    for (q, expected) in cases {
        let err = q.build().unwrap_err();
        assert!(expected(&err), "{q:?} gave {err:?}");
    }
}

#[test]
fn first_error_wins_and_later_calls_do_not_hide_it() {
    let q = EncodedQuery::new().eq("bad field", "1").eq("state", "1");
    assert!(matches!(q.build(), Err(QueryError::InvalidField { .. })));
}

#[test]
fn raw_and_empty() {
    assert_eq!(EncodedQuery::new().build().unwrap(), "");
    assert!(EncodedQuery::new().is_blank());
    let q = EncodedQuery::new()
        .raw("sys_id=javascript:gs.getUserID()")
        .order_by("name")
        .build()
        .unwrap();
    assert_eq!(q, "sys_id=javascript:gs.getUserID()^ORDERBYname");
    assert_eq!(
        EncodedQuery::new().order_by("number").build().unwrap(),
        "ORDERBYnumber"
    );
}

#[test]
fn order_by_detection() {
    assert!(has_order_by("active=true^ORDERBYnumber"));
    assert!(has_order_by("ORDERBYDESCnumber"));
    assert!(!has_order_by("short_descriptionLIKEORDERBY"));
}

/// A cheap deterministic fuzz: every builder method fed awkward strings never panics and
/// any query it accepts contains no newline and no `^` inside a value.
#[test]
fn total_on_awkward_input() {
    let inputs = [
        "",
        "^",
        "^OR",
        "a^b",
        "\n",
        "\r\n",
        ",",
        "é",
        "\u{0}",
        "ORDERBY",
        "NQ",
        "a.b",
        ".a",
        "a.",
        "x".repeat(5000).leak(),
        "OR",
        "\u{202e}",
        "a,b",
        "😀",
    ];
    for f in inputs {
        for v in inputs {
            let q = EncodedQuery::new()
                .eq(f, v)
                .or_like(f, v)
                .in_list(f, [v, v])
                .not_in(f, [v])
                .is_empty(f)
                .new_query()
                .starts_with(f, v)
                .order_by(f)
                .order_by_desc(v)
                .raw(v);
            if let Ok(s) = q.build() {
                assert!(!s.contains('\n') && !s.contains('\r'));
                assert!(!v.contains('^') || v.is_empty(), "{s}");
            }
        }
    }
}
