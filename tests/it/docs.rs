//! The operator docs agree with the code: the configuration reference lists exactly the keys the
//! config parser accepts, every command's `--help` shows examples, and the exit codes are
//! documented where users look.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The keys the config parser accepts at the place `probe` (a TOML snippet with an unknown
/// key `__probe__`) puts it, from its "unknown field" error: the derive's own field list.
fn accepted(probe: &str) -> BTreeSet<String> {
    let url = "url = \"postgresql://a@b/c\"";
    let text = match probe {
        // Inside the required sections, beside their url.
        "[source]" | "[target]" => format!(
            "[source]\n{url}\n{}[target]\n{url}\n{}",
            if probe == "[source]" {
                "__probe__ = 1\n"
            } else {
                ""
            },
            if probe == "[target]" {
                "__probe__ = 1\n"
            } else {
                ""
            },
        ),
        // At the top, before any section.
        p if p.starts_with("__probe__") => format!("{p}\n[source]\n{url}\n[target]\n{url}\n"),
        p => format!("[source]\n{url}\n[target]\n{url}\n{p}"),
    };
    let err = match remodel::config::Config::from_toml(&text) {
        Ok(_) => panic!("the probe was accepted:\n{text}"),
        Err(e) => e.to_string(),
    };
    let list = err
        .split_once("unknown field `__probe__`, expected ")
        .unwrap_or_else(|| panic!("not an unknown-field error: {err}"))
        .1;
    let list = list.split(" for key").next().unwrap_or(list);
    list.split('`')
        .skip(1)
        .step_by(2)
        .map(String::from)
        .collect()
}

/// `section.key` names in the first column of docs/configuration.md's tables.
fn documented() -> BTreeSet<String> {
    read("docs/configuration.md")
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(k, _)| k.to_string()))
        .collect()
}

#[test]
fn configuration_reference_lists_exactly_the_keys_the_parser_accepts() {
    let mut code = BTreeSet::new();
    let sections = accepted("__probe__ = 1");
    assert!(
        sections.contains("verify") && sections.contains("tables"),
        "{sections:?}"
    );
    for section in &sections {
        let keys = match section.as_str() {
            "tables" => accepted("[[tables]]\nsource = \"a\"\n__probe__ = 1"),
            "source" | "target" => accepted(&format!("[{section}]")),
            s => accepted(&format!("[{s}]\n__probe__ = 1")),
        };
        for k in keys {
            code.insert(format!("{section}.{k}"));
        }
    }
    for k in accepted("[[tables]]\nsource = \"a\"\n[[tables.split]]\n__probe__ = 1") {
        code.insert(format!("tables.split.{k}"));
    }
    let docs = documented();
    let undocumented: Vec<_> = code.difference(&docs).collect();
    let unknown: Vec<_> = docs.difference(&code).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "docs/configuration.md is out of date:\n  accepted but not documented: {undocumented:?}\n  \
         documented but not accepted: {unknown:?}"
    );
    assert!(code.len() > 40, "{code:?}");
}

#[test]
fn every_command_has_help_with_examples() {
    let help = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_remodel"))
            .args(args)
            .output()
            .expect("run remodel");
        assert!(out.status.success(), "{args:?}");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let top = help(&["--help"]);
    assert!(top.contains("Exit codes:"), "{top}");
    let commands: Vec<String> = top
        .split("Commands:")
        .nth(1)
        .expect("a Commands: section")
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .filter(|c| c != "help")
        .collect();
    for must in [
        "run",
        "backfill",
        "status",
        "check",
        "dead-letters",
        "verify",
        "pause",
        "resume",
        "demo",
        "cutover",
        "fallback",
        "complete",
    ] {
        assert!(
            commands.iter().any(|c| c == must),
            "{must} missing from:\n{top}"
        );
    }
    for cmd in &commands {
        let text = help(&[cmd, "--help"]);
        let examples = text
            .split("Examples:")
            .nth(1)
            .unwrap_or_else(|| panic!("`remodel {cmd} --help` has no examples:\n{text}"));
        assert!(
            examples.contains(&format!("remodel {cmd}")),
            "`remodel {cmd} --help` examples do not run {cmd}:\n{text}"
        );
    }
}

#[test]
fn exit_codes_are_documented_for_every_command() {
    let ops = read("docs/operations.md");
    let section = ops
        .split("## Exit codes")
        .nth(1)
        .expect("an Exit codes section in docs/operations.md");
    for cmd in [
        "run",
        "verify",
        "check",
        "status",
        "dead-letters",
        "pause",
        "demo",
        "cutover",
        "fallback",
        "complete",
    ] {
        assert!(section.contains(&format!("`{cmd}`")), "exit codes of {cmd}");
    }
    assert!(read("README.md").contains("exit 0 clean, 1 rows differ"));
}
