//! What a verification found: per output (source table → target table) counts, the first
//! differing keys with a column-level diff, and why it could not finish if it could not.
//! Printed as a table for people or JSON for machines; the exit code comes from here.

use serde::Serialize;

/// One differing row.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Diff {
    /// The source key, as `(v1, v2)`.
    pub key: String,
    /// The target row's key, as `(v1, v2)`.
    pub target_key: String,
    /// `changed`, `missing` (on the target) or `extra` (on the target).
    pub kind: &'static str,
    pub columns: Vec<ColumnDiff>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ColumnDiff {
    pub column: String,
    /// transform(source); `None` is NULL (or no row).
    pub expected: Option<String>,
    /// What the target holds; `None` is NULL (or no row).
    pub actual: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TableReport {
    pub source: String,
    pub target: String,
    /// `row`, `merge` or `split`.
    pub kind: &'static str,
    /// Expected target rows compared (for hashed chunks: rows in chunks whose hashes matched).
    pub compared: u64,
    /// Rows the target holds with other values.
    pub mismatched: u64,
    pub missing: u64,
    pub extra: u64,
    /// Rows still changing after every re-check round (not a mismatch; not verified).
    pub unsettled: u64,
    /// Rows backfill has not copied yet (not a mismatch; not verified).
    pub pending_backfill: u64,
    /// Differing rows rewritten by `--repair` and found equal afterwards.
    pub repaired: u64,
    /// Chunks settled by comparing hashes inside both databases.
    pub hashed_chunks: u64,
    /// Why some check was not made (e.g. extra rows cannot be found for a computed key).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The first differing rows (up to `--show`).
    pub diffs: Vec<Diff>,
}

impl TableReport {
    pub fn differing(&self) -> u64 {
        self.mismatched + self.missing + self.extra
    }

    /// Differing rows not repaired.
    pub fn outstanding(&self) -> u64 {
        self.differing().saturating_sub(self.repaired)
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// target = transform(source) for every row compared.
    Clean,
    /// Rows differ (exit code 1).
    Mismatch,
    /// Could not verify everything (exit code 2); see `incomplete`.
    Incomplete,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub outcome: Outcome,
    /// `full`, `sample`, `since`.
    pub mode: String,
    pub tables: Vec<TableReport>,
    /// Re-check rounds run for rows that changed during verification.
    pub rounds: u32,
    pub seconds: f64,
    /// Why verification is incomplete.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub incomplete: Vec<String>,
}

impl Report {
    pub fn new(mode: &str, tables: Vec<TableReport>, rounds: u32, seconds: f64) -> Report {
        let mut incomplete = Vec::new();
        for t in &tables {
            if t.unsettled > 0 {
                incomplete.push(format!(
                    "{} → {}: {} row(s) changed in every re-check round; run verify again at a quieter time, or raise verify.rounds",
                    t.source, t.target, t.unsettled
                ));
            }
            if t.pending_backfill > 0 {
                incomplete.push(format!(
                    "{} → {}: {} row(s) not copied by backfill yet; verify again once `remodel status` shows backfill done",
                    t.source, t.target, t.pending_backfill
                ));
            }
        }
        let outcome = if tables.iter().any(|t| t.outstanding() > 0) {
            Outcome::Mismatch
        } else if !incomplete.is_empty() {
            Outcome::Incomplete
        } else {
            Outcome::Clean
        };
        Report {
            outcome,
            mode: mode.to_string(),
            tables,
            rounds,
            seconds,
            incomplete,
        }
    }

    /// 0 clean, 1 mismatches, 2 could not verify.
    pub fn exit_code(&self) -> u8 {
        match self.outcome {
            Outcome::Clean => 0,
            Outcome::Mismatch => 1,
            Outcome::Incomplete => 2,
        }
    }

    pub fn compared(&self) -> u64 {
        self.tables.iter().map(|t| t.compared).sum()
    }

    /// The report for people: one line per output, then the differing keys.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let head = [
            "source → target",
            "kind",
            "compared",
            "mismatched",
            "missing",
            "extra",
            "repaired",
        ];
        let rows: Vec<[String; 7]> = self
            .tables
            .iter()
            .map(|t| {
                [
                    format!("{} → {}", t.source, t.target),
                    t.kind.to_string(),
                    t.compared.to_string(),
                    t.mismatched.to_string(),
                    t.missing.to_string(),
                    t.extra.to_string(),
                    t.repaired.to_string(),
                ]
            })
            .collect();
        let mut width = head.map(|h| h.chars().count());
        for r in &rows {
            for (w, c) in width.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut l = String::new();
            for (i, (c, w)) in cells.iter().zip(width).enumerate() {
                if i == 0 {
                    l.push_str(&format!("{c:<w$}"));
                } else {
                    l.push_str(&format!("  {c:>w$}"));
                }
            }
            l.trim_end().to_string() + "\n"
        };
        out.push_str(&line(&head.map(String::from)));
        for r in &rows {
            out.push_str(&line(r));
        }
        for t in &self.tables {
            for n in &t.notes {
                out.push_str(&format!("note: {} → {}: {n}\n", t.source, t.target));
            }
            if t.diffs.is_empty() {
                continue;
            }
            out.push_str(&format!(
                "\n{} → {}: first {} of {} differing row(s)\n",
                t.source,
                t.target,
                t.diffs.len(),
                t.differing()
            ));
            for d in &t.diffs {
                out.push_str(&format!(
                    "  {} source key {} (target key {})\n",
                    d.kind, d.key, d.target_key
                ));
                for c in &d.columns {
                    out.push_str(&format!(
                        "      {}: expected {}, target has {}\n",
                        c.column,
                        show(&c.expected),
                        show(&c.actual)
                    ));
                }
            }
        }
        for why in &self.incomplete {
            out.push_str(&format!("incomplete: {why}\n"));
        }
        out.push_str(&format!(
            "{}: {} row(s) compared in {:.1}s ({} re-check round(s))\n",
            match self.outcome {
                Outcome::Clean => "clean",
                Outcome::Mismatch => "MISMATCH",
                Outcome::Incomplete => "could not verify everything",
            },
            self.compared(),
            self.seconds,
            self.rounds
        ));
        out
    }
}

