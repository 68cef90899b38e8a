use super::*;
use proptest::prelude::*;

fn with(f: impl FnOnce(&mut SplitSpec)) -> Splitter {
    let mut spec = SplitSpec::default();
    f(&mut spec);
    Splitter::new(&spec).unwrap()
}

fn splitter() -> Splitter {
    with(|_| {})
}

fn pledge() -> Splitter {
    with(|s| drop(s.annotations.insert("pledge".into(), "(Pledge)".into())))
}

fn names(sp: &Splitter, s: &str) -> Vec<String> {
    sp.split(Some(s)).into_iter().map(|p| p.name).collect()
}

/// Asserts the complete parts of `input`: names, positions 1.., normalized and annotations
/// (given as one '0'/'1' per annotation name).
fn check(sp: &Splitter, input: &str, expected: &[(&str, &str)]) {
    let want: Vec<Part> = (expected.iter().enumerate())
        .map(|(i, (name, flags))| Part {
            position: i + 1,
            name: name.to_string(),
            normalized: name.to_lowercase(),
            annotations: flags.chars().map(|f| f == '1').collect(),
        })
        .collect();
    assert_eq!(sp.split(Some(input)), want, "{input:?}");
}

/// Default spec: input → expected names joined by " | " (positions 1..=n, no annotations).
const CASES: &[(&str, &str)] = &[
    ("Meridian Capital Advisors", "Meridian Capital Advisors"),
    (
        "Oakridge Asset Holdings, Zenith Equity Management, Atlas Property Holdings",
        "Oakridge Asset Holdings | Zenith Equity Management | Atlas Property Holdings",
    ),
    (
        "Redwood Holdings & Co. & NorthStar Investment Trust",
        "Redwood Holdings & Co. | NorthStar Investment Trust",
    ),
    (
        "(a) Fortress Capital Advisors (b) Endeavor Capital Ventures (c) John Doe",
        "Fortress Capital Advisors | Endeavor Capital Ventures | John Doe",
    ),
    (
        "1. Alpha Partners 2. Beta Fund",
        "Alpha Partners | Beta Fund",
    ),
    ("1) Alpha 2) Beta", "Alpha | Beta"),
    ("a) X b) Y", "X | Y"),
    ("(i) X (ii) Y", "X | Y"),
    (
        "Smith Holdings Inc., Jones LLC and Brown L.P.",
        "Smith Holdings Inc. | Jones LLC | Brown L.P.",
    ),
    ("", ""),
    ("   ", ""),
    (", ;", ""),
    (" & ; . : ,", ""),
    ("  Foo   Bar ,  Baz  ", "Foo Bar | Baz"),
    ("Foo\t\n Bar;\r\nBaz\u{a0}Qux", "Foo Bar | Baz Qux"),
    ("Jones\tand\nBrown & \t Co.", "Jones | Brown & Co."),
    ("Brandon AND Sandy", "Brandon | Sandy"),
    ("Smith & Sons & Jones", "Smith & Sons | Jones"),
    ("Smith & Sonsbury", "Smith | Sonsbury"),
    ("(1) X (2) Y (XIV) Z", "X | Y | Z"),
    ("X,(b) Y", "X | Y"),
    ("Alpha 1.5 F; G A1) B", "Alpha 1.5 F | G A1) B"),
    ("F (xxi) B; F (1234) C", "F (xxi) B | F (1234) C"),
    ("Fund a. Beta; X (a)", "Fund a. Beta | X (a)"),
    ("Alpha.; :Beta: ,.Gamma..", "Alpha | Beta | Gamma"),
    ("Foo Inc.. , Bar L.P.:", "Foo Inc. | Bar L.P."),
    ("Taco., Foo Ltd.", "Taco | Foo Ltd."),
    ("1. Alpha Partners. 2. Beta", "Alpha Partners | Beta"),
    ("Foo, Bar, FOO, foo", "Foo | Bar"),
];

/// Non-ASCII case folding where lowercase changes byte lengths (K → k, ẞ → ß).
const UNICODE: &str = "Müller & Co. \u{212A}G; ẞ Holdings (PLEDGE), Straße Inc.";

