//! `smallfirst.toml`: what a good file becomes, and what every bad one is told.

use std::time::Duration;

use smallfirst_router::{BackendConfig, Config, Faults};

const GOOD: &str = r#"
[server]
port = 9000
allowed_hosts = ["GPU-box.lan"]
cors_origins = ["https://app.example.com/"]
api_keys_env = "SMALLFIRST_API_KEYS"
header_timeout = 5
max_connections = 100

[tiers.local]
backend = "embedded"
model = "qwen2.5-coder-0.5b-instruct"
threads = 2
ctx = 4096

[tiers.mid]
backend = "openai"
model = "qwen2.5:7b"
base_url = "http://127.0.0.1:11434/v1"
context_window = 32768
capabilities = ["tools", "json_schema"]
local = true
fallback = "frontier"
retry = { attempts = 2, backoff = 0.05, max_backoff = 1 }
timeouts = { first_byte = 30, total = 90 }
breaker = { failures = 3, cooldown = 10 }

[tiers.frontier]
backend = "anthropic"
model = "claude-sonnet-4-5"
base_url = "https://api.anthropic.com/v1"
api_key_env = "ANTHROPIC_API_KEY"
price = { input = 3.0, cached_input = 0.3, output = 15.0 }
context_window = 200000
capabilities = ["tools", "json_schema", "vision"]
"#;

#[test]
fn a_good_file_becomes_a_config() {
    let c = Config::parse(GOOD).expect("valid");
    assert_eq!(c.server.host, "127.0.0.1");
    assert_eq!(c.server.port, 9000);
    assert_eq!(c.server.allowed_hosts, ["gpu-box.lan"]);
    assert_eq!(c.server.cors_origins, ["https://app.example.com"]);
    assert_eq!(
        c.server.api_keys_env.as_deref(),
        Some("SMALLFIRST_API_KEYS")
    );
    assert_eq!(c.server.header_timeout, Duration::from_secs(5));
    assert_eq!(c.server.max_connections, 100);
    assert_eq!(c.server.idle_timeout, Duration::from_secs(60), "a default");
    let names: Vec<&str> = c.tiers.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["frontier", "local", "mid"]);
    let local = c.tier("local").expect("local");
    assert!(local.on_machine && local.capabilities.tools && local.context_window.is_none());
    assert_eq!(
        local.backend,
        BackendConfig::Embedded {
            model: "qwen2.5-coder-0.5b-instruct".into(),
            threads: Some(2),
            ctx: Some(4096),
            parallel: None
        }
    );
    let mid = c.tier("mid").expect("mid");
    assert!(
        mid.on_machine,
        "an Ollama on this machine is local when it says so"
    );
    assert_eq!(mid.fallback.as_deref(), Some("frontier"));
    assert_eq!(mid.prices.input, 0.0);
    assert_eq!(mid.faults.attempts, 2);
    assert_eq!(mid.faults.backoff, Duration::from_millis(50));
    assert_eq!(mid.faults.max_backoff, Duration::from_secs(1));
    assert_eq!(mid.faults.first_byte_timeout, Duration::from_secs(30));
    assert_eq!(mid.faults.total_timeout, Duration::from_secs(90));
    assert_eq!(
        mid.faults.connect_timeout,
        Faults::default().connect_timeout,
        "what a table leaves out keeps its default"
    );
    assert_eq!(mid.faults.breaker_failures, 3);
    assert_eq!(mid.faults.breaker_cooldown, Duration::from_secs(10));
    let frontier = c.tier("frontier").expect("frontier");
    assert!(!frontier.on_machine && frontier.capabilities.vision);
    assert_eq!(frontier.prices.cached_input, 0.3);
    let BackendConfig::Anthropic(remote) = &frontier.backend else {
        panic!("anthropic backend")
    };
    assert_eq!(remote.api_key_env.as_deref(), Some("ANTHROPIC_API_KEY"));
    assert_eq!(remote.base_url.as_str(), "https://api.anthropic.com/v1");
}

#[test]
fn cached_input_defaults_to_the_input_price() {
    let c = Config::parse(
        "[tiers.a]\nbackend = \"openai\"\nmodel = \"m\"\nbase_url = \"https://x.test/v1\"\ncontext_window = 8\nprice = { input = 2.5, output = 10 }\n",
    )
    .expect("valid");
    let a = c.tier("a").expect("a");
    assert_eq!(
        (a.prices.input, a.prices.cached_input, a.prices.output),
        (2.5, 2.5, 10.0)
    );
}

