//! The table of broken configurations, one row per refusal, grouped by class. Every refusal
//! the loader knows (the config crate, `[queue]`, `[ingress]`, `[worker]`, `[[plans]]` with
//! their CEL conditions) has a row here or in `plan_cases.rs`.

/// `nowpilot plans check`: loads the file, the plans and `[worker]`.
pub(crate) const PLANS_CHECK: &[&str] = &["plans", "check"];
/// `nowpilot worker`: also `[queue]` and `[admin]`, before connecting.
pub(crate) const WORKER: &[&str] = &["worker"];
/// `nowpilot ingress`: `[ingress]`, `[queue]` and `[admin]`, before connecting.
pub(crate) const INGRESS: &[&str] = &["ingress"];

/// One broken configuration and what the refusal must say.
pub(crate) struct Case {
    /// The refusal class, shown when the row fails.
    pub(crate) class: &'static str,
    /// The subcommand.
    pub(crate) command: &'static [&'static str],
    /// `nowpilot.toml`.
    pub(crate) config: &'static str,
    /// Other files next to it (included files, secret files).
    pub(crate) files: &'static [(&'static str, &'static str)],
    /// Environment variables for the run.
    pub(crate) env: &'static [(&'static str, &'static str)],
    /// Where the message must place the problem: a file of the directory, with `:line:` for
    /// syntax errors (`nowpilot.toml:3:`), or `env:NOWPILOT_...`.
    pub(crate) origin: &'static str,
    /// The dotted key the message must name (in backticks); empty for none.
    pub(crate) key: &'static str,
    /// A fragment of the reason.
    pub(crate) reason: &'static str,
    /// A secret value written in the configuration that must not appear anywhere.
    pub(crate) secret: &'static str,
}

/// The defaults of a row.
pub(crate) const BASE: Case = Case {
    class: "",
    command: PLANS_CHECK,
    config: "",
    files: &[],
    env: &[],
    origin: "nowpilot.toml",
    key: "",
    reason: "",
    secret: "",
};

/// A valid webhook secret (24 bytes), for rows about something else.
macro_rules! good_secret {
    () => {
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    };
}

