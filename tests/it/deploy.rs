//! The deployment kit (`deploy/`, `Dockerfile`) holds what it claims: every YAML and JSON file
//! parses, every metric an alert or a dashboard panel uses is one the code registers, the
//! alerts cover the risks an operator must hear about and link to runbook sections that exist,
//! the Kubernetes objects run one non-root replica with probes, and every shipped config is one
//! remodel accepts. No cluster needed: these read files.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use remodel::metrics::names;
use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn deploy_files(ext: &[&str]) -> Vec<PathBuf> {
    let mut all = Vec::new();
    files(&root().join("deploy"), &mut all);
    all.retain(|p| {
        p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| ext.contains(&e))
    });
    all.sort();
    all
}

/// YAML as JSON values, so the checks below read one shape.
fn to_json(y: &Yaml) -> Value {
    match y {
        Yaml::Real(s) => s
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(s.clone())),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Array(a) => Value::Array(a.iter().map(to_json).collect()),
        Yaml::Hash(h) => Value::Object(
            h.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Yaml::String(s) => s.clone(),
                        Yaml::Integer(i) => i.to_string(),
                        Yaml::Boolean(b) => b.to_string(),
                        other => panic!("unexpected YAML key {other:?}"),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Yaml::Null => Value::Null,
        other => panic!("unexpected YAML node {other:?}"),
    }
}

fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()))
        .iter()
        .map(to_json)
        .collect()
}

fn json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()))
}

fn rel(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Every string under `v` at a key named `key`.
fn strings_at(v: &Value, key: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match x {
                    Value::String(s) if k == key => out.push(s.clone()),
                    _ => strings_at(x, key, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| strings_at(x, key, out)),
        _ => {}
    }
}

/// The `remodel_*` series names a PromQL expression reads.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("remodel_") {
        let start = i + at;
        let boundary = start == 0
            || !(bytes[start - 1].is_ascii_alphanumeric()
                || bytes[start - 1] == b'_'
                || bytes[start - 1] == b'"'
                || bytes[start - 1] == b'=');
        let end = expr[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(expr.len(), |n| start + n);
        if boundary {
            out.insert(expr[start..end].to_string());
        }
        i = end;
    }
    out
}

/// A series name the code registers: a name, or a histogram's `_bucket`/`_sum`/`_count`.
fn registered(series: &str) -> bool {
    const HISTOGRAMS: [&str; 2] = [names::APPLY_BATCH_SECONDS, names::BACKFILL_CHUNK_SECONDS];
    names::ALL.contains(&series)
        || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            series
                .strip_suffix(suffix)
                .is_some_and(|base| HISTOGRAMS.contains(&base))
        })
}

fn alert_rules(groups: &Value) -> Vec<Value> {
    groups["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").clone())
        .collect()
}

fn alerts_file() -> Value {
    yaml_docs(&root().join("deploy/prometheus/alerts.yml"))
        .pop()
        .expect("one document")
}

#[test]
fn every_yaml_and_json_file_in_deploy_parses() {
    let yaml = deploy_files(&["yml", "yaml"]);
    let json_files = deploy_files(&["json"]);
    assert!(yaml.len() >= 10, "{yaml:?}");
    assert!(!json_files.is_empty());
    for p in &yaml {
        let docs = yaml_docs(p);
        assert!(!docs.is_empty(), "{}: empty", rel(p));
    }
    for p in &json_files {
        assert!(json(p).is_object(), "{}", rel(p));
    }
}

#[test]
fn metric_parser_finds_names_and_the_check_rejects_unknown_ones() {
    let found = metric_names(
        "histogram_quantile(0.99, sum by (le) (rate(remodel_apply_batch_seconds_bucket[5m]))) \
         / remodel_lagg_seconds{job=\"remodel_x\"}",
    );
    assert_eq!(
        found,
        BTreeSet::from([
            "remodel_apply_batch_seconds_bucket".to_string(),
            "remodel_lagg_seconds".to_string()
        ])
    );
    assert!(registered("remodel_apply_batch_seconds_bucket"));
    assert!(!registered("remodel_lagg_seconds"));
    assert!(!registered("remodel_lag_seconds_bucket"));
}

