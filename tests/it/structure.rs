//! The code's shape, pinned (issue 17): the top-level modules of `src/` depend on each other
//! without cycles, and no SQL that names the version-rule tables (ledger, truncations,
//! deferred, backfill tables and passes, progress) is written outside `src/state/`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("src/ is readable") {
        let p = e.expect("directory entry").path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Code without `//` comments (doc comments name other modules freely).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Top-level module of each source file → the top-level modules its code names (`crate::x`).
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = src();
    let mut files = Vec::new();
    sources(&root, &mut files);
    let top: BTreeSet<String> = files
        .iter()
        .filter_map(|p| {
            let rel = p.strip_prefix(&root).ok()?;
            let first = rel.components().next()?.as_os_str().to_str()?;
            Some(first.trim_end_matches(".rs").to_string())
        })
        .filter(|m| m != "lib" && m != "main")
        .collect();
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for p in &files {
        let rel = p.strip_prefix(&root).expect("under src/");
        let m = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or("");
        let m = m.trim_end_matches(".rs").to_string();
        if m == "lib" || m == "main" {
            continue;
        }
        let text = code(&std::fs::read_to_string(p).expect("readable source"));
        let entry = deps.entry(m.clone()).or_default();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + 7..];
            let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                group[..end].split(',').map(str::trim).collect()
            } else {
                vec![rest]
            };
            for n in names {
                let id: String = n
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if top.contains(&id) && id != m {
                    entry.insert(id);
                }
            }
        }
    }
    deps
}

fn cycle(deps: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        m: &str,
        deps: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(m.to_string(), 1);
        stack.push(m.to_string());
        for d in deps.get(m).into_iter().flatten() {
            match state.get(d.as_str()) {
                Some(1) => {
                    let at = stack.iter().position(|s| s == d).unwrap_or(0);
                    let mut c = stack[at..].to_vec();
                    c.push(d.clone());
                    return Some(c);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(d, deps, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(m.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in deps.keys() {
        if !state.contains_key(m.as_str()) {
            if let Some(c) = visit(m, deps, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn top_level_modules_depend_on_each_other_without_cycles() {
    let deps = graph();
    assert!(deps.len() > 15, "read too few modules: {deps:?}");
    assert!(
        deps["backfill"].contains("state") && deps["verify"].contains("read"),
        "the reader missed known dependencies: {deps:?}"
    );
    if let Some(c) = cycle(&deps) {
        panic!(
            "an import cycle between top-level modules: {}",
            c.join(" → ")
        );
    }
    assert!(
        !deps["verify"].contains("backfill"),
        "verify reads snapshots through read/, not backfill's internals"
    );
}

#[test]
fn only_the_state_module_writes_sql_naming_the_version_rule_tables() {
    let root = src();
    let mut files = Vec::new();
    sources(&root, &mut files);
    let tables = [
        "ledger",
        "truncations",
        "deferred",
        "backfill_tables",
        "backfill_passes",
        "progress",
    ];
    let mut found = Vec::new();
    for p in &files {
        if p.starts_with(root.join("state")) {
            continue;
        }
        let text = code(&std::fs::read_to_string(p).expect("readable source"));
        for t in tables {
            let call = format!("table(\"{t}\")");
            if text.contains(&call) {
                found.push(format!("{}: {call}", p.display()));
            }
            // A statement spelling the schema itself: `FROM {s}.ledger`, `INTO {}.deferred`...
            let spelled = regex::Regex::new(&format!(
                r"(?i)\b(FROM|INTO|UPDATE|JOIN|TABLE|TRUNCATE|USING)\s+\{{[a-z_]*\}}\.{t}\b"
            ))
            .expect("valid pattern");
            if let Some(m) = spelled.find(&text) {
                found.push(format!("{}: {}", p.display(), m.as_str()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "SQL on state tables outside src/state/: {found:#?}"
    );
}
