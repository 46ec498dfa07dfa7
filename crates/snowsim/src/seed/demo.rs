//! The demo estate: people, groups, configuration items, changes and open incidents.

use chrono::{DateTime, Duration, Utc};
use nowpilot_model::time::format_glide;

use super::{Seeder, id_of};
use crate::{schema::id, store::Store};

/// A user of the demo estate.
pub(crate) struct DemoUser {
    pub(crate) user_name: &'static str,
    first: &'static str,
    last: &'static str,
    title: &'static str,
    pub(crate) roles: &'static [&'static str],
}

/// The demo estate's people. `nowpilot.integration` is the integration account (role itil).
pub(crate) const DEMO_USERS: &[DemoUser] = &[
    DemoUser {
        user_name: "admin",
        first: "System",
        last: "Administrator",
        title: "",
        roles: &["admin"],
    },
    DemoUser {
        user_name: "nowpilot.integration",
        first: "nowpilot",
        last: "Integration",
        title: "Integration account",
        roles: &["itil"],
    },
    DemoUser {
        user_name: "maya.patel",
        first: "Maya",
        last: "Patel",
        title: "SRE Lead",
        roles: &["itil"],
    },
    DemoUser {
        user_name: "priya.raman",
        first: "Priya",
        last: "Raman",
        title: "Platform Engineer",
        roles: &["itil"],
    },
    DemoUser {
        user_name: "jonas.weber",
        first: "Jonas",
        last: "Weber",
        title: "Network Engineer",
        roles: &["itil"],
    },
    DemoUser {
        user_name: "aiko.tanaka",
        first: "Aiko",
        last: "Tanaka",
        title: "Database Administrator",
        roles: &["itil"],
    },
    DemoUser {
        user_name: "zoe.lefevre",
        first: "Zoë",
        last: "Lefèvre",
        title: "Database Engineer",
        roles: &["itil"],
    },
    DemoUser {
        user_name: "carlos.mendes",
        first: "Carlos",
        last: "Mendes",
        title: "Service Desk Analyst",
        roles: &["itil"],
    },
    DemoUser {
        user_name: "liam.oconnor",
        first: "Liam",
        last: "O'Connor",
        title: "Service Desk Analyst",
        roles: &["itil"],
    },
];