#[test]
fn a_calibrated_threshold_keeps_its_guarantee() {
    let c = Config::parse(
        "[tiers.local]\nbackend = \"embedded\"\nmodel = \"m\"\n\n[tasks.t]\nthreshold = 0.83\ncalibration = { method = \"learn-then-test\", alpha = 0.05, delta = 0.1, certified = true, set_sha256 = \"ab\", model_sha256 = \"cd\", rows = 500 }\n",
    )
    .expect("valid");
    let t = &c.policy.tasks["t"];
    let cal = t.calibration.as_ref().expect("calibration");
    assert_eq!(t.threshold, Some(0.83));
    assert_eq!(
        (cal.alpha, cal.delta, cal.rows, cal.certified),
        (0.05, 0.1, 500, true)
    );
    assert_eq!(cal.model_sha256.as_deref(), Some("cd"));
}

/// Each bad file, the path its error must name, the line it must point at, and words the
/// message must contain.
#[test]
fn every_mistake_names_its_field_and_line() {
    let remote = "backend = \"openai\"\nmodel = \"m\"\nbase_url = \"https://x.test/v1\"\ncontext_window = 8\n";
    let cases: Vec<(String, &str, Option<usize>, &str)> = vec![
        ("[tiers.local]\nbakend = \"embedded\"\n".into(), "tiers.local.bakend", Some(2), "unknown field `bakend`"),
        ("[tiers.local]\nbackend = \"embeded\"\n".into(), "tiers.local.backend", Some(2), "embeded"),
        ("[server]\nport = \"80\"\n[tiers.l]\nbackend = \"embedded\"\n".into(), "server.port", Some(2), "expected u16"),
        ("[server]\nport = 70000\n[tiers.l]\nbackend = \"embedded\"\n".into(), "server.port", Some(2), ""),
        ("[serve]\nport = 1\n".into(), "serve", Some(1), "unknown field `serve`"),
        ("[server]\ncors_origins = [\"*\"]\n[tiers.l]\nbackend = \"embedded\"\n".into(), "server.cors_origins[0]", Some(2), "`*` is not accepted"),
        ("[server]\ncors_origins = [\"https://a.com/app\"]\n[tiers.l]\nbackend = \"embedded\"\n".into(), "server.cors_origins[0]", Some(2), "without a path"),
        ("[server]\nallowed_hosts = [\"a b\"]\n[tiers.l]\nbackend = \"embedded\"\n".into(), "server.allowed_hosts[0]", Some(2), "host name"),
        ("[server]\nmax_connections = 0\n[tiers.l]\nbackend = \"embedded\"\n".into(), "server.max_connections", Some(2), "at least 1"),
        ("[server]\nheader_timeout = -1\n[tiers.l]\nbackend = \"embedded\"\n".into(), "server.header_timeout", Some(2), "positive"),
        ("[server]\napi_keys_env = \" \"\n[tiers.l]\nbackend = \"embedded\"\n".into(), "server.api_keys_env", Some(2), "environment variable"),
        ("".into(), "tiers", None, "at least one tier"),
        ("[tiers.local]\nbackend = \"embedded\"\nbase_url = \"http://x\"\n".into(), "tiers.local.base_url", Some(3), "does not apply to backend `embedded`"),
        ("[tiers.local]\nbackend = \"embedded\"\nthreads = 0\n".into(), "tiers.local.threads", Some(3), "at least 1"),
        ("[tiers.local]\nbackend = \"embedded\"\nparallel = 0\n".into(), "tiers.local.parallel", Some(3), "1 to 64"),
        ("[tiers.f]\nbackend = \"openai\"\nmodel = \"m\"\nbase_url = \"http://x\"\nparallel = 2\n".into(), "tiers.f.parallel", Some(5), "does not apply"),
        ("[tiers.f]\nbackend = \"openai\"\nmodel = \"m\"\ncontext_window = 8\n".into(), "tiers.f.base_url", None, "is required"),
        ("[tiers.f]\nbackend = \"openai\"\nmodel = \"m\"\nbase_url = \"ftp://x\"\ncontext_window = 8\n".into(), "tiers.f.base_url", Some(4), "http"),
        ("[tiers.f]\nbackend = \"openai\"\nmodel = \"m\"\nbase_url = \"not a url\"\ncontext_window = 8\n".into(), "tiers.f.base_url", Some(4), "not a URL"),
        ("[tiers.f]\nbackend = \"gemini\"\nbase_url = \"https://x.test\"\ncontext_window = 8\n".into(), "tiers.f.model", None, "is required"),
        (format!("[tiers.f]\n{remote}api_key_env = \"sk-abc123\"\n"), "tiers.f.api_key_env", Some(6), "never the key itself"),
        (format!("[tiers.f]\n{remote}price = {{ input = -1 }}\n"), "tiers.f.price.input", Some(6), "non-negative"),
        (format!("[tiers.f]\n{remote}price = {{ inptu = 1 }}\n"), "tiers.f.price.inptu", Some(6), "unknown field `inptu`"),
        (format!("[tiers.f]\n{remote}capabilities = [\"tools\", \"telepathy\"]\n"), "tiers.f.capabilities[1]", Some(6), "telepathy"),
        (format!("[tiers.f]\n{remote}fallback = \"g\"\n"), "tiers.f.fallback", Some(6), "no tier is named `g`"),
        (format!("[tiers.f]\n{remote}fallback = \"f\"\n"), "tiers.f.fallback", Some(6), "itself"),
        (format!("[tiers.f]\n{remote}fallback = \"g\"\n[tiers.g]\n{remote}fallback = \"f\"\n"), "tiers.f.fallback", None, "circle: f → g → f"),
        ("[tiers.f]\nbackend = \"openai\"\nmodel = \"m\"\nbase_url = \"https://x.test\"\n".into(), "tiers.f.context_window", None, "is required"),
        ("[tiers.a]\nbackend = \"embedded\"\n[tiers.b]\nbackend = \"embedded\"\n".into(), "tiers.b.backend", None, "only one embedded tier"),
        ("[tiers.\"a b\"]\nbackend = \"embedded\"\n".into(), "tiers.a b", None, "letters, digits"),
        ("[tiers.local\nbackend = 1\n".into(), "", Some(1), ""),
        ("[tiers.local]\nbackend = \"embedded\"\nretry = { attempts = 2 }\n".into(), "tiers.local.retry", Some(3), "does not apply to backend `embedded`"),
        (format!("[tiers.f]\n{remote}retry = {{ attempts = 0 }}\n"), "tiers.f.retry.attempts", Some(6), "1 to 10"),
        (format!("[tiers.f]\n{remote}retry = {{ tries = 2 }}\n"), "tiers.f.retry.tries", Some(6), "unknown field `tries`"),
        (format!("[tiers.f]\n{remote}retry = {{ backoff = 2, max_backoff = 1 }}\n"), "tiers.f.retry.max_backoff", Some(6), "shorter than `retry.backoff`"),
        (format!("[tiers.f]\n{remote}[tiers.f.timeouts]\nconnect = -1\n"), "tiers.f.timeouts.connect", Some(7), "positive number of seconds"),
        (format!("[tiers.f]\n{remote}timeouts = {{ total = \"10s\" }}\n"), "tiers.f.timeouts.total", Some(6), "expected f64"),
        (format!("[tiers.f]\n{remote}breaker = {{ failures = 0 }}\n"), "tiers.f.breaker.failures", Some(6), "at least 1"),
        (format!("[tiers.f]\n{remote}[policy]\nfrontier = \"g\"\n"), "policy.frontier", Some(7), "no tier is named `g`"),
        (format!("[tiers.f]\n{remote}[policy]\nthreshold = 1.5\n"), "policy.threshold", Some(7), "between 0 and 1"),
        (format!("[tiers.f]\n{remote}[policy]\nlocal_only_low_confidence = \"shrug\"\n"), "policy.local_only_low_confidence", Some(7), "shrug"),
        (format!("[tiers.f]\n{remote}[[policy.rules]]\ntask = \"x\"\n"), "policy.rules[0]", Some(6), "missing field `tier`"),
        (format!("[tiers.f]\n{remote}[[policy.rules]]\ntier = \"f\"\nneeds = [\"telepathy\"]\n"), "policy.rules[0].needs[0]", Some(8), "telepathy"),
        (format!("[tiers.f]\n{remote}[[policy.rules]]\ntier = \"f\"\nescalate = [\"f\", \"h\"]\n"), "policy.rules[0].escalate[1]", Some(8), "no tier is named `h`"),
        (format!("[tiers.f]\n{remote}[tasks.t]\nlabels = []\n"), "tasks.t.labels", Some(7), "at least one label"),
        (format!("[tiers.f]\n{remote}[tasks.t]\nprivacy = \"secret\"\n"), "tasks.t.privacy", Some(7), "secret"),
        (format!("[tiers.f]\n{remote}[tasks.t]\nthreshhold = 0.5\n"), "tasks.t.threshhold", Some(7), "unknown field `threshhold`"),
        (format!("[tiers.f]\n{remote}[tasks.t]\nconfidence = \"vibes\"\n"), "tasks.t.confidence", Some(7), "unknown confidence method `vibes`"),
        (format!("[tiers.f]\n{remote}[tasks.t]\nconfidence = \"self_consistency\"\nsamples = 1\n"), "tasks.t.samples", Some(8), "between 2 and 16"),
        (format!("[tiers.f]\n{remote}[tasks.t]\nconfidence = \"debiased\"\nsamples = 4\n"), "tasks.t.samples", Some(8), "is for `confidence = \"self_consistency\"`"),
        (format!("[tiers.f]\n{remote}[tasks.t]\ncalibration = {{ method = \"ltt\", alpha = 1.5, delta = 0.1, certified = true, set_sha256 = \"x\", rows = 3 }}\n"), "tasks.t.calibration", Some(7), "`alpha` and `delta`"),
        (format!("[tiers.f]\n{remote}[tasks.t]\ncalibration = {{ method = \"ltt\" }}\n"), "tasks.t.calibration", Some(7), "missing field"),
    ];
    for (text, path, line, words) in cases {
        let e = Config::parse(&text).expect_err(&text);
        assert_eq!(e.path, path, "{text}\n→ {e}");
        assert_eq!(e.line, line, "{text}\n→ {e}");
        assert!(e.message.contains(words), "{text}\n→ {e}");
        assert!(!e.message.is_empty());
    }
}

