//! The plan rows of the table: `[[plans]]`, their intake filters and CEL conditions.

use super::cases::{BASE, Case};

/// Plans, intake filters and conditions.
pub(crate) const CASES: &[Case] = &[
    // --- Plans ----------------------------------------------------------------------------
    Case {
        class: "plan: empty name",
        config: "[[plans]]\nname = \"\"\nactions = [{ kind = \"acknowledge\" }]\n",
        key: "plans[0].name",
        reason: "must be 1-64 letters, digits",
        ..BASE
    },
    Case {
        class: "plan: duplicate names",
        config: "[[plans]]\nname = \"p\"\nactions = [{ kind = \"acknowledge\" }]\n[[plans]]\nname = \"p\"\nactions = [{ kind = \"investigate\" }]\n",
        key: "plans[1].name",
        reason: "another plan has the same name",
        ..BASE
    },
    Case {
        class: "plan: the Quickstart plan's name while quickstart is on",
        config: "[worker]\nquickstart = true\n[[plans]]\nname = \"quickstart\"\nactions = [{ kind = \"acknowledge\" }]\n",
        key: "plans[0].name",
        reason: "built-in Quickstart plan's name",
        ..BASE
    },
    Case {
        class: "plan: no actions",
        config: "[[plans]]\nname = \"p\"\n",
        key: "plans[0].actions",
        reason: "a plan needs at least one action",
        ..BASE
    },
    Case {
        class: "plan: unknown action kind",
        config: "[[plans]]\nname = \"p\"\nactions = [{ kind = \"page_someone\" }]\n",
        key: "plans[0].actions[0].kind",
        reason: "unknown variant `page_someone`",
        ..BASE
    },
    Case {
        class: "plan: unknown step kind",
        config: "[[plans]]\nname = \"p\"\nsteps = [{ kind = \"ssh\", name = \"x\" }]\nactions = [{ kind = \"investigate\" }]\n",
        key: "plans[0].steps[0].kind",
        reason: "unknown variant `ssh`, expected one of `related`, `http_probe`",
        ..BASE
    },
    Case {
        class: "plan: autonomy value",
        config: "[[plans]]\nname = \"p\"\nautonomy = \"yolo\"\nactions = [{ kind = \"acknowledge\" }]\n",
        key: "plans[0].autonomy",
        reason: "unknown variant `yolo`, expected `autonomous` or `review`",
        ..BASE
    },
    Case {
        class: "plan: a key that does not apply to the action",
        config: "[[plans]]\nname = \"p\"\nactions = [{ kind = \"acknowledge\", close_code = \"Solved\" }]\n",
        key: "plans[0].actions[0].close_code",
        reason: "does not apply to a `acknowledge` action",
        ..BASE
    },
    Case {
        class: "plan: resolve without close notes",
        config: "[[plans]]\nname = \"p\"\nactions = [{ kind = \"resolve\", close_code = \"Solved (Permanently)\" }]\n",
        key: "plans[0].actions[0].close_notes",
        reason: "a `resolve` action needs `close_notes`",
        ..BASE
    },
    Case {
        class: "plan: priority out of range",
        config: "[[plans]]\nname = \"p\"\nactions = [{ kind = \"set_priority\", priority = 7 }]\n",
        key: "plans[0].actions[0].priority",
        reason: "7 is not a priority: use 1 (Critical), 2 (High)",
        ..BASE
    },
    Case {
        class: "plan: duplicate action ids",
        config: "[[plans]]\nname = \"p\"\nactions = [{ kind = \"work_note\", text = \"a\" }, { kind = \"work_note\", text = \"b\" }]\n",
        key: "plans[0].actions[1].id",
        reason: "two actions have the id \"work_note\"",
        ..BASE
    },
    Case {
        class: "plan: duplicate step names",
        config: "[[plans]]\nname = \"p\"\nsteps = [{ kind = \"related\" }, { kind = \"related\" }]\nactions = [{ kind = \"investigate\" }]\n",
        key: "plans[0].steps[1].name",
        reason: "two steps are named \"related\"",
        ..BASE
    },
    Case {
        class: "plan: step timeout zero",
        config: "[worker]\nallowed_hosts = [\"status.example.com\"]\n[[plans]]\nname = \"p\"\nsteps = [{ kind = \"http_probe\", name = \"h\", url = \"https://status.example.com/\", timeout = \"0s\" }]\nactions = [{ kind = \"investigate\" }]\n",
        key: "plans[0].steps[0].timeout",
        reason: "must be longer than zero",
        ..BASE
    },
    Case {
        class: "plan: probe method",
        config: "[[plans]]\nname = \"p\"\nsteps = [{ kind = \"http_probe\", name = \"h\", url = \"https://status.example.com/\", method = \"DELETE\" }]\nactions = [{ kind = \"investigate\" }]\n",
        key: "plans[0].steps[0].method",
        reason: "must be GET, HEAD or POST",
        ..BASE
    },
    Case {
        class: "plan: expected status",
        config: "[[plans]]\nname = \"p\"\nsteps = [{ kind = \"http_probe\", name = \"h\", url = \"https://status.example.com/\", expect_status = 700 }]\nactions = [{ kind = \"investigate\" }]\n",
        key: "plans[0].steps[0].expect_status",
        reason: "between 100 and 599",
        ..BASE
    },
    Case {
        class: "plan: step URL with credentials",
        config: "[[plans]]\nname = \"p\"\nsteps = [{ kind = \"http_probe\", name = \"h\", url = \"https://ops:TOPSECRET-url@status.example.com/\" }]\nactions = [{ kind = \"investigate\" }]\n",
        key: "plans[0].steps[0].url",
        reason: "must not contain credentials",
        secret: "TOPSECRET-url",
        ..BASE
    },
    Case {
        class: "plan: step URL host not allowed",
        config: "[worker]\nallowed_hosts = [\"status.example.com\"]\n[[plans]]\nname = \"p\"\nsteps = [{ kind = \"http_probe\", name = \"h\", url = \"https://evil.example.net/\" }]\nactions = [{ kind = \"investigate\" }]\n",
        key: "plans[0].steps[0].url",
        reason: "evil.example.net",
        ..BASE
    },
    Case {
        class: "plan: prometheus step without a server",
        config: "[[plans]]\nname = \"p\"\nsteps = [{ kind = \"prometheus\", name = \"errors\", query = \"x\", op = \">\", threshold = 1 }]\nactions = [{ kind = \"investigate\" }]\n",
        key: "plans[0].steps[0].base_url",
        reason: "needs base_url or [worker] prometheus_url",
        ..BASE
    },
    Case {
        class: "plan: prometheus comparison",
        config: "[[plans]]\nname = \"p\"\nsteps = [{ kind = \"prometheus\", name = \"errors\", query = \"x\", op = \"=>\", threshold = 1 }]\nactions = [{ kind = \"investigate\" }]\n",
        key: "plans[0].steps[0].op",
        reason: "unknown variant `=>`",
        ..BASE
    },
    Case {
        class: "plan: a key that does not apply to the step",
        config: "[[plans]]\nname = \"p\"\nsteps = [{ kind = \"related\", url = \"https://status.example.com/\" }]\nactions = [{ kind = \"investigate\" }]\n",
        key: "plans[0].steps[0].url",
        reason: "does not apply to a `related` step",
        ..BASE
    },
    Case {
        class: "plan: a probe without a name",
        config: "[[plans]]\nname = \"p\"\nsteps = [{ kind = \"http_probe\", url = \"https://status.example.com/\" }]\nactions = [{ kind = \"investigate\" }]\n",
        key: "plans[0].steps[0].name",
        reason: "a `http_probe` step needs `name`",
        ..BASE
    },
    Case {
        class: "plan: runbook without runbook_secret",
        config: "[worker]\nallowed_hosts = [\"rundeck.example.com\"]\n[[plans]]\nname = \"p\"\nsteps = [{ kind = \"runbook\", name = \"restart\", url = \"https://rundeck.example.com/hook\" }]\nactions = [{ kind = \"investigate\" }]\n",
        key: "plans[0].steps[0]",
        reason: "a runbook step needs [worker] runbook_secret",
        ..BASE
    },
    Case {
        class: "plan: review action without approvers",
        config: "[[plans]]\nname = \"p\"\nautonomy = \"review\"\nactions = [{ kind = \"acknowledge\" }]\n",
        key: "worker.approvers",
        reason: "nobody may approve them",
        ..BASE
    },
    // --- Intake filters -------------------------------------------------------------------
    Case {
        class: "intake: unknown state",
        config: "[[plans]]\nname = \"p\"\nintake = { states = [\"new\", \"bogus\"] }\nactions = [{ kind = \"acknowledge\" }]\n",
        key: "plans[0].intake.states[1]",
        reason: "unknown state \"bogus\"",
        ..BASE
    },
    Case {
        class: "intake: unknown priority",
        config: "[[plans]]\nname = \"p\"\nintake = { priorities = [1, \"urgentest\"] }\nactions = [{ kind = \"acknowledge\" }]\n",
        key: "plans[0].intake.priorities[1]",
        reason: "\"urgentest\" is not a priority",
        ..BASE
    },
    Case {
        class: "intake: empty entry",
        config: "[[plans]]\nname = \"p\"\nintake = { categories = [\"software\", \" \"] }\nactions = [{ kind = \"acknowledge\" }]\n",
        key: "plans[0].intake.categories[1]",
        reason: "must not be empty",
        ..BASE
    },
    Case {
        class: "intake: unknown criterion (typo)",
        config: "[[plans]]\nname = \"p\"\nintake = { priority = [1] }\nactions = [{ kind = \"acknowledge\" }]\n",
        key: "plans[0].intake.priority",
        reason: "unknown field `priority`",
        ..BASE
    },
    // --- CEL conditions -------------------------------------------------------------------
    Case {
        class: "CEL: syntax error",
        config: "[[plans]]\nname = \"p\"\nintake = { when = \"priority <= \" }\nactions = [{ kind = \"acknowledge\" }]\n",
        key: "plans[0].intake.when",
        reason: "invalid CEL expression",
        ..BASE
    },
    Case {
        class: "CEL: empty condition",
        config: "[[plans]]\nname = \"p\"\nintake = { when = \" \" }\nactions = [{ kind = \"acknowledge\" }]\n",
        key: "plans[0].intake.when",
        reason: "empty expression",
        ..BASE
    },
    Case {
        class: "CEL: unknown variable",
        config: "[[plans]]\nname = \"p\"\nintake = { when = \"priorty <= 2\" }\nactions = [{ kind = \"acknowledge\" }]\n",
        key: "plans[0].intake.when",
        reason: "unknown variable `priorty`",
        ..BASE
    },
    Case {
        class: "CEL: findings in an intake condition",
        config: "[[plans]]\nname = \"p\"\nintake = { when = \"findings.related.ok\" }\nactions = [{ kind = \"acknowledge\" }]\n",
        key: "plans[0].intake.when",
        reason: "`findings` exists only in an action's `when`",
        ..BASE
    },
    Case {
        class: "CEL: unsupported function",
        config: "[[plans]]\nname = \"p\"\nintake = { when = \"title.lowerAscii() == \\\"db down\\\"\" }\nactions = [{ kind = \"acknowledge\" }]\n",
        key: "plans[0].intake.when",
        reason: "unknown function `lowerAscii`",
        ..BASE
    },
    Case {
        class: "CEL: result that is not a boolean",
        config: "[[plans]]\nname = \"p\"\nintake = { when = \"priority + 1\" }\nactions = [{ kind = \"acknowledge\" }]\n",
        key: "plans[0].intake.when",
        reason: "must produce true or false",
        ..BASE
    },
    Case {
        class: "CEL: action condition on a step that does not exist",
        config: "[worker]\nallowed_hosts = [\"status.example.com\"]\n[[plans]]\nname = \"p\"\nautonomy = \"autonomous\"\nsteps = [{ kind = \"http_probe\", name = \"checkout\", url = \"https://status.example.com/\" }]\nactions = [{ kind = \"investigate\" }, { kind = \"acknowledge\", when = \"findings.probe.chekout.ok\" }]\n",
        key: "plans[0].actions[1].when",
        reason: "no http_probe step named \"chekout\" (it has checkout)",
        ..BASE
    },
    Case {
        class: "CEL: action condition on findings of another kind",
        config: "[[plans]]\nname = \"p\"\nautonomy = \"autonomous\"\nactions = [{ kind = \"investigate\" }, { kind = \"acknowledge\", when = \"findings.probes.ok\" }]\n",
        key: "plans[0].actions[1].when",
        reason: "`findings.probes` does not exist",
        ..BASE
    },
    Case {
        class: "CEL: findings without an investigation",
        config: "[[plans]]\nname = \"p\"\nautonomy = \"autonomous\"\nactions = [{ kind = \"acknowledge\", when = \"findings.related.ok\" }]\n",
        key: "plans[0].actions[0].when",
        reason: "the plan has no investigate action",
        ..BASE
    },
];
