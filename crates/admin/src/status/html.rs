//! The status page as HTML: server-rendered, no JavaScript, reloads itself, every value
//! escaped. The state comes first; details follow in the order an operator asks at 3 a.m.:
//! is ServiceNow connected, is anything stuck, what did it do, which plans, who is working.

use std::fmt::Write as _;

use super::view::{ConnectionView, StatusSnapshot};

/// `text` safe inside HTML text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "
:root{color-scheme:light dark;--bg:#fff;--fg:#1b1f24;--muted:#5b6470;--line:#d8dee4;--ok:#1a7f37;--okbg:#dafbe1;--bad:#cf222e;--badbg:#ffebe9;--warn:#9a6700;--warnbg:#fff8c5;--card:#f6f8fa}
@media (prefers-color-scheme:dark){:root{--bg:#0d1117;--fg:#e6edf3;--muted:#9198a1;--line:#30363d;--ok:#3fb950;--okbg:#12261e;--bad:#f85149;--badbg:#2d1214;--warn:#d29922;--warnbg:#2b2111;--card:#161b22}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:16px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif}
main{max-width:72rem;margin:0 auto;padding:1rem 1.25rem 3rem}
header{display:flex;justify-content:space-between;align-items:baseline;gap:1rem;flex-wrap:wrap}
h1{font-size:1.25rem;margin:.25rem 0}
h2{font-size:1.05rem;margin:1.75rem 0 .5rem;border-bottom:1px solid var(--line);padding-bottom:.25rem}
.muted{color:var(--muted)}
.banner{border-radius:.5rem;padding:1rem 1.25rem;margin:.75rem 0;font-size:1.35rem;font-weight:700}
.banner.ok{background:var(--okbg);color:var(--ok)}
.banner.attention{background:var(--badbg);color:var(--bad)}
.banner ul{font-size:1rem;font-weight:500;margin:.5rem 0 0;padding-left:1.25rem;color:var(--fg)}
.card{background:var(--card);border:1px solid var(--line);border-radius:.5rem;padding:.75rem 1rem}
.connected{color:var(--ok)}.failing,.not_configured{color:var(--bad)}.checking{color:var(--warn)}
.conn-headline{font-size:1.3rem;font-weight:700;margin:0 0 .35rem}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.15rem 1rem;margin:0}
dt{color:var(--muted)}dd{margin:0;overflow-wrap:anywhere}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(10rem,1fr));gap:.75rem}
.num{font-size:1.6rem;font-weight:700;display:block}
.num.bad{color:var(--bad)}
table{border-collapse:collapse;width:100%;font-size:.92rem}
th,td{text-align:left;vertical-align:top;padding:.35rem .5rem;border-bottom:1px solid var(--line)}
th{color:var(--muted);font-weight:600}
td ul{margin:0;padding-left:1rem}
.badge{display:inline-block;border-radius:1rem;padding:0 .55rem;font-size:.82rem;font-weight:600;white-space:nowrap}
.o-acted,.o-done,.o-approved{background:var(--okbg);color:var(--ok)}
.o-dead_lettered,.o-failed{background:var(--badbg);color:var(--bad)}
.o-retried,.o-requeued,.o-proposed,.o-rejected,.o-expired,.o-mismatch,.o-refused{background:var(--warnbg);color:var(--warn)}
.o-no_plan,.o-nothing_owed,.o-stale,.o-terminal{background:var(--card);color:var(--muted);border:1px solid var(--line)}
a{color:inherit}
footer{margin-top:2rem;font-size:.85rem}
";