#[test]
fn a_missing_file_is_named() {
    let e =
        Config::load(std::path::Path::new("/nonexistent/smallfirst.toml")).expect_err("missing");
    assert!(
        e.to_string()
            .starts_with("/nonexistent/smallfirst.toml: cannot read the file"),
        "{e}"
    );
}

#[test]
fn no_file_means_one_local_embedded_tier() {
    let c = Config::embedded("smollm2-135m-instruct");
    assert_eq!(c.tiers.len(), 1);
    assert_eq!(c.tiers[0].name, "local");
    assert!(c.tiers[0].on_machine);
    assert_eq!(c.tiers[0].backend.kind(), "embedded");
}

#[test]
fn the_ledger_defaults_to_a_file_measured_against_the_priciest_tier() {
    let c = Config::parse(GOOD).expect("valid");
    assert!(c.ledger.enabled && c.ledger.path.is_none() && c.ledger.postgres.is_none());
    assert_eq!(c.ledger.baseline.as_deref(), Some("frontier"));
    assert_eq!(c.ledger.commit_window, Duration::from_millis(50));
    let pg = Config::parse(&format!(
        "{GOOD}\n[ledger]\nurl = \"postgres://smallfirst@db.lan/ledger\"\nbaseline = \"mid\"\ncommit_ms = 200\n"
    ))
    .expect("valid");
    assert_eq!(
        pg.ledger.postgres,
        Some(smallfirst_router::config::Postgres::Url(
            "postgres://smallfirst@db.lan/ledger".into()
        ))
    );
    assert_eq!(pg.ledger.baseline.as_deref(), Some("mid"));
    assert_eq!(pg.ledger.commit_window, Duration::from_millis(200));
}