/// The file, includes, environment, secrets and section values.
pub(crate) const CASES: &[Case] = &[
    // --- The file itself ------------------------------------------------------------------
    Case {
        class: "TOML syntax error, with its line",
        config: "[worker]\nquickstart = true\nallowed_hosts = [\"a.example.com\"\n",
        origin: "nowpilot.toml:3:",
        reason: "invalid TOML: unclosed array",
        ..BASE
    },
    Case {
        class: "TOML syntax error on a secret's line",
        config: "[servicenow]\ninstance_url = \"https://x.service-now.com\"\npassword = \"TOPSECRET-pw\\q\"\n",
        origin: "nowpilot.toml:3:",
        reason: "invalid TOML",
        secret: "TOPSECRET-pw",
        ..BASE
    },
    Case {
        class: "the same key twice in a file",
        config: "[worker]\nquickstart = true\nquickstart = false\n",
        origin: "nowpilot.toml:3:",
        reason: "duplicate key",
        ..BASE
    },
    Case {
        class: "unknown key (typo)",
        config: "[worker]\nquickstar = true\n",
        key: "worker.quickstar",
        reason: "unknown field `quickstar`, expected one of",
        ..BASE
    },
    Case {
        class: "unknown section (typo)",
        config: "[wokrer]\nquickstart = true\n",
        key: "wokrer",
        reason: "unknown field `wokrer`",
        ..BASE
    },
    Case {
        class: "unknown key in a plan (typo)",
        config: "[[plans]]\nname = \"p\"\nautonmy = \"review\"\nactions = [{ kind = \"acknowledge\" }]\n",
        key: "plans[0].autonmy",
        reason: "unknown field `autonmy`",
        ..BASE
    },
    Case {
        class: "wrong type: string for a number",
        config: "[queue]\npartitions = \"many\"\n",
        key: "queue.partitions",
        reason: "invalid type: string \"many\", expected u16",
        ..BASE
    },
    Case {
        class: "wrong type: string for a list",
        config: "[worker]\nallowed_hosts = \"status.example.com\"\n",
        key: "worker.allowed_hosts",
        reason: "expected a sequence",
        ..BASE
    },
    Case {
        class: "wrong type: a secret of the wrong type is not quoted",
        command: INGRESS,
        config: "[ingress]\nsecrets = \"whsec_TOPSECRETxMfKQ9r8GKYqrTwjUPD8\"\n",
        key: "ingress.secrets",
        reason: "invalid type: string (value not shown: it is a secret), expected a sequence",
        secret: "TOPSECRETxMfKQ9r8GKYqrTwjUPD8",
        ..BASE
    },
    Case {
        class: "wrong type: a numeric token is not quoted",
        config: "[admin]\ntoken = 918273645546372819\n",
        key: "admin.token",
        reason: "invalid type: integer (value not shown: it is a secret), expected a string",
        secret: "918273645546372819",
        ..BASE
    },
    Case {
        class: "bad duration",
        config: "[worker]\nproposal_ttl = \"3x\"\n",
        key: "worker.proposal_ttl",
        reason: "invalid value: string \"3x\", expected a duration",
        ..BASE
    },
    Case {
        class: "bad duration in a list",
        config: "[worker]\nretry_delays = [\"5s\", \"soon\"]\n",
        key: "worker.retry_delays",
        reason: "retry_delays[1]",
        ..BASE
    },
    Case {
        class: "bad duration in a plan step",
        config: "[[plans]]\nname = \"p\"\nsteps = [{ kind = \"related\", timeout = \"fast\" }]\nactions = [{ kind = \"investigate\" }]\n",
        key: "plans[0].steps[0].timeout",
        reason: "invalid duration \"fast\": expected e.g. \"30s\"",
        ..BASE
    },
    Case {
        class: "bad byte size",
        config: "[ingress]\nmax_body = \"12 parsecs\"\n",
        key: "ingress.max_body",
        reason: "unknown unit `parsecs`",
        ..BASE
    },
    Case {
        class: "byte size out of range",
        command: INGRESS,
        config: concat!(
            "[ingress]\nsecrets = [\"",
            good_secret!(),
            "\"]\nmax_body = \"1GiB\"\n"
        ),
        key: "ingress.max_body",
        reason: "1024MiB is out of range",
        ..BASE
    },
    Case {
        class: "number out of the type's range",
        config: "[queue]\npartitions = 70000\n",
        key: "queue.partitions",
        reason: "invalid value: integer `70000`, expected u16",
        ..BASE
    },
    Case {
        class: "number out of range: queue.partitions",
        command: WORKER,
        config: "[queue]\npartitions = 0\n",
        key: "queue.partitions",
        reason: "it must be between 1 and 1024",
        ..BASE
    },
    Case {
        class: "number out of range: worker.concurrency",
        config: "[worker]\nconcurrency = 0\n",
        key: "worker.concurrency",
        reason: "must be between 1 and 1024",
        ..BASE
    },
    Case {
        class: "duration out of range: ingress.tolerance",
        command: INGRESS,
        config: concat!(
            "[ingress]\nsecrets = [\"",
            good_secret!(),
            "\"]\ntolerance = \"48h\"\n"
        ),
        key: "ingress.tolerance",
        reason: "must be at most 24h",
        ..BASE
    },
    Case {
        class: "durations that contradict each other",
        config: "[worker]\npoll_interval = \"10m\"\npoll_window = \"5m\"\n",
        key: "worker.poll_window",
        reason: "must be longer than poll_interval",
        ..BASE
    },
    // --- Includes -------------------------------------------------------------------------
    Case {
        class: "missing include file",
        config: "include = \"connection.toml\"\n",
        key: "include",
        reason: "connection.toml does not exist",
        ..BASE
    },
    Case {
        class: "include cycle",
        config: "include = \"plans.toml\"\n",
        files: &[("plans.toml", "include = \"nowpilot.toml\"\n")],
        key: "include",
        reason: "include cycle",
        ..BASE
    },
    Case {
        class: "include of a file that never ends",
        config: "include = \"/dev/zero\"\n",
        key: "include",
        reason: "cannot read /dev/zero: larger than 4 MiB",
        ..BASE
    },
    Case {
        class: "include of the wrong type",
        config: "include = 3\n",
        key: "include",
        reason: "expected a file name or a list of file names, found integer",
        ..BASE
    },
    Case {
        class: "error inside an included file names that file",
        config: "include = \"worker.toml\"\n",
        files: &[("worker.toml", "[worker]\nconcurrency = \"lots\"\n")],
        origin: "worker.toml",
        key: "worker.concurrency",
        reason: "invalid type: string \"lots\"",
        ..BASE
    },
    Case {
        class: "the same key in two files",
        config: "include = \"worker.toml\"\n[worker]\nquickstart = true\n",
        files: &[("worker.toml", "[worker]\nquickstart = false\n")],
        origin: "worker.toml",
        reason: "worker.quickstart is set in both",
        ..BASE
    },
    // --- Environment overrides ------------------------------------------------------------
    Case {
        class: "bad environment override names the variable",
        config: "",
        env: &[("NOWPILOT_QUEUE__PARTITIONS", "abc")],
        origin: "env:NOWPILOT_QUEUE__PARTITIONS",
        key: "queue.partitions",
        reason: "invalid type: string \"abc\", expected u16",
        ..BASE
    },
    Case {
        class: "environment override of a value as if it were a section",
        config: "",
        env: &[("NOWPILOT_WORKER__QUICKSTART__ON", "true")],
        origin: "env:NOWPILOT_WORKER__QUICKSTART__ON",
        key: "worker.quickstart",
        reason: "invalid type: map, expected a boolean",
        ..BASE
    },
    Case {
        class: "environment override with an empty segment",
        config: "",
        env: &[("NOWPILOT_WORKER____CONCURRENCY", "4")],
        origin: "env:NOWPILOT_WORKER____CONCURRENCY",
        reason: "empty key segment",
        ..BASE
    },
    Case {
        class: "environment override of a secret with the wrong type is not quoted",
        command: INGRESS,
        config: "",
        env: &[(
            "NOWPILOT_INGRESS__SECRETS",
            "whsec_TOPSECRETfromTheEnvironment0",
        )],
        origin: "env:NOWPILOT_INGRESS__SECRETS",
        key: "ingress.secrets",
        reason: "expected a sequence",
        secret: "TOPSECRETfromTheEnvironment0",
        ..BASE
    },
    // --- Missing required keys ------------------------------------------------------------
    Case {
        class: "missing required key: a plan's name",
        config: "[[plans]]\nactions = [{ kind = \"acknowledge\" }]\n",
        key: "plans[0]",
        reason: "missing field `name`",
        ..BASE
    },
    Case {
        class: "missing required key: servicenow.instance_url",
        config: "[servicenow]\nauth = \"basic\"\n",
        key: "servicenow",
        reason: "missing field `instance_url`",
        ..BASE
    },
    Case {
        class: "missing required key: a probe's url",
        config: "[[plans]]\nname = \"p\"\nsteps = [{ kind = \"http_probe\", name = \"h\" }]\nactions = [{ kind = \"investigate\" }]\n",
        key: "plans[0].steps[0].url",
        reason: "a `http_probe` step needs `url`",
        ..BASE
    },
    Case {
        class: "missing required key: no webhook secret at all",
        command: INGRESS,
        config: "[ingress]\nlisten = \"127.0.0.1:0\"\n",
        key: "ingress.secrets",
        reason: "no secret configured",
        ..BASE
    },
    // --- Secrets --------------------------------------------------------------------------
    Case {
        class: "webhook secret: not base64",
        command: INGRESS,
        config: "[ingress]\nsecrets = [\"whsec_TOPSECRET!!not*base64\"]\n",
        key: "ingress.secrets[0]",
        reason: "not valid base64",
        secret: "TOPSECRET!!not*base64",
        ..BASE
    },
    Case {
        class: "webhook secret: too short",
        command: INGRESS,
        config: concat!(
            "[ingress]\nsecrets = [\"",
            good_secret!(),
            "\", \"whsec_VE9QU0VDUkVUCg==\"]\n"
        ),
        key: "ingress.secrets[1]",
        reason: "too short to sign with",
        secret: "VE9QU0VDUkVUCg",
        ..BASE
    },
    Case {
        class: "webhook secret: no whsec_ prefix",
        command: INGRESS,
        config: "[ingress]\nsecrets = [\"TOPSECRETplainvalue\"]\n",
        key: "ingress.secrets[0]",
        reason: "must start with `whsec_`",
        secret: "TOPSECRETplainvalue",
        ..BASE
    },
    Case {
        class: "webhook secret file: a bad line",
        command: INGRESS,
        config: "[ingress]\nsecrets_file = \"webhook-secrets\"\n",
        files: &[(
            "webhook-secrets",
            concat!("# current\n", good_secret!(), "\nwhsec_TOPSECRETline@@\n"),
        )],
        key: "ingress.secrets_file (line 3)",
        reason: "not valid base64",
        secret: "TOPSECRETline",
        ..BASE
    },
    Case {
        class: "webhook secret file: missing",
        command: INGRESS,
        config: "[ingress]\nsecrets_file = \"no-such-file\"\n",
        key: "ingress.secrets_file",
        reason: "no-such-file",
        ..BASE
    },
    Case {
        class: "body signature: both secret and secret_file",
        command: INGRESS,
        config: "[ingress.body_signature]\nheader = \"x-signature\"\nsecret = \"TOPSECRET-body\"\nsecret_file = \"f\"\n",
        key: "ingress.body_signature",
        reason: "give either secret or secret_file, not both",
        secret: "TOPSECRET-body",
        ..BASE
    },
    Case {
        class: "runbook secret: not base64",
        config: "[worker]\nrunbook_secret = \"whsec_TOPSECRET##runbook\"\n",
        key: "worker.runbook_secret",
        reason: "not valid base64",
        secret: "TOPSECRET##runbook",
        ..BASE
    },
    Case {
        class: "runbook secret: too short",
        config: "[worker]\nrunbook_secret = \"whsec_VE9QU0VDUkVUCg==\"\n",
        key: "worker.runbook_secret",
        reason: "too short to sign with",
        secret: "VE9QU0VDUkVUCg",
        ..BASE
    },
    Case {
        class: "runbook secret file: missing",
        config: "[worker]\nrunbook_secret_file = \"runbook-secret\"\n",
        key: "worker.runbook_secret_file",
        reason: "cannot read",
        ..BASE
    },
    Case {
        class: "runbook secret file: a device that never ends",
        config: "[worker]\nrunbook_secret_file = \"/dev/zero\"\n",
        key: "worker.runbook_secret_file",
        reason: "/dev/zero is larger than 65536 bytes",
        ..BASE
    },
    Case {
        class: "admin token file: a device that never ends",
        command: WORKER,
        config: "[admin]\ntoken_file = \"/dev/zero\"\n",
        key: "admin.token_file",
        reason: "/dev/zero is larger than 65536 bytes",
        ..BASE
    },
    Case {
        class: "admin token: set twice",
        command: WORKER,
        config: "[admin]\ntoken = \"TOPSECRET-admin-token\"\ntoken_file = \"token\"\n",
        key: "admin.token_file",
        reason: "set either admin.token or admin.token_file, not both",
        secret: "TOPSECRET-admin-token",
        ..BASE
    },
    Case {
        class: "broker URL: invalid, password not shown",
        command: WORKER,
        config: "[queue]\nurl = \"amqp://nowpilot:TOPSECRET-broker@[broken/%2f\"\n",
        key: "queue.url",
        reason: "is invalid",
        secret: "TOPSECRET-broker",
        ..BASE
    },
    // --- [queue], [worker], [ingress] values ------------------------------------------------
    Case {
        class: "queue prefix",
        command: INGRESS,
        config: concat!(
            "[ingress]\nsecrets = [\"",
            good_secret!(),
            "\"]\n[queue]\nprefix = \"has space\"\n"
        ),
        key: "queue.prefix",
        reason: "must be 1 to 200 characters of [A-Za-z0-9_.-]",
        ..BASE
    },
    Case {
        class: "unknown queue kind",
        config: "[queue]\nkind = \"kafka\"\n",
        key: "queue.kind",
        reason: "unknown variant `kafka`, expected `amqp` or `memory`",
        ..BASE
    },
    Case {
        class: "allowed host",
        config: "[worker]\nallowed_hosts = [\"a.example.com\", \"*.example.com\", \"https://b.example.com/\"]\n",
        key: "worker.allowed_hosts[2]",
        reason: "",
        ..BASE
    },
    Case {
        class: "approver",
        config: "[worker]\napprovers = [\"maya.patel\", \"group:\"]\n",
        key: "worker.approvers[1]",
        reason: "`group:` needs a group name",
        ..BASE
    },
    Case {
        class: "rate limit exemption",
        command: INGRESS,
        config: concat!(
            "[ingress]\nsecrets = [\"",
            good_secret!(),
            "\"]\nrate_limit_exempt = [\"10.0.0.0/33\"]\n"
        ),
        key: "ingress.rate_limit_exempt[0]",
        reason: "",
        ..BASE
    },
    Case {
        class: "log filter",
        config: "[telemetry]\nlog_level = \"info,===\"\n",
        key: "telemetry.log_level",
        reason: "is not a log filter",
        ..BASE
    },
    Case {
        class: "listen address",
        config: "[ingress]\nlisten = \"localhost\"\n",
        key: "ingress.listen",
        reason: "invalid socket address",
        ..BASE
    },
];