#[test]
fn every_metric_an_alert_or_panel_uses_is_one_the_code_registers() {
    let mut exprs: Vec<(String, String)> = Vec::new();
    for p in deploy_files(&["yml", "yaml"]) {
        for doc in yaml_docs(&p) {
            let mut found = Vec::new();
            strings_at(&doc, "expr", &mut found);
            exprs.extend(found.into_iter().map(|e| (rel(&p), e)));
        }
    }
    for p in deploy_files(&["json"]) {
        let mut found = Vec::new();
        strings_at(&json(&p), "expr", &mut found);
        strings_at(&json(&p), "query", &mut found);
        exprs.extend(found.into_iter().map(|e| (rel(&p), e)));
    }
    let dashboard_exprs = exprs
        .iter()
        .filter(|(f, _)| f.ends_with("remodel.json"))
        .count();
    assert!(dashboard_exprs >= 10, "dashboard panels: {dashboard_exprs}");
    let mut used = BTreeSet::new();
    for (file, expr) in &exprs {
        for name in metric_names(expr) {
            assert!(
                registered(&name),
                "{file}: `{expr}` uses {name}, which src/metrics.rs does not register"
            );
            used.insert(name);
        }
    }
    // The dashboard shows the figures the issue names: lag, throughput per table, backfill
    // progress, errors.
    for must in [
        names::LAG_SECONDS,
        names::CHANGES_APPLIED_TOTAL,
        names::BACKFILL_PROGRESS_RATIO,
        names::ERRORS_TOTAL,
    ] {
        assert!(used.contains(must), "nothing charts {must}");
    }
}

