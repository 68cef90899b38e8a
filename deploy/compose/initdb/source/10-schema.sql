-- Source (old model) for the guarantor demo: run once by the postgres image's entrypoint, as the
-- superuser, in database app. See config/examples/guarantors.toml for the mapping.

CREATE TABLE public.loans (
    id        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    amount    numeric(12,2),
    guarantor text
);

-- Rows that exist before remodel's slot: backfill copies them.
INSERT INTO public.loans (amount, guarantor) VALUES
    (250000.00, 'Redwood Holdings & Co. & NorthStar Investment Trust'),
    (120000.00, '(a) Fortress Capital Advisors (b) John Doe'),
    ( 90000.00, 'Atlas Property Holdings; BlueRock Investment Solutions (Pledge)'),
    ( 15000.00, NULL);

-- CREATE PUBLICATION ... FOR TABLE needs ownership of the tables, so the superuser creates it
-- here and remodel (source.publication = "remodel") finds and reuses it. remodel creates its
-- replication slot itself, which the REPLICATION attribute allows.
CREATE PUBLICATION remodel FOR TABLE public.loans;