#[test]
fn ledger_mistakes_are_named() {
    let cases = [
        (
            "baseline = \"gpt5\"",
            "ledger.baseline",
            "no tier is named `gpt5`",
        ),
        ("commit_ms = 0", "ledger.commit_ms", "1 to 10000"),
        (
            "url = \"postgres://me:hunter2@db/x\"",
            "ledger.url",
            "password does not belong",
        ),
        (
            "url = \"host=db password=hunter2\"",
            "ledger.url",
            "password does not belong",
        ),
        ("url = \"mysql://db/x\"", "ledger.url", "PostgreSQL URL"),
        (
            "url = \"postgres://db/x\"\nurl_env = \"LEDGER\"",
            "ledger.url_env",
            "not both",
        ),
        (
            "url_env = \"not a name\"",
            "ledger.url_env",
            "variable's name",
        ),
        (
            "path = \"l.sqlite\"\nurl = \"postgres://db/x\"",
            "ledger.path",
            "give one",
        ),
        ("store = \"x\"", "ledger", "unknown field"),
    ];
    for (ledger, path, words) in cases {
        let e = Config::parse(&format!("{GOOD}\n[ledger]\n{ledger}\n")).expect_err(ledger);
        assert!(
            e.path.starts_with(path) && e.message.contains(words),
            "{ledger}: {e}"
        );
    }
}
