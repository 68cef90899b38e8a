//! The function table of the expression language (names, arities, usage lines, what is refused
//! as non-deterministic) and the type checking of each call: what [`super::Checker`] does for
//! `name(args)`.

use super::*;

pub(super) const NONDETERMINISTIC: &[&str] = &[
    "now",
    "current_timestamp",
    "current_date",
    "current_time",
    "localtime",
    "localtimestamp",
    "clock_timestamp",
    "statement_timestamp",
    "transaction_timestamp",
    "timeofday",
    "random",
    "random_normal",
    "setseed",
    "gen_random_uuid",
    "uuid_generate_v1",
    "uuid_generate_v1mc",
    "uuid_generate_v4",
    "nextval",
    "currval",
    "lastval",
    "setval",
    "txid_current",
    "pg_current_xact_id",
    "pg_backend_pid",
    "current_user",
    "session_user",
    "user",
];

pub(super) struct Sig {
    name: &'static str,
    min: usize,
    max: usize,
    usage: &'static str,
}

pub(super) const fn sig(name: &'static str, min: usize, max: usize, usage: &'static str) -> Sig {
    Sig {
        name,
        min,
        max,
        usage,
    }
}

pub(super) const FUNCS: &[Sig] = &[
    sig("lower", 1, 1, "lower(text)"),
    sig("upper", 1, 1, "upper(text)"),
    sig("trim", 1, 2, "trim(text[, characters])"),
    sig("ltrim", 1, 2, "ltrim(text[, characters])"),
    sig("rtrim", 1, 2, "rtrim(text[, characters])"),
    sig("length", 1, 1, "length(text)"),
    sig("substr", 2, 3, "substr(text, start[, count])"),
    sig("replace", 3, 3, "replace(text, from, to)"),
    sig("split_part", 3, 3, "split_part(text, delimiter, n)"),
    sig("concat", 1, usize::MAX, "concat(value, ...)"),
    sig("coalesce", 1, usize::MAX, "coalesce(value, ...)"),
    sig("nullif", 2, 2, "nullif(a, b)"),
    sig("if", 3, 3, "if(condition, then, else)"),
    sig("abs", 1, 1, "abs(number)"),
    sig("round", 1, 2, "round(number[, digits])"),
    sig(
        "regex_replace",
        3,
        3,
        "regex_replace(text, 'pattern', replacement)",
    ),
    sig(
        "regex_capture",
        3,
        3,
        "regex_capture(text, 'pattern', group)",
    ),
    sig("json_get", 2, 2, "json_get(json, '$.path')"),
    sig("date_part", 2, 2, "date_part('part', date_or_timestamp)"),
];

pub(super) const DATE_PARTS: &[(&str, DatePart)] = &[
    ("year", DatePart::Year),
    ("month", DatePart::Month),
    ("day", DatePart::Day),
    ("hour", DatePart::Hour),
    ("minute", DatePart::Minute),
    ("second", DatePart::Second),
    ("dow", DatePart::Dow),
    ("doy", DatePart::Doy),
    ("epoch", DatePart::Epoch),
];

pub(super) fn nondeterministic(name: &str) -> String {
    format!(
        "{name} is not allowed: expressions must be deterministic so that replays and backfills \
         produce identical rows (use a source column instead)"
    )
}

/// Edit distance counting a transposition of neighbours as one edit.
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

