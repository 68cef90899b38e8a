//! The demo's data: the guarantor scenario of the README. The source schema with a free-text
//! `loans.guarantor` column, the target schema of `config/examples/guarantors.toml`, a SQL
//! function that writes messy guarantor text the way people type it, the initial load, and
//! one live-writer transaction.
//!
//! Owns only SQL text. Must never run anything itself.

/// The mapping the demo runs: the shipped example, with URLs and listen address set by the demo.
pub const MAPPING: &str = include_str!("../../config/examples/guarantors.toml");

/// Source schema, and `demo_guarantor()`: one messy guarantor text per call (volatile: a new one
/// per row). Names carry the protected suffixes (`& Co.`, `Inc.`, `L.P.` …), lists use every
/// separator and enumerator style the mapping handles, with stray spaces, `(Pledge)`
/// annotations, repeated names, empty strings and NULLs.
pub const SOURCE_SCHEMA: &str = r#"
CREATE TABLE loans (id uuid PRIMARY KEY, amount numeric(12,2), guarantor text);
CREATE FUNCTION demo_guarantor() RETURNS text LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  names text[] := ARRAY['Oakridge Asset Holdings', 'Zenith Equity Management',
    'Redwood Holdings & Co.', 'NorthStar Investment Trust', 'Fortress Capital Advisors',
    'John Doe', 'Atlas Property Holdings', 'BlueRock Investment Solutions', 'Smith & Sons',
    'Jones LLC', 'Brown L.P.', 'Maple Leaf Ltd.', 'Greenfield Partners Inc.',
    'Mary-Ann O''Neil', 'José Álvarez', 'Harbor Point Capital', 'Summit Ridge Trust',
    'Kowalski Brothers'];
  n int := 1 + floor(random() * 4)::int;
  picked text[] := '{}';
  style int := floor(random() * 7)::int;
  out text := '';
  i int;
BEGIN
  IF random() < 0.04 THEN RETURN NULL; END IF;
  IF random() < 0.01 THEN RETURN ''; END IF;
  IF random() < 0.35 THEN n := 1; END IF;
  FOR i IN 1..n LOOP
    picked := picked || names[1 + floor(random() * array_length(names, 1))::int];
  END LOOP;
  IF random() < 0.2 THEN
    picked[n] := picked[n] || ' (Pledge)';
  END IF;
  IF n = 1 THEN RETURN CASE WHEN random() < 0.1 THEN '  ' || picked[1] || ' ' ELSE picked[1] END; END IF;
  FOR i IN 1..n LOOP
    out := out || CASE style
      WHEN 0 THEN CASE WHEN i > 1 THEN ', ' ELSE '' END || picked[i]
      WHEN 1 THEN CASE WHEN i > 1 THEN '; ' ELSE '' END || picked[i]
      WHEN 2 THEN CASE WHEN i > 1 THEN ' & ' ELSE '' END || picked[i]
      WHEN 3 THEN CASE WHEN i > 1 THEN ' and ' ELSE '' END || picked[i]
      WHEN 4 THEN CASE WHEN i > 1 THEN ' ' ELSE '' END || '(' || chr(96 + i) || ') ' || picked[i]
      WHEN 5 THEN CASE WHEN i > 1 THEN ' ' ELSE '' END || i || '. ' || picked[i]
      ELSE CASE WHEN i > 1 THEN ' ,  ' ELSE '' END || picked[i]
    END;
  END LOOP;
  RETURN out;
END $$;"#;

/// The target schema the example mapping writes (see the example's header).
pub const TARGET_SCHEMA: &str = "
CREATE TABLE loans (id uuid PRIMARY KEY, amount numeric(12,2));
CREATE TABLE guarantors (id uuid PRIMARY KEY, loan_id uuid NOT NULL REFERENCES loans,
                         position int NOT NULL, name text NOT NULL,
                         pledge boolean NOT NULL DEFAULT false);
CREATE INDEX ON guarantors (loan_id);
-- The switch-over writes NEW's guarantor changes back as text: deletes must carry the row.
ALTER TABLE guarantors REPLICA IDENTITY FULL;";

/// Loan `g`'s id: stable, so the writer can address loans without reading them.
fn loan_id(g: &str) -> String {
    format!("md5('demo-loan-' || {g})::uuid")
}

/// Loans `from..=to` (repeatable: `setseed` first).
pub fn load(from: u64, to: u64) -> String {
    format!(
        "SELECT setseed(0.42);
         INSERT INTO loans (id, amount, guarantor)
         SELECT {}, round((500 + random() * 99500)::numeric, 2), demo_guarantor()
         FROM generate_series({from}, {to}) g;
         ANALYZE loans;",
        loan_id("g")
    )
}

/// One writer transaction: new loans, rewritten guarantor texts, changed amounts, deletions.
/// Loans are picked by number; a number whose loan is gone matches nothing.
pub struct Tick {
    pub insert_from: u64,
    pub inserts: u64,
    pub rewrite: Vec<u64>,
    pub amount: Vec<u64>,
    pub delete: Vec<u64>,
}

impl Tick {
    pub fn changes(&self) -> u64 {
        self.inserts + (self.rewrite.len() + self.amount.len() + self.delete.len()) as u64
    }

    pub fn sql(&self) -> String {
        let ids = |v: &[u64]| {
            let list: Vec<String> = v.iter().map(|n| n.to_string()).collect();
            format!(
                "SELECT {} FROM unnest('{{{}}}'::int8[]) g",
                loan_id("g"),
                list.join(",")
            )
        };
        let mut sql = String::from("BEGIN;\n");
        if self.inserts > 0 {
            sql.push_str(&format!(
                "INSERT INTO loans (id, amount, guarantor)
                 SELECT {}, round((500 + random() * 99500)::numeric, 2), demo_guarantor()
                 FROM generate_series({}, {}) g ON CONFLICT DO NOTHING;\n",
                loan_id("g"),
                self.insert_from,
                self.insert_from + self.inserts - 1
            ));
        }
        if !self.rewrite.is_empty() {
            sql.push_str(&format!(
                "UPDATE loans SET guarantor = demo_guarantor() WHERE id IN ({});\n",
                ids(&self.rewrite)
            ));
        }
        if !self.amount.is_empty() {
            sql.push_str(&format!(
                "UPDATE loans SET amount = amount + 1 WHERE id IN ({});\n",
                ids(&self.amount)
            ));
        }
        if !self.delete.is_empty() {
            sql.push_str(&format!(
                "DELETE FROM loans WHERE id IN ({});\n",
                ids(&self.delete)
            ));
        }
        sql.push_str("COMMIT;");
        sql
    }
}

/// Loans worth showing before and after: one per text style the mapping untangles.
pub const SAMPLES: &[(&str, &str)] = &[
    (
        "protected \"& Co.\" among \"&\" separators",
        "guarantor LIKE '%& Co. & %'",
    ),
    ("enumerated (a) (b)", "guarantor LIKE '(a) %(b) %'"),
    (
        "numbered with a pledge",
        "guarantor LIKE '1. %2. %(Pledge)'",
    ),
    ("stray separators and spaces", "guarantor LIKE '% ,  %'"),
];