/// The demo estate: people, groups, configuration items, changes and open incidents.
pub(crate) fn demo(store: &mut Store, now: DateTime<Utc>) {
    let mut s = Seeder { store, now };
    let day = 24 * 60;
    let user = |s: &mut Seeder<'_>, u: &DemoUser| {
        let email = format!("{}@example.com", u.user_name);
        let service_account = if u.user_name == "nowpilot.integration" {
            "true"
        } else {
            "false"
        };
        s.add(
            id::SYS_USER,
            "admin",
            400 * day,
            &[
                ("user_name", u.user_name),
                ("first_name", u.first),
                ("last_name", u.last),
                ("email", &email),
                ("title", u.title),
                ("web_service_access_only", service_account),
            ],
        )
    };
    let ids: Vec<String> = DEMO_USERS.iter().map(|u| user(&mut s, u)).collect();
    let person = |name: &str| {
        DEMO_USERS
            .iter()
            .position(|u| u.user_name == name)
            .and_then(|i| ids.get(i).cloned())
            .unwrap_or_default()
    };
    let (maya, priya, jonas) = (
        person("maya.patel"),
        person("priya.raman"),
        person("jonas.weber"),
    );
    let (aiko, zoe, carlos, liam) = (
        person("aiko.tanaka"),
        person("zoe.lefevre"),
        person("carlos.mendes"),
        person("liam.oconnor"),
    );

    let group = |s: &mut Seeder<'_>, name: &str, manager: &str, members: &[&str]| {
        let email = format!("{}@example.com", name.to_lowercase().replace(' ', "-"));
        let g = s.add(
            id_of("sys_user_group"),
            "admin",
            400 * day,
            &[
                ("name", name),
                ("description", &format!("{name} team")),
                ("manager", manager),
                ("email", &email),
            ],
        );
        for m in members {
            s.add(
                id_of("sys_user_grmember"),
                "admin",
                400 * day,
                &[("user", m), ("group", &g)],
            );
        }
        g
    };
    let service_desk = group(&mut s, "Service Desk", &carlos, &[&carlos, &liam]);
    let network = group(&mut s, "Network", &jonas, &[&jonas]);
    let database = group(&mut s, "Database", &aiko, &[&aiko, &zoe]);
    let sre = group(&mut s, "Platform SRE", &maya, &[&maya, &priya]);

    let ci = |s: &mut Seeder<'_>, name: &str, class: &str, about: &str, group: &str, ip: &str| {
        let fqdn = if ip.is_empty() {
            String::new()
        } else {
            format!("{name}.prod.example.com")
        };
        s.add(
            id_of("cmdb_ci"),
            "admin",
            300 * day,
            &[
                ("name", name),
                ("sys_class_name", class),
                ("short_description", about),
                ("support_group", group),
                ("ip_address", ip),
                ("fqdn", &fqdn),
                ("environment", "production"),
            ],
        )
    };
    let checkout = ci(
        &mut s,
        "checkout-api",
        "cmdb_ci_service",
        "Checkout service",
        &sre,
        "",
    );
    ci(
        &mut s,
        "payments-api",
        "cmdb_ci_service",
        "Payments API",
        &sre,
        "",
    );
    let payments_db = ci(
        &mut s,
        "payments-db",
        "cmdb_ci_db_instance",
        "Payments PostgreSQL",
        &database,
        "",
    );
    let edge_lb = ci(
        &mut s,
        "edge-lb",
        "cmdb_ci_lb",
        "Public edge load balancer",
        &network,
        "10.0.0.10",
    );
    ci(
        &mut s,
        "web-01",
        "cmdb_ci_linux_server",
        "Web node 1",
        &sre,
        "10.0.1.11",
    );
    ci(
        &mut s,
        "web-02",
        "cmdb_ci_linux_server",
        "Web node 2",
        &sre,
        "10.0.1.12",
    );
    ci(
        &mut s,
        "db-01",
        "cmdb_ci_linux_server",
        "Primary database host",
        &database,
        "10.0.2.21",
    );
    ci(
        &mut s,
        "core-switch-01",
        "cmdb_ci_ip_switch",
        "Core switch",
        &network,
        "10.0.0.2",
    );

    let at = |minutes_ago: i64| format_glide(now - Duration::minutes(minutes_ago));
    let deploy = s.add(
        id::CHANGE_REQUEST,
        "maya.patel",
        2 * day,
        &[
            ("short_description", "Deploy checkout-api v2.14.0"),
            (
                "description",
                "Rolling deploy of checkout-api with the new cart pricing code.",
            ),
            ("state", "0"),
            ("cmdb_ci", &checkout),
            ("assignment_group", &sre),
            ("assigned_to", &maya),
            ("requested_by", &maya),
            ("start_date", &at(70)),
            ("end_date", &at(10)),
            ("work_start", &at(55)),
            ("work_end", &at(40)),
        ],
    );
    let upgrade = s.add(
        id::CHANGE_REQUEST,
        "aiko.tanaka",
        3 * day,
        &[
            (
                "short_description",
                "Upgrade payments-db to PostgreSQL 16.4",
            ),
            ("state", "-2"),
            ("cmdb_ci", &payments_db),
            ("assignment_group", &database),
            ("assigned_to", &aiko),
            ("requested_by", &aiko),
            ("start_date", &at(-day)),
            ("end_date", &at(-day - 120)),
        ],
    );
    let certs = s.add(
        id::CHANGE_REQUEST,
        "jonas.weber",
        9 * day,
        &[
            ("short_description", "Renew edge-lb TLS certificates"),
            ("state", "3"),
            ("close_code", "successful"),
            ("close_notes", "Certificates rotated, no errors."),
            ("cmdb_ci", &edge_lb),
            ("assignment_group", &network),
            ("assigned_to", &jonas),
            ("requested_by", &jonas),
            ("start_date", &at(7 * day + 60)),
            ("end_date", &at(7 * day)),
            ("work_start", &at(7 * day + 55)),
            ("work_end", &at(7 * day + 20)),
        ],
    );

    let latency = s.add(
        id::INCIDENT,
        "carlos.mendes",
        30,
        &[
            ("short_description", "Checkout API p95 latency above 2s"),
            (
                "description",
                "Customers report slow checkout; p95 latency alert firing.",
            ),
            ("caller_id", &carlos),
            ("category", "software"),
            ("impact", "2"),
            ("urgency", "2"),
            ("cmdb_ci", &checkout),
            ("business_service", &checkout),
            ("assignment_group", &sre),
            ("contact_type", "phone"),
        ],
    );
    s.update(
        id::INCIDENT,
        &latency,
        "maya.patel",
        25,
        &[
            ("state", "2"),
            ("assigned_to", &maya),
            (
                "work_notes",
                "Alert confirmed in Prometheus. Looking at the deploy from 40 minutes ago.",
            ),
        ],
    );
    let disk = s.add(
        id::INCIDENT,
        "aiko.tanaka",
        120,
        &[
            ("short_description", "payments-db disk usage at 85%"),
            ("category", "database"),
            ("impact", "2"),
            ("urgency", "3"),
            ("cmdb_ci", &payments_db),
            ("assignment_group", &database),
            ("contact_type", "email"),
        ],
    );
    s.update(
        id::INCIDENT,
        &disk,
        "zoe.lefevre",
        90,
        &[(
            "work_notes",
            "Growth is steady, about 1% a day. Vacuum scheduled for tonight.",
        )],
    );
    let edge = s.add(
        id::INCIDENT,
        "carlos.mendes",
        300,
        &[
            (
                "short_description",
                "Intermittent 502s from edge-lb for EU customers",
            ),
            ("category", "network"),
            ("impact", "3"),
            ("urgency", "1"),
            ("cmdb_ci", &edge_lb),
            ("assignment_group", &network),
            ("caller_id", &carlos),
        ],
    );
    s.update(
        id::INCIDENT,
        &edge,
        "jonas.weber",
        240,
        &[
            ("state", "2"),
            ("assigned_to", &jonas),
            (
                "work_notes",
                "Seeing upstream resets on one EU node. Opened a case with the vendor.",
            ),
        ],
    );
    s.update(
        id::INCIDENT,
        &edge,
        "jonas.weber",
        200,
        &[
            ("state", "3"),
            ("hold_reason", "4"),
            ("work_notes", "Waiting for the vendor's analysis."),
        ],
    );
    let vpn = s.add(
        id::INCIDENT,
        "liam.oconnor",
        600,
        &[
            ("short_description", "VPN profile needed for new contractor"),
            ("category", "inquiry"),
            ("caller_id", &liam),
            ("assignment_group", &service_desk),
            ("contact_type", "self-service"),
        ],
    );
    s.update(
        id::INCIDENT,
        &vpn,
        "liam.oconnor",
        500,
        &[(
            "comments",
            "The contractor starts on Monday, can we have it by then?",
        )],
    );

    let task_ci = id_of("task_ci");
    for (task, ci) in [
        (&latency, &checkout),
        (&disk, &payments_db),
        (&edge, &edge_lb),
        (&deploy, &checkout),
        (&upgrade, &payments_db),
        (&certs, &edge_lb),
    ] {
        s.add(task_ci, "admin", 0, &[("task", task), ("ci_item", ci)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seed::reference_data;

    #[test]
    fn demo_estate_is_complete() {
        let mut store = Store::new();
        reference_data(&mut store);
        demo(&mut store, Utc::now());
        let count = |t: &str| store.table(id_of(t)).map_or(0, |t| t.len());
        assert_eq!(count("sys_user"), DEMO_USERS.len());
        assert_eq!(count("sys_user_group"), 4);
        assert_eq!(count("sys_user_grmember"), 7);
        assert_eq!(count("cmdb_ci"), 8);
        assert_eq!(count("change_request"), 3);
        assert_eq!(count("incident"), 4);
        assert_eq!(count("task_ci"), 6);
        assert_eq!(count("dl_u_priority"), 9);
        assert_eq!(count("sys_journal_field"), 5);
        assert_eq!(
            store.choice_label("incident", "hold_reason", "4"),
            Some("Awaiting Vendor")
        );
        assert_eq!(store.user_display_name("zoe.lefevre"), "Zoë Lefèvre");
        let def = &crate::schema::INCIDENT;
        let (Some(p), Some(st), Some(h)) = (
            def.position("priority"),
            def.position("state"),
            def.position("hold_reason"),
        ) else {
            panic!("schema lost a field");
        };
        let incidents = store
            .table(id::INCIDENT)
            .map(|t| t.rows().cloned().collect::<Vec<_>>());
        let incidents = incidents.unwrap_or_default();
        let priorities: Vec<&str> = incidents.iter().map(|r| r[p].as_str()).collect();
        assert_eq!(priorities, ["3", "4", "3", "5"]);
        assert_eq!(incidents[2][st], "3");
        assert_eq!(incidents[2][h], "4");
    }
}