pub(super) fn closest<'x>(
    name: &str,
    candidates: impl IntoIterator<Item = &'x str>,
) -> Option<&'x str> {
    let n = name.to_lowercase();
    let limit = (n.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(&n, &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

impl Checker<'_, '_> {
    pub(super) fn regex(&mut self, p: &Ast, func: &str) -> CResult<Regex> {
        let AstKind::Str(pat) = &p.kind else {
            let msg = format!("the pattern of {func}() must be a string literal (patterns are compiled once, up front)");
            return Err((p.pos, msg));
        };
        Regex::new(pat).map_err(|e| {
            let (col, msg) = regex_error(&e);
            let at = if pat.contains('\n') { None } else { col };
            (
                at.map_or(p.pos, |c| self.lit_offset(p.pos, c)),
                format!("invalid regular expression: {msg}"),
            )
        })
    }

    pub(super) fn call(&mut self, name: &str, args: &[Ast], pos: usize) -> CResult<(Node, Type)> {
        let lname = name.to_ascii_lowercase();
        if NONDETERMINISTIC.contains(&lname.as_str()) {
            return Err((pos, nondeterministic(&format!("{name}()"))));
        }
        let Some(sig) = FUNCS.iter().find(|f| f.name == lname) else {
            let mut msg = format!("unknown function {name}()");
            match closest(&lname, FUNCS.iter().map(|f| f.name)) {
                Some(s) => msg.push_str(&format!("; did you mean {s}()?")),
                None => {
                    let all: Vec<&str> = FUNCS.iter().map(|f| f.name).collect();
                    msg.push_str(&format!("; available functions: {}", all.join(", ")));
                }
            }
            return Err((pos, msg));
        };
        if args.len() < sig.min || args.len() > sig.max {
            let want = match (sig.min, sig.max) {
                (a, b) if a == b => format!("{a} argument{}", if a == 1 { "" } else { "s" }),
                (a, usize::MAX) => {
                    format!("at least {a} argument{}", if a == 1 { "" } else { "s" })
                }
                (a, b) => format!("{a} or {b} arguments"),
            };
            return Err((
                pos,
                format!(
                    "{}() takes {want}, got {}: {}",
                    sig.name,
                    args.len(),
                    sig.usage
                ),
            ));
        }
        let b = Box::new;
        let f = sig.name;
        Ok(match (f, args) {
            ("lower", [e]) => (Node::Lower(self.text(e)?), Type::Text),
            ("upper", [e]) => (Node::Upper(self.text(e)?), Type::Text),
            ("trim" | "ltrim" | "rtrim", [e, rest @ ..]) => {
                let side = match f {
                    "ltrim" => Trim::Left,
                    "rtrim" => Trim::Right,
                    _ => Trim::Both,
                };
                let chars = match rest.first() {
                    Some(c) => Some(self.text(c)?),
                    None => None,
                };
                (
                    Node::Trim {
                        e: self.text(e)?,
                        chars,
                        side,
                    },
                    Type::Text,
                )
            }
            ("length", [e]) => (Node::Length(self.text(e)?), Type::Int),
            ("substr", [e, start, rest @ ..]) => {
                let (e, start) = (self.text(e)?, self.int(start, "the start of substr()")?);
                let len = match rest.first() {
                    Some(l) => Some(self.int(l, "the count of substr()")?),
                    None => None,
                };
                (
                    Node::Substr {
                        e,
                        start,
                        len,
                        at: pos,
                    },
                    Type::Text,
                )
            }
            ("replace", [e, from, to]) => (
                Node::Replace {
                    e: self.text(e)?,
                    from: self.text(from)?,
                    to: self.text(to)?,
                },
                Type::Text,
            ),
            ("split_part", [e, delim, n]) => {
                let (e, delim, n) = (
                    self.text(e)?,
                    self.text(delim)?,
                    self.int(n, "the field number of split_part()")?,
                );
                (
                    Node::SplitPart {
                        e,
                        delim,
                        n,
                        at: pos,
                    },
                    Type::Text,
                )
            }
            ("concat", args) => {
                let mut nodes = Vec::with_capacity(args.len());
                for a in args {
                    nodes.push(self.check(a)?.0);
                }
                (Node::ConcatAll(nodes), Type::Text)
            }
            ("coalesce", args) => {
                let refs: Vec<&Ast> = args.iter().collect();
                let (nodes, ty) = self.unify(&refs, "coalesce()")?;
                (Node::Coalesce(nodes), ty)
            }
            ("nullif", [x, y]) => {
                let (nodes, ty) = self.unify(&[x, y], "nullif()")?;
                let (x, y) = pair(nodes, pos)?;
                (Node::NullIf(b(x), b(y)), ty)
            }
            ("if", [c, x, y]) => {
                let c = self.boolean(c, "the condition of if()")?;
                let (nodes, ty) = self.unify(&[x, y], "if()")?;
                let (x, y) = pair(nodes, pos)?;
                (
                    Node::Case {
                        operand: None,
                        arms: vec![(c, x)],
                        otherwise: Some(b(y)),
                    },
                    ty,
                )
            }
            ("abs", [e]) => {
                let (n, t) = self.numeric(e, "abs()")?;
                (Node::Abs { e: b(n), at: pos }, t)
            }
            ("round", [e, rest @ ..]) => {
                let e = b(self.numeric(e, "round()")?.0);
                let digits = match rest.first() {
                    Some(d) => Some(self.int(d, "the digits of round()")?),
                    None => None,
                };
                (Node::Round { e, digits, at: pos }, Type::Numeric)
            }
            ("regex_replace", [e, p, r]) => {
                let (e, re) = (self.text(e)?, self.regex(p, f)?);
                let repl = match &r.kind {
                    AstKind::Str(lit) => Repl::Fixed(pg_replacement(lit)),
                    _ => Repl::Dynamic(self.text(r)?),
                };
                (Node::RegexReplace { e, re, repl }, Type::Text)
            }
            ("regex_capture", [e, p, g]) => {
                let (e, re) = (self.text(e)?, self.regex(p, f)?);
                let groups = re.captures_len() - 1;
                let group = match &g.kind {
                    AstKind::Num(n) => n.parse::<usize>().ok().filter(|n| *n <= groups),
                    _ => {
                        return Err((
                            g.pos,
                            "the group of regex_capture() must be an integer literal".into(),
                        ))
                    }
                };
                let Some(group) = group else {
                    return Err((g.pos, format!("regex_capture() group must be between 0 and {groups}: the pattern has {groups} capture group(s)")));
                };
                (Node::RegexCapture { e, re, group }, Type::Text)
            }
            ("json_get", [e, p]) => {
                let (e, _) =
                    self.typed(e, &[Type::Json, Type::Text], "json_get()", "json or text")?;
                let AstKind::Str(path) = &p.kind else {
                    return Err((
                        p.pos,
                        "the path of json_get() must be a string literal such as '$.a.b[0]'".into(),
                    ));
                };
                let path =
                    json::parse_path(path).map_err(|(i, m)| (self.lit_offset(p.pos, i), m))?;
                (
                    Node::JsonGet {
                        e: b(e),
                        path,
                        at: pos,
                    },
                    Type::Text,
                )
            }
            ("date_part", [part, e]) => {
                let names: Vec<&str> = DATE_PARTS.iter().map(|(n, _)| *n).collect();
                let expected = format!("expected one of {}", names.join(", "));
                let AstKind::Str(p) = &part.kind else {
                    return Err((part.pos, format!("the first argument of date_part() must be a string literal; {expected}")));
                };
                let Some(&(_, dp)) = DATE_PARTS
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(p.trim()))
                else {
                    return Err((part.pos, format!("invalid date part '{p}'; {expected}")));
                };
                let (e, _) = self.typed(
                    e,
                    &[Type::Date, Type::Timestamp],
                    "date_part()",
                    "a date or timestamp",
                )?;
                (Node::DatePart { part: dp, e: b(e) }, Type::Numeric)
            }
            _ => return Err((pos, format!("internal error: unhandled call to {f}()"))),
        })
    }
}