#[test]
fn default_spec_cases() {
    let sp = splitter();
    for (input, want) in CASES {
        let names = want.split(" | ").filter(|n| !n.is_empty());
        check(&sp, input, &names.map(|n| (n, "")).collect::<Vec<_>>());
    }
    assert_eq!(sp.split(None), vec![]);
    assert_eq!(sp.annotation_names(), [] as [String; 0]);
}

#[test]
fn annotations_and_dedupe() {
    let sp = pledge();
    assert_eq!(sp.annotation_names(), ["pledge"]);
    let input = "Atlas Property Holdings; BlueRock Investment Solutions (Pledge)";
    check(
        &sp,
        input,
        &[
            ("Atlas Property Holdings", "0"),
            ("BlueRock Investment Solutions", "1"),
        ],
    );
    // A marker-only item is empty, so it is dropped together with its annotation.
    let input = "A (pledge) B, (PLEDGE); C(Pledge)D";
    check(&sp, input, &[("A B", "1"), ("C D", "1")]);
    // Dedupe keeps the first position and ORs the duplicates' annotations into it.
    let input = "Foo, Bar, FOO (Pledge), foo";
    check(&sp, input, &[("Foo", "1"), ("Bar", "0")]);
    let sp = with(|s| {
        s.dedupe = false;
        s.annotations.insert("pledge".into(), "(Pledge)".into());
    });
    check(
        &sp,
        input,
        &[("Foo", "0"), ("Bar", "0"), ("FOO", "1"), ("foo", "0")],
    );
}

#[test]
fn markers_and_protected_phrases_are_never_split() {
    let sp = with(|s| {
        s.annotations
            .insert("joint".into(), "(Joint & Several)".into());
        s.annotations.insert("cap".into(), "capped".into());
    });
    assert_eq!(sp.annotation_names(), ["cap", "joint"]);
    let input = "A (joint  &  several), B capped; Cappedale";
    check(&sp, input, &[("A", "01"), ("B", "10"), ("Cappedale", "00")]);
    let sp = with(|s| s.protected.push("(II)".into()));
    assert_eq!(names(&sp, "Fund (ii) LLC (iii) Z"), ["Fund (ii) LLC", "Z"]);
    let sp = with(|s| s.enumerators = false);
    assert_eq!(names(&sp, "1) A 2) B"), ["1) A 2) B"]);
    // A separator inside protected phrases ("." in "Inc.", "L.P.") is fine.
    let sp = with(|s| s.separators = vec![".".into(), ",".into(), ",".into()]);
    let want = ["Foo Inc. Bar", "Baz L.P.", "Qux"];
    assert_eq!(names(&sp, "Foo Inc. Bar. Baz L.P., Qux"), want);
    let sp = with(|s| s.separators.clear());
    assert_eq!(names(&sp, "A, B 2) C"), ["A, B", "C"]);
}

#[test]
fn unicode_case_folding_changes_byte_lengths() {
    let sp = with(|s| {
        s.protected.push("& Co. KG".into());
        s.annotations.insert("pledge".into(), "(Pledge)".into());
    });
    let expected = [
        ("Müller & Co. \u{212A}G", "0"),
        ("ẞ Holdings", "1"),
        ("Straße Inc.", "0"),
    ];
    check(&sp, UNICODE, &expected);
    assert_eq!(sp.split(Some(UNICODE))[1].normalized, "ß holdings");
    let sp = with(|s| s.separators = vec![" UND ".into()]);
    let want = ["MÜLLER", "SÖHNE", "İstanbul"];
    assert_eq!(names(&sp, "MÜLLER und SÖHNE Und İstanbul"), want);
}

#[test]
fn deterministic_and_idempotent() {
    let sp = pledge();
    for input in CASES.iter().map(|c| c.0).chain([UNICODE]) {
        let first = sp.split(Some(input));
        assert_eq!(first, sp.split(Some(input)), "{input}");
        let joined: Vec<&str> = first.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names(&sp, &joined.join(", ")), joined, "{input}");
    }
}

#[test]
fn long_inputs() {
    let sp = splitter();
    let input: String = (0..60_000).map(|i| format!("N{}, ", i % 40_000)).collect();
    let parts = sp.split(Some(&input));
    assert_eq!(parts.len(), 40_000);
    assert!(parts.iter().enumerate().all(|(i, p)| p.position == i + 1));
    assert_eq!(parts[39_999].name, "N39999");
    assert_eq!(sp.split(Some(&"x".repeat(1 << 20))).len(), 1);
    assert_eq!(sp.split(Some(&"(".repeat(100_000))).len(), 1);
    assert_eq!(sp.split(Some(&"1. ".repeat(100_000))).len(), 0);
}

