-- Target (new model) for the guarantor demo: run once by the postgres image's entrypoint, as the
-- superuser, in database app_v2. remodel never creates or alters these tables; it creates only
-- its own state schema (target.state_schema = "remodel").

CREATE TABLE public.loans (
    id     uuid PRIMARY KEY,
    amount numeric(12,2)
);

CREATE TABLE public.guarantors (
    id       uuid PRIMARY KEY,
    loan_id  uuid NOT NULL REFERENCES public.loans,
    position int NOT NULL,
    name     text NOT NULL,
    pledge   boolean NOT NULL DEFAULT false
);

-- A loan's guarantors are found (and replaced as a set) by it.
CREATE INDEX guarantors_loan_id_idx ON public.guarantors (loan_id);
