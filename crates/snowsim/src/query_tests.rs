//! Unit tests of the encoded-query parser and evaluator.

use std::collections::HashMap;

use rand::{Rng, RngExt, SeedableRng, rngs::StdRng};

use super::*;

struct Rec(HashMap<&'static str, String>);

impl FieldSource for Rec {
    fn field(&self, field: &str) -> Option<Cow<'_, str>> {
        self.0.get(field).map(|v| Cow::Borrowed(v.as_str()))
    }
}

fn rec(pairs: &[(&'static str, &str)]) -> Rec {
    Rec(pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect())
}

fn now() -> DateTime<Utc> {
    parse_glide("2026-05-01 12:00:00").unwrap()
}

fn ctx() -> EvalContext<'static> {
    EvalContext {
        now: now(),
        user_sys_id: "0123456789abcdef0123456789abcdef",
        user_name: "beth.anglin",
    }
}

fn matches(query: &str, record: &Rec) -> bool {
    parse(query)
        .unwrap_or_else(|e| panic!("{query}: {e}"))
        .matches(record, &ctx())
}

#[test]
fn structure_and_precedence() {
    let q = parse("active=true^state=1^ORstate=2^NQpriority=1^ORDERBYnumber^ORDERBYDESCsys_id")
        .unwrap();
    assert_eq!(q.disjuncts.len(), 2);
    assert_eq!(q.disjuncts[0].clauses.len(), 2);
    assert_eq!(q.disjuncts[0].clauses[1].alternatives.len(), 2);
    assert_eq!(q.disjuncts[1].clauses.len(), 1);
    assert_eq!(
        q.order_by,
        vec![
            OrderBy {
                field: "number".into(),
                descending: false
            },
            OrderBy {
                field: "sys_id".into(),
                descending: true
            },
        ]
    );
    // OR binds tighter than AND: a AND (b OR c).
    let r = rec(&[("active", "false"), ("state", "2"), ("priority", "3")]);
    assert!(!matches("active=true^state=1^ORstate=2", &r));
    assert!(matches("active=false^state=1^ORstate=2", &r));
    // NQ: either query.
    assert!(matches("active=true^NQpriority=3", &r));
    assert!(!matches("active=true^NQpriority=1", &r));
}

#[test]
fn every_operator() {
    let r = rec(&[
        ("number", "INC0010001"),
        ("short_description", "Checkout latency high"),
        ("priority", "3"),
        ("reassignment_count", "10"),
        ("opened_at", "2026-05-01 11:30:00"),
        ("closed_at", ""),
        ("caller_id", "0123456789abcdef0123456789abcdef"),
        ("sys_created_by", "beth.anglin"),
    ]);
    let cases: &[(&str, bool)] = &[
        ("number=INC0010001", true),
        ("number=inc0010001", false), // case-sensitive
        ("number!=INC0010001", false),
        ("number!=INC0010002", true),
        ("priorityIN1,2,3", true),
        ("priorityIN1,2", false),
        ("priorityNOT IN1,2", true),
        ("priorityNOT IN3", false),
        ("short_descriptionLIKElatency", true),
        ("short_descriptionLIKELatency", false),
        ("short_descriptionNOT LIKEdisk", true),
        ("short_descriptionNOT LIKElatency", false),
        ("numberSTARTSWITHINC", true),
        ("numberSTARTSWITHCHG", false),
        ("numberENDSWITH0001", true),
        ("numberENDSWITH0002", false),
        // Integers compare as integers: "10" > "9" although "10" < "9" as strings.
        ("reassignment_count>9", true),
        ("reassignment_count>=10", true),
        ("reassignment_count<9", false),
        ("reassignment_count<=10", true),
        ("priority<3", false),
        ("priority<=3", true),
        // Date-times compare chronologically.
        ("opened_at>2026-05-01 11:00:00", true),
        ("opened_at>=2026-05-01 11:30:00", true),
        ("opened_at<2026-05-01 11:30:00", false),
        ("opened_at<=2026-04-30 00:00:00", false),
        // Empty values never satisfy an ordering comparison.
        ("closed_at<2030-01-01 00:00:00", false),
        ("closed_atISEMPTY", true),
        ("closed_atISNOTEMPTY", false),
        ("opened_atISNOTEMPTY", true),
        ("closed_atANYTHING", true),
        ("opened_atRELATIVEGT@hour@ago@1", true),
        ("opened_atRELATIVEGT@minute@ago@10", false),
        ("opened_atRELATIVELT@minute@ago@10", true),
        ("opened_atRELATIVELT@day@ago@1", false),
        ("opened_atRELATIVELT@hour@ahead@1", true),
        ("closed_atRELATIVELT@hour@ahead@1", false),
        ("caller_id=javascript:gs.getUserID()", true),
        ("sys_created_by=javascript:gs.getUserName()", true),
        ("sys_created_by!=javascript:gs.getUserName()", false),
        ("caller_idINjavascript:gs.getUserID(),x", true),
        // Unsupported scripts evaluate to the empty value.
        ("closed_at=javascript:gs.beginningOfToday()", true),
        // Unknown fields in an evaluated query never match.
        ("no_such_field=1", false),
        ("no_such_fieldISEMPTY", false),
    ];
    for (query, expected) in cases {
        assert_eq!(matches(query, &r), *expected, "{query}");
    }
}

#[test]
fn values_keep_everything_after_the_operator() {
    let q = parse("short_description=a=b!=c^^d").unwrap();
    let cond = &q.disjuncts[0].clauses[0].alternatives[0];
    assert_eq!(cond.operator, Operator::Eq);
    assert_eq!(
        cond.operand,
        Operand::Value(ValueExpr::Literal("a=b!=c^d".into()))
    );
    assert!(matches(
        "short_description=a=b!=c^^d",
        &rec(&[("short_description", "a=b!=c^d")])
    ));
    // `>=` is not `>` followed by a value starting with `=`.
    let q = parse("priority>=2").unwrap();
    assert_eq!(
        q.disjuncts[0].clauses[0].alternatives[0].operator,
        Operator::Ge
    );
}

#[test]
fn strict_errors_and_lenient_dropping() {
    let bad: &[&str] = &[
        "active",
        "Active=true",
        "active true",
        "=true",
        "activeISEMPTYx",
        "opened_atRELATIVEGT@hour@ago",
        "opened_atRELATIVEGT@week@ago@1",
        "opened_atRELATIVEGT@hour@sometime@1",
        "opened_atRELATIVEGT@hour@ago@-1",
        "opened_atRELATIVEGT@hour@ago@1@2",
        "opened_atRELATIVEGThour@ago@1",
        "ORDERBY",
        "ORDERBYDESC",
        "ORDERBYNumber",
        "a..b=1",
        ".a=1",
    ];
    for q in bad {
        assert!(parse(q).is_err(), "{q} should be rejected");
    }
    let (q, errors) = parse_lenient("active=true^bogus^state=1^ORjunk");
    assert_eq!(errors.len(), 2);
    assert_eq!(q.disjuncts[0].clauses.len(), 2);
    // Dropping every condition widens to "everything", as ServiceNow does.
    let (q, errors) = parse_lenient("bogus");
    assert_eq!(errors.len(), 1);
    assert!(q.matches(&rec(&[]), &ctx()));
}

#[test]
fn empty_and_marker_tokens() {
    for q in ["", "^", "^EQ", "EQ", "ORDERBYnumber", "^NQ"] {
        let parsed = parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
        assert!(parsed.matches(&rec(&[]), &ctx()), "{q}");
    }
    let q = parse("active=true^EQ").unwrap();
    assert_eq!(q.disjuncts.len(), 1);
    assert_eq!(q.disjuncts[0].clauses.len(), 1);
    // A trailing NQ adds no match-everything branch.
    let q = parse("active=true^NQ").unwrap();
    assert!(!q.matches(&rec(&[("active", "false")]), &ctx()));
}

#[test]
fn unknown_fields_are_dropped() {
    let mut q = parse("active=true^bogus=1^ORstate=2^ORDERBYbogus^ORDERBYnumber").unwrap();
    let dropped = q.retain_known_fields(|f| f != "bogus");
    assert_eq!(dropped, vec!["bogus".to_owned(), "bogus".to_owned()]);
    assert_eq!(q.disjuncts[0].clauses.len(), 2);
    assert_eq!(q.disjuncts[0].clauses[1].alternatives.len(), 1);
    assert_eq!(q.order_by.len(), 1);
    // A clause made only of unknown fields disappears (the query widens).
    let mut q = parse("bogus=1^ORbogus=2").unwrap();
    q.retain_known_fields(|f| f != "bogus");
    assert!(q.matches(&rec(&[]), &ctx()));
}

#[test]
fn order_by_is_stable_and_multi_key() {
    let rows = vec![
        rec(&[("id", "a"), ("p", "2"), ("n", "10")]),
        rec(&[("id", "b"), ("p", "1"), ("n", "9")]),
        rec(&[("id", "c"), ("p", "2"), ("n", "9")]),
        rec(&[("id", "d"), ("p", "1"), ("n", "9")]),
        rec(&[("id", "e"), ("p", ""), ("n", "1")]),
    ];
    let ids = |rows: &[Rec]| rows.iter().map(|r| r.0["id"].clone()).collect::<String>();

    let mut sorted = rows;
    parse("ORDERBYp").unwrap().sort(&mut sorted);
    // Empty first; ties (b, d) and (a, c) keep insertion order.
    assert_eq!(ids(&sorted), "ebdac");

    parse("ORDERBYDESCp").unwrap().sort(&mut sorted);
    assert_eq!(ids(&sorted), "acbde");

    // Second key breaks the ties; numbers sort numerically (9 before 10).
    parse("ORDERBYp^ORDERBYn").unwrap().sort(&mut sorted);
    assert_eq!(ids(&sorted), "ebdca");
    parse("ORDERBYn^ORDERBYDESCid").unwrap().sort(&mut sorted);
    assert_eq!(ids(&sorted), "edcba");
}

#[test]
fn garbage_never_panics() {
    let fixed: &[&str] = &[
        "^^^",
        "^OR",
        "^NQ^NQ^OR",
        "ORa=1",
        "NQORDERBYa",
        "a=\u{0}",
        "é=ü^ü=é",
        "a\u{1F600}=1",
        "aRELATIVEGT@hour@ago@99999999999999999999",
        "aRELATIVEGT@day@ago@4294967295",
        "aRELATIVELT@day@ahead@4294967295",
        "aIN",
        "aNOT IN",
        "aNOT",
        "a>",
        "a!",
        "a=javascript:",
        "a=javascript:gs.getUserID(",
        "%5E%5E",
    ];
    let pieces = [
        "^",
        "^^",
        "OR",
        "NQ",
        "ORDERBY",
        "DESC",
        "EQ",
        "=",
        "!=",
        ">",
        ">=",
        "<",
        "<=",
        "IN",
        "NOT IN",
        "LIKE",
        "ISEMPTY",
        "ANYTHING",
        "RELATIVEGT",
        "@",
        "hour",
        "ago",
        "1",
        "a",
        "b.c",
        "state",
        "é",
        " ",
        ",",
        "javascript:gs.getUserID()",
        "\u{0}",
    ];
    let record = rec(&[("a", "2026-05-01 11:00:00"), ("state", "1")]);
    let mut rng = StdRng::seed_from_u64(7);
    let mut inputs: Vec<String> = fixed.iter().map(|s| (*s).to_owned()).collect();
    for _ in 0..5000 {
        let len = rng.random_range(0..12);
        let s: String = (0..len)
            .map(|_| pieces[rng.random_range(0..pieces.len())])
            .collect();
        inputs.push(s);
        let bytes: Vec<u8> = (0..rng.random_range(0..24))
            .map(|_| (rng.next_u32() & 0xff) as u8)
            .collect();
        inputs.push(String::from_utf8_lossy(&bytes).into_owned());
    }
    for input in &inputs {
        let (mut q, _) = parse_lenient(input);
        let _ = parse(input);
        let _ = q.matches(&record, &ctx());
        q.retain_known_fields(|f| f == "a");
        let _ = q.matches(&record, &ctx());
        let mut rows = vec![rec(&[("a", "1")]), rec(&[("a", "")])];
        q.sort(&mut rows);
    }
}