fn show(v: &Option<String>) -> String {
    match v {
        Some(s) => format!("{s:?}"),
        None => "NULL".into(),
    }
}

/// The column-level diff of an expected and an actual row (`None` = no row).
pub fn diff_columns(
    names: &[String],
    expected: Option<&[Option<String>]>,
    actual: Option<&[Option<String>]>,
) -> Vec<ColumnDiff> {
    names
        .iter()
        .enumerate()
        .filter_map(|(i, n)| {
            let e = expected.and_then(|r| r.get(i).cloned().flatten());
            let a = actual.and_then(|r| r.get(i).cloned().flatten());
            let both = expected.is_some() && actual.is_some();
            (!both || e != a).then(|| ColumnDiff {
                column: n.clone(),
                expected: e,
                actual: a,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(mismatched: u64, unsettled: u64) -> TableReport {
        TableReport {
            source: "public.loans".into(),
            target: "public.loans".into(),
            kind: "row",
            compared: 10,
            mismatched,
            unsettled,
            ..Default::default()
        }
    }

    #[test]
    fn outcome_and_exit_code_follow_the_counts() {
        assert_eq!(
            Report::new("full", vec![table(0, 0)], 0, 0.0).exit_code(),
            0
        );
        assert_eq!(
            Report::new("full", vec![table(1, 0)], 0, 0.0).exit_code(),
            1
        );
        let r = Report::new("full", vec![table(0, 3)], 5, 0.0);
        assert_eq!(r.exit_code(), 2);
        assert!(r.incomplete[0].contains("3 row(s) changed"), "{r:?}");
        // Mismatches win over incompleteness: something is known to be wrong.
        assert_eq!(
            Report::new("full", vec![table(1, 3)], 5, 0.0).exit_code(),
            1
        );
    }

    #[test]
    fn column_diff_lists_only_differing_columns_of_a_changed_row() {
        let names = vec!["id".to_string(), "name".to_string(), "amount".to_string()];
        let e = [Some("1".into()), Some("a".into()), Some("5".into())];
        let a = [Some("1".into()), Some("b".into()), Some("5".into())];
        let d = diff_columns(&names, Some(&e), Some(&a));
        assert_eq!(
            d,
            vec![ColumnDiff {
                column: "name".into(),
                expected: Some("a".into()),
                actual: Some("b".into())
            }]
        );
        // A missing row shows every expected column.
        assert_eq!(diff_columns(&names, Some(&e), None).len(), 3);
    }

    #[test]
    fn render_names_the_key_and_columns() {
        let mut t = table(1, 0);
        t.diffs.push(Diff {
            key: "(7)".into(),
            target_key: "(7)".into(),
            kind: "changed",
            columns: vec![ColumnDiff {
                column: "amount".into(),
                expected: Some("5".into()),
                actual: None,
            }],
        });
        let text = Report::new("full", vec![t], 0, 1.0).render();
        assert!(text.contains("changed source key (7)"), "{text}");
        assert!(
            text.contains("amount: expected \"5\", target has NULL"),
            "{text}"
        );
        assert!(text.contains("MISMATCH"), "{text}");
    }
}