#[test]
fn spec_errors() {
    let err = |f: fn(&mut SplitSpec)| {
        let mut spec = SplitSpec::default();
        f(&mut spec);
        Splitter::new(&spec).unwrap_err()
    };
    use SplitSpecError as E;
    let (index, separator) = (0, " \t".to_string());
    let e = err(|s| s.separators.insert(0, " \t".into()));
    assert_eq!(e, E::WhitespaceSeparator { index, separator });
    let e = err(|s| s.separators.push(String::new()));
    assert_eq!(e, E::EmptySeparator { index: 4 });
    assert_eq!(e.to_string(), "separators[4] is empty");
    let e = err(|s| s.protected.push("  ".into()));
    assert_eq!(e, E::EmptyProtected { index: 7 });
    let e = err(|s| drop(s.annotations.insert(" ".into(), "x".into())));
    assert_eq!(e, E::EmptyAnnotationName);
    let name = "pledge".to_string();
    let e = err(|s| drop(s.annotations.insert("pledge".into(), "  ".into())));
    assert_eq!(e, E::EmptyMarker { name });
    let e = err(|s| {
        s.annotations.insert("a".into(), "(Pledge)".into());
        s.annotations.insert("b".into(), "(PLEDGE)".into());
    });
    assert!(matches!(e, E::DuplicateMarker { .. }));
    let msg = r#"annotations "a" and "b" use the same marker "(PLEDGE)""#;
    assert_eq!(e.to_string(), msg);
}

#[test]
fn spec_deserializes_with_defaults_and_denies_unknown_fields() {
    use serde::de::value::{Error, MapDeserializer};
    let de = MapDeserializer::<_, Error>::new(vec![("dedupe", false)].into_iter());
    let spec: SplitSpec = serde::Deserialize::deserialize(de).unwrap();
    assert!(!spec.dedupe);
    assert_eq!(
        SplitSpec {
            dedupe: true,
            ..spec
        },
        SplitSpec::default()
    );
    let de = MapDeserializer::<_, Error>::new(vec![("separator", false)].into_iter());
    let unknown: Result<SplitSpec, Error> = serde::Deserialize::deserialize(de);
    assert!(unknown.is_err());
}

fn check_invariants(sp: &Splitter, input: &str) -> Result<(), TestCaseError> {
    let parts = sp.split(Some(input));
    for (i, p) in parts.iter().enumerate() {
        prop_assert_eq!(p.position, i + 1);
        prop_assert!(!p.name.is_empty() && !p.name.contains("  "));
        prop_assert_eq!(p.name.trim(), p.name.as_str());
        prop_assert!(!p.name.chars().any(|c| c.is_whitespace() && c != ' '));
        prop_assert_eq!(&p.normalized, &p.name.to_lowercase());
        prop_assert_eq!(p.annotations.len(), sp.annotation_names().len());
        prop_assert!(parts[..i].iter().all(|q| q.normalized != p.normalized));
    }
    prop_assert_eq!(parts, sp.split(Some(input)));
    Ok(())
}

proptest! {
    /// Arbitrary Unicode, and strings dense in separators, enumerators, protected phrases,
    /// markers and chars whose lowercase differs in byte length.
    #[test]
    fn strings_never_panic(input in prop_oneof![
        any::<String>(),
        "([a-cA-CiIvVxX0-9 ().,;&:\t\nİẞßK\u{212A}\u{a0}]|and|AND|Inc\\.|L\\.P\\.|& Co\\.|\\(Pledge\\)){0,40}",
    ]) {
        check_invariants(&splitter(), &input)?;
        check_invariants(&pledge(), &input)?;
    }

    #[test]
    fn plain_lists_are_idempotent(
        items in prop::collection::vec(("[A-Za-z]{1,6}( [A-Za-z]{1,6}){0,2}", 0..4usize), 0..8)
    ) {
        let sp = splitter();
        let seps = [", ", "; ", " & ", " and "];
        let input: String = items.iter().map(|(w, s)| format!("{w}{}", seps[*s])).collect();
        let first = names(&sp, &input);
        prop_assert_eq!(names(&sp, &first.join(", ")), first);
    }
}