fn when(at: Option<chrono::DateTime<chrono::Utc>>) -> String {
    at.map_or_else(
        || "—".to_owned(),
        |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

fn count(value: Option<u64>) -> String {
    value.map_or_else(|| "?".to_owned(), |v| v.to_string())
}

/// The whole page.
pub(super) fn render(snapshot: &StatusSnapshot) -> String {
    let mut page = String::with_capacity(32 * 1024);
    let ok = snapshot.summary.state == "ok";
    let title = if ok {
        format!("✓ nowpilot: {}", snapshot.connection.headline)
    } else {
        "⚠ nowpilot needs attention".to_owned()
    };
    let _ = write!(
        page,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"{}\">\
         <title>{}</title><style>{STYLE}</style></head><body><main>",
        snapshot.process.refresh_seconds,
        escape(&title)
    );
    let _ = write!(
        page,
        "<header><h1>nowpilot status</h1><span class=\"muted\">{} on {} · version {} · {}</span></header>",
        escape(&snapshot.process.role),
        escape(&snapshot.process.host),
        escape(&snapshot.process.version),
        when(Some(snapshot.generated_at)),
    );
    summary(&mut page, snapshot);
    connection(&mut page, &snapshot.connection);
    queue(&mut page, snapshot);
    activity(&mut page, snapshot);
    plans(&mut page, snapshot);
    workers(&mut page, snapshot);
    let _ = write!(
        page,
        "<footer class=\"muted\">nowpilot {} · pid {} · started {} · this page reloads every {} s · \
         JSON: <a href=\"/api/v1/status\">/api/v1/status</a>, <a href=\"/api/v1/activity\">/api/v1/activity</a></footer>",
        escape(&snapshot.process.version),
        snapshot.process.pid,
        when(Some(snapshot.process.started_at)),
        snapshot.process.refresh_seconds,
    );
    page.push_str("</main></body></html>\n");
    page
}

fn summary(page: &mut String, snapshot: &StatusSnapshot) {
    let s = &snapshot.summary;
    if s.problems.is_empty() {
        page.push_str(
            "<section id=\"summary\" class=\"banner ok\" data-state=\"ok\">All good: nothing needs attention</section>",
        );
        return;
    }
    page.push_str(
        "<section id=\"summary\" class=\"banner attention\" data-state=\"attention\">Needs attention<ul>",
    );
    for problem in &s.problems {
        let _ = write!(page, "<li>{}</li>", escape(problem));
    }
    page.push_str("</ul></section>");
}

fn connection(page: &mut String, c: &ConnectionView) {
    let _ = write!(
        page,
        "<h2>ServiceNow</h2><section id=\"connection\" class=\"card\" data-state=\"{}\">\
         <p class=\"conn-headline {}\">{}</p><dl>",
        c.state,
        c.state,
        escape(&c.headline)
    );
    let user = match (&c.user, &c.user_name) {
        (Some(u), Some(n)) if u != n => Some(format!("{u} ({n})")),
        (Some(u), _) => Some(u.clone()),
        (None, n) => n.clone(),
    };
    let rows = [
        ("instance", c.instance.clone()),
        ("user", user),
        ("auth", c.auth.clone()),
        ("failed check", c.failed_check.clone()),
        ("detail", c.detail.clone()),
        ("what to do", c.advice.clone()),
    ];
    for (label, value) in rows {
        if let Some(value) = value {
            let _ = write!(page, "<dt>{label}</dt><dd>{}</dd>", escape(&value));
        }
    }
    let _ = write!(
        page,
        "<dt>last checked</dt><dd>{}</dd></dl></section>",
        when(c.checked_at)
    );
}

fn queue(page: &mut String, snapshot: &StatusSnapshot) {
    let q = &snapshot.queue;
    let dead_class = if q.dead_letters.unwrap_or(0) > 0 {
        "num bad"
    } else {
        "num"
    };
    let _ = write!(
        page,
        "<h2>Queue</h2><section id=\"queue\" class=\"grid\">\
         <div class=\"card\"><span class=\"num\">{}</span>events waiting</div>\
         <div class=\"card\"><span class=\"num\">{}</span>waiting to retry</div>\
         <div class=\"card\"><span class=\"{dead_class}\">{}</span>dead letters</div>\
         <div class=\"card\"><span class=\"num\">{}</span>{}</div></section>",
        count(q.waiting),
        count(q.retrying),
        count(q.dead_letters),
        if q.ready { "ready" } else { "not ready" },
        escape(q.not_ready_reason.as_deref().unwrap_or("publishing")),
    );
    let _ = write!(
        page,
        "<p class=\"muted\">prefix {} · {} partition(s) · read {}{}</p>",
        escape(&q.prefix),
        q.partitions.len(),
        when(q.as_of),
        q.error
            .as_deref()
            .map(|e| format!(" · {}", escape(e)))
            .unwrap_or_default(),
    );
}

fn workers(page: &mut String, snapshot: &StatusSnapshot) {
    let w = &snapshot.workers;
    page.push_str("<h2>Workers</h2>");
    if w.members.is_empty() {
        page.push_str(
            "<p id=\"workers\" class=\"muted\">This process runs no worker, and no membership is known here.</p>",
        );
        return;
    }
    page.push_str(
        "<table id=\"workers\"><thead><tr><th>worker</th><th>host</th><th>partitions</th><th>last seen</th></tr></thead><tbody>",
    );
    for m in &w.members {
        let partitions: Vec<String> = m.partitions.iter().map(ToString::to_string).collect();
        let _ = write!(
            page,
            "<tr><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&m.id),
            if m.this_process {
                " <span class=\"muted\">(this process)</span>"
            } else {
                ""
            },
            escape(&m.host),
            escape(&partitions.join(", ")),
            if m.this_process {
                "now".to_owned()
            } else {
                when(m.last_seen)
            },
        );
    }
    page.push_str("</tbody></table>");
    if !w.complete {
        page.push_str(
            "<p class=\"muted\">Only this process is listed: other workers are not known here.</p>",
        );
    }
}

fn plans(page: &mut String, snapshot: &StatusSnapshot) {
    let p = &snapshot.plans;
    page.push_str("<h2>Plans (first match wins)</h2>");
    if !p.known {
        page.push_str("<p id=\"plans\" class=\"muted\">This process does not load the plans.</p>");
        return;
    }
    if p.plans.is_empty() {
        page.push_str(
            "<p id=\"plans\" class=\"muted\">No plans: nowpilot leaves every incident alone.</p>",
        );
        return;
    }
    page.push_str(
        "<table id=\"plans\"><thead><tr><th>#</th><th>plan</th><th>takes</th><th>actions</th><th>matched</th></tr></thead><tbody>",
    );
    for (i, plan) in p.plans.iter().enumerate() {
        let mut flags = Vec::new();
        if plan.builtin {
            flags.push("built-in");
        }
        if !plan.enabled {
            flags.push("disabled");
        }
        if plan.continues {
            flags.push("continue");
        }
        let flags = if flags.is_empty() {
            String::new()
        } else {
            format!(" <span class=\"muted\">({})</span>", flags.join(", "))
        };
        let _ = write!(
            page,
            "<tr class=\"plan-row\"><td>{}</td><td><b>{}</b>{flags}</td><td>{}</td><td>{}</td><td>{} pass(es), {}{} incident(s)</td></tr>",
            i + 1,
            escape(&plan.name),
            escape(&plan.takes),
            escape(&plan.actions.join(", ")),
            plan.matched.passes,
            if p.incidents_capped { "≥" } else { "" },
            plan.matched.incidents,
        );
    }
    page.push_str("</tbody></table>");
}

fn activity(page: &mut String, snapshot: &StatusSnapshot) {
    let a = &snapshot.activity;
    let mut notes = Vec::new();
    if a.missed > 0 {
        notes.push(format!("{} missed while this page was behind", a.missed));
    }
    if a.not_shared > 0 {
        notes.push(format!(
            "{} of this process's not shared with other processes",
            a.not_shared
        ));
    }
    let _ = write!(
        page,
        "<h2>Recent activity</h2><p class=\"muted\">{} pass(es) since this process started{}; the latest {} below.</p>",
        a.total,
        if notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", notes.join("; "))
        },
        a.items.len(),
    );
    if a.items.is_empty() {
        page.push_str("<p id=\"activity\" class=\"muted\">Nothing yet.</p>");
        return;
    }
    page.push_str(
        "<table id=\"activity\"><thead><tr><th>time</th><th>incident</th><th>plan</th><th>actions</th><th>outcome</th><th>took</th></tr></thead><tbody>",
    );
    for item in &a.items {
        let number = if item.number.is_empty() {
            item.sys_id.as_str()
        } else {
            item.number.as_str()
        };
        let incident = match snapshot.connection.incident_link(&item.sys_id) {
            Some(link) => format!(
                "<a href=\"{}\" rel=\"noreferrer\">{}</a>",
                escape(&link),
                escape(number)
            ),
            None => escape(number),
        };
        let short = item
            .short_description
            .as_deref()
            .map(|s| format!("<br><span class=\"muted\">{}</span>", escape(s)))
            .unwrap_or_default();
        let plans = if item.plans.is_empty() {
            "<span class=\"muted\">none</span>".to_owned()
        } else {
            escape(&item.plans.join(", "))
        };
        let mut actions = String::new();
        if item.actions.is_empty() {
            actions.push_str("<span class=\"muted\">—</span>");
        } else {
            actions.push_str("<ul>");
            for action in &item.actions {
                let _ = write!(
                    actions,
                    "<li><b>{}</b> <span class=\"badge o-{}\">{}</span> {}</li>",
                    escape(&action.action),
                    escape(&action.result),
                    escape(&action.result),
                    escape(&action.detail)
                );
            }
            actions.push_str("</ul>");
        }
        let reason = item
            .reason
            .as_deref()
            .or(item.error.as_deref())
            .map(|r| format!("<br><span class=\"muted\">{}</span>", escape(r)))
            .unwrap_or_default();
        let _ = write!(
            page,
            "<tr class=\"activity-row\" data-outcome=\"{}\"><td title=\"{}\">{}</td><td>{incident}{short}</td><td>{plans}</td><td>{actions}</td>\
             <td><span class=\"badge o-{}\">{}</span>{reason}</td><td>{} ms</td></tr>",
            escape(&item.outcome),
            escape(&item.at.to_rfc3339()),
            item.at.format("%H:%M:%S"),
            escape(&item.outcome),
            escape(&item.outcome.replace('_', " ")),
            item.duration_ms,
        );
    }
    page.push_str("</tbody></table>");
}
