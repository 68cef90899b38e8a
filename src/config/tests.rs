use super::*;

const MIN: &str = r#"
    [source]
    url = "postgresql://u:secret@localhost:5432/src"
    [target]
    url = "postgresql://u@localhost:5433/dst"
"#;

#[test]
fn minimal_config_gets_defaults() {
    let c = Config::from_toml(MIN).unwrap();
    assert_eq!(c.source.slot, "remodel");
    assert_eq!(c.target.state_schema, "remodel");
    assert_eq!(c.metrics.listen, "127.0.0.1:9898");
    assert!(c.tables.is_empty());
}

#[test]
fn parses_durations_and_sizes() {
    assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
    assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(parse_duration("2"), Some(Duration::from_secs(2)));
    assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
    assert_eq!(parse_duration("5 parsecs"), None);
    assert_eq!(parse_bytes("64MB"), Some(64 << 20));
    assert_eq!(parse_bytes("512kB"), Some(512 << 10));
    assert_eq!(parse_bytes("12"), Some(12));
    assert_eq!(parse_bytes("1TB"), None);
    let e = Config::from_toml(&format!("{MIN}\n[backfill]\nmax_snapshot_age = \"soon\"\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("backfill.max_snapshot_age"), "{e}");
}

#[test]
fn unknown_keys_are_errors() {
    let e = Config::from_toml(&format!("{MIN}\n[apply]\nbatch_rowz = 3\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("batch_rowz"), "{e}");
}

#[test]
fn bad_values_name_key_and_never_the_password() {
    let e = Config::from_toml(&MIN.replace("5433/dst", "5433/dst?sslmode=sure"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("target.url") && e.contains("sslmode"), "{e}");
    let e = Config::from_toml(&MIN.replace("localhost:5432", "localhost:99999"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("source.url") && !e.contains("secret"), "{e}");
    let e = Config::from_toml(&format!("{MIN}\n[metrics]\nlisten = \"nope\"\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("metrics.listen"), "{e}");
}
