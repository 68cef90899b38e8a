//! The loans data of the guarantor split, shared by `--bench mapping` and `--bench perf` (e):
//! the source table, the split target, the split mapping and the guarantor texts.

/// The source table.
pub const SOURCE_DDL: &str =
    "CREATE TABLE loans (id uuid PRIMARY KEY, amount numeric(12,2), guarantor text)";

/// The split target: loans plus guarantors (uuid key, an index on loan_id, a foreign key).
pub const SPLIT_DDL: &str = "CREATE TABLE loans (id uuid PRIMARY KEY, amount numeric(12,2));
    CREATE TABLE guarantors (id uuid PRIMARY KEY, loan_id uuid NOT NULL REFERENCES loans, position int NOT NULL,
                             name text NOT NULL, pledge boolean NOT NULL DEFAULT false);
    CREATE INDEX ON guarantors (loan_id);";

/// The `[[tables]]` entry splitting `guarantor` into `guarantors` rows.
pub const SPLIT_MAPPING: &str = "[[tables]]\nsource = \"public.loans\"\n[tables.columns]\nguarantor = \"drop\"\n\
    [[tables.split]]\ntarget = \"public.guarantors\"\ncolumn = \"guarantor\"\n\
    protected = [\"& Co.\", \"Inc.\", \"LLC\", \"L.P.\"]\n\
    [tables.split.annotations]\npledge = \"(Pledge)\"\n\
    [tables.split.columns]\nid = \"child_id\"\nloan_id = \"parent.id\"\nposition = \"position\"\nname = \"name\"\npledge = \"pledge\"\n";

/// SQL for a guarantor text in one of the five styles of the loans data, with a per-row suffix
/// (`g` is the row number).
pub const TEXT: &str = "CASE g % 5
    WHEN 0 THEN 'Meridian Capital Advisors ' || g
    WHEN 1 THEN 'Oakridge Asset Holdings, Zenith Equity Management, Atlas Property Holdings ' || g
    WHEN 2 THEN 'Redwood Holdings & Co. & NorthStar Investment Trust ' || g
    WHEN 3 THEN '(a) Fortress Capital Advisors (b) Endeavor Capital Ventures (c) John Doe ' || g
    ELSE 'Atlas Property Holdings; BlueRock Investment Solutions ' || g || ' (Pledge)' END";