#[test]
fn alerts_cover_the_operating_risks_and_link_runbook_sections_that_exist() {
    let rules = alert_rules(&alerts_file());
    let runbook = std::fs::read_to_string(root().join("docs/runbook.md")).expect("docs/runbook.md");
    let by_name = |name: &str| -> Value {
        rules
            .iter()
            .find(|r| r["alert"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no alert {name}"))
    };
    for (alert, metric) in [
        ("RemodelLagHigh", names::LAG_SECONDS),
        ("RemodelSlotRetainedWalHigh", names::SLOT_RETAINED_WAL_BYTES),
        ("RemodelPausedTooLong", names::PAUSED),
        ("RemodelDeadLetters", names::DEAD_LETTERS_TOTAL),
        ("RemodelDeferredRowsStuck", names::DEFERRED_OLDEST_SECONDS),
        ("RemodelVerifyMismatches", names::VERIFY_MISMATCHES),
        ("RemodelNotReady", names::READY),
    ] {
        let rule = by_name(alert);
        let expr = rule["expr"].as_str().expect("expr");
        assert!(metric_names(expr).contains(metric), "{alert}: {expr}");
    }
    for rule in &rules {
        let name = rule["alert"].as_str().expect("every rule is an alert");
        assert!(rule["labels"]["severity"].is_string(), "{name}: severity");
        assert!(
            rule["annotations"]["summary"].is_string(),
            "{name}: summary"
        );
        let url = rule["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: runbook_url"));
        let anchor = url
            .split_once("docs/runbook.md#")
            .map(|(_, a)| a)
            .unwrap_or_else(|| panic!("{name}: {url} is not a docs/runbook.md anchor"));
        assert_eq!(anchor, format!("alert-{}", name.to_lowercase()));
        assert!(
            runbook.contains(&format!("id=\"{anchor}\"")),
            "{name}: docs/runbook.md has no section {anchor}"
        );
        // The section quotes the rule as shipped: its expression and its `for`.
        let section = runbook
            .split(&format!("id=\"{anchor}\""))
            .nth(1)
            .and_then(|rest| rest.split("<a id=").next())
            .unwrap_or_default();
        let expr = rule["expr"].as_str().expect("expr").trim();
        assert!(
            section.contains(expr),
            "{name}: docs/runbook.md does not quote the shipped rule `{expr}`"
        );
        if let Some(f) = rule["for"].as_str() {
            assert!(
                section.contains(&format!("for: {f}")),
                "{name}: docs/runbook.md does not say `for: {f}`"
            );
        }
    }
}

#[test]
fn prometheus_rule_for_kubernetes_is_the_plain_rule_file() {
    let crd = yaml_docs(&root().join("deploy/kubernetes/prometheusrule.yaml"))
        .pop()
        .expect("one document");
    assert_eq!(crd["kind"], "PrometheusRule");
    assert_eq!(crd["spec"], alerts_file());
}

#[test]
fn kubernetes_runs_one_non_root_replica_with_probes_and_secret_urls() {
    let deployment = yaml_docs(&root().join("deploy/kubernetes/deployment.yaml"))
        .pop()
        .expect("one document");
    assert_eq!(deployment["kind"], "Deployment");
    // Two daemons on one slot fight over it: exactly one, never overlapping during a rollout.
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");
    let pod = &deployment["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    let non_root = c["securityContext"]["runAsNonRoot"] == true
        || pod["securityContext"]["runAsNonRoot"] == true;
    assert!(non_root, "runAsNonRoot");
    let env = c["env"].as_array().expect("env");
    for var in ["REMODEL__SOURCE__URL", "REMODEL__TARGET__URL"] {
        let e = env
            .iter()
            .find(|e| e["name"] == var)
            .unwrap_or_else(|| panic!("{var} not set"));
        assert!(
            e["valueFrom"]["secretKeyRef"].is_object(),
            "{var} must come from a Secret: {e}"
        );
    }
    let kustomization = yaml_docs(&root().join("deploy/kubernetes/kustomization.yaml"))
        .pop()
        .expect("one document");
    let listed: Vec<&str> = kustomization["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for f in [
        "deployment.yaml",
        "configmap.yaml",
        "service.yaml",
        "servicemonitor.yaml",
        "prometheusrule.yaml",
    ] {
        assert!(listed.contains(&f), "kustomization lacks {f}");
        assert!(root().join("deploy/kubernetes").join(f).exists());
    }
}

#[test]
fn every_shipped_config_is_one_remodel_accepts() {
    let mut configs: Vec<(String, String)> = Vec::new();
    let compose = root().join("deploy/compose/remodel.toml");
    configs.push((
        rel(&compose),
        std::fs::read_to_string(&compose).expect("compose remodel.toml"),
    ));
    let cm = yaml_docs(&root().join("deploy/kubernetes/configmap.yaml"))
        .pop()
        .expect("one document");
    let text = cm["data"]["remodel.toml"]
        .as_str()
        .expect("ConfigMap data remodel.toml")
        .to_string();
    assert_eq!(
        text, configs[0].1,
        "the ConfigMap and compose configs differ"
    );
    configs.push(("deploy/kubernetes/configmap.yaml".into(), text));
    for (name, text) in configs {
        remodel::config::Config::from_toml(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn dockerfile_builds_in_stages_runs_non_root_and_checks_healthz() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    assert!(text.matches("\nFROM ").count() + usize::from(text.starts_with("FROM ")) >= 2);
    let user = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    assert_ne!(user.trim(), "root");
    assert_ne!(user.trim(), "0");
    assert!(text.contains("HEALTHCHECK"), "HEALTHCHECK");
    assert!(text.contains("/healthz"));
    // Everything the release build reads is copied into the build stage: the manifest, the
    // sources, the bench targets Cargo.toml names, and the files `include_str!` compiles in.
    let build = text
        .split("\nFROM ")
        .nth(1)
        .expect("a build stage")
        .to_string();
    let mut needed = BTreeSet::from(
        [
            "Cargo.toml",
            "Cargo.lock",
            "rust-toolchain.toml",
            "src",
            "benches",
        ]
        .map(String::from),
    );
    let mut sources = Vec::new();
    files(&root().join("src"), &mut sources);
    for f in sources {
        let code = std::fs::read_to_string(&f).unwrap_or_default();
        for (_, rest) in code
            .match_indices("include_str!(\"")
            .map(|(i, _)| ((), &code[i + 14..]))
        {
            let path = rest.split('"').next().unwrap_or_default();
            let file = f.parent().expect("dir").join(path);
            let file = std::fs::canonicalize(&file)
                .unwrap_or_else(|e| panic!("{}: include_str!({path}): {e}", rel(&f)));
            let top = file
                .strip_prefix(std::fs::canonicalize(root()).expect("root"))
                .expect("inside the repo")
                .components()
                .next()
                .expect("a path")
                .as_os_str()
                .to_string_lossy()
                .to_string();
            // Unit-test fixtures (captured bytes under tests/) are not in a release build.
            if top != "tests" {
                needed.insert(top);
            }
        }
    }
    assert!(
        needed.contains("config"),
        "the demo's include_str! was not found"
    );
    for n in needed {
        assert!(
            build
                .lines()
                .any(|l| l.starts_with("COPY ") && l.split_whitespace().any(|w| w == n)),
            "the build stage does not COPY {n}"
        );
    }
}
