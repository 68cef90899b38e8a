//! The type checker: resolves names against the source columns, infers and checks
//! types, coerces string literals PostgreSQL-style, prepares regexes, JSON paths
//! and constant casts once, and builds the evaluation tree. Every error carries
//! the char offset it refers to.

use std::borrow::Cow;

use regex::Regex;

use super::eval::{pg_replacement, CmpOp, DatePart, Node, Repl, Trim};
use super::json;
use super::parse::{Ast, AstKind, BinOp, TypeName};
use super::value::{self, ArithOp, CastTarget, Fail, Num, Val};
use super::{ColumnRef, Type};

mod funcs;

use funcs::*;

type CResult<T> = Result<T, (usize, String)>;

/// Type-checks a parsed expression: returns the evaluation tree, its type and the
/// (sorted, unique) indices of the columns it reads.
pub(super) fn check(
    src: &str,
    ast: &Ast,
    columns: &[ColumnRef<'_>],
) -> CResult<(Node, Type, Vec<usize>)> {
    let types = columns
        .iter()
        .map(|c| Type::from_sql_type(c.sql_type))
        .collect();
    let mut ck = Checker {
        src,
        columns,
        types,
        used: Vec::new(),
    };
    let (root, ty) = ck.check(ast)?;
    let mut used = ck.used;
    used.sort_unstable();
    used.dedup();
    Ok((root, ty, used))
}

fn merge(a: Type, b: Type) -> Option<Type> {
    use Type::*;
    match (a, b) {
        _ if a == b => Some(a),
        (Int, Numeric) | (Numeric, Int) => Some(Numeric),
        (Date, Timestamp) | (Timestamp, Date) => Some(Timestamp),
        _ => None,
    }
}

fn like_regex(p: &str, ci: bool) -> Result<Regex, String> {
    let mut re = String::from(if ci { "(?is)^" } else { "(?s)^" });
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        match c {
            '%' => re.push_str(".*"),
            '_' => re.push('.'),
            c => {
                let lit = if c == '\\' {
                    chars
                        .next()
                        .ok_or("a LIKE pattern must not end with '\\'")?
                } else {
                    c
                };
                re.push_str(&regex::escape(lit.encode_utf8(&mut [0; 4])));
            }
        }
    }
    re.push('$');
    Regex::new(&re).map_err(|e| e.to_string())
}

/// The position (char column in the pattern) and last line of a regex syntax error.
fn regex_error(e: &regex::Error) -> (Option<usize>, String) {
    match e {
        regex::Error::Syntax(s) => {
            let lines: Vec<&str> = s.lines().collect();
            let caret = lines
                .iter()
                .find(|l| l.trim_start().starts_with('^'))
                .and_then(|l| l.find('^'));
            let msg = lines
                .last()
                .map_or(s.as_str(), |l| l.trim_start_matches("error: "));
            (caret.and_then(|c| c.checked_sub(4)), msg.to_owned())
        }
        other => (None, other.to_string()),
    }
}

fn cast_target(ty: &TypeName) -> CResult<CastTarget> {
    let m = ty.mods.as_slice();
    let no_mods = |t: CastTarget| {
        if m.is_empty() {
            Ok(t)
        } else {
            Err((ty.pos, format!("type {} does not take modifiers", ty.name)))
        }
    };
    match ty.name.as_str() {
        "text" => no_mods(CastTarget::Text { max_len: None }),
        "varchar" | "character varying" => match m {
            [] => Ok(CastTarget::Text { max_len: None }),
            [n] if *n > 0 => Ok(CastTarget::Text { max_len: Some(*n) }),
            _ => Err((ty.pos, "varchar takes one positive length, e.g. varchar(40)".into())),
        },
        "integer" | "int" | "int4" => no_mods(CastTarget::Int { bits: 32 }),
        "bigint" | "int8" => no_mods(CastTarget::Int { bits: 64 }),
        "smallint" | "int2" => no_mods(CastTarget::Int { bits: 16 }),
        "numeric" | "decimal" => match m {
            [] => Ok(CastTarget::Numeric { typmod: None }),
            [p] | [p, _] if !(1..=1000).contains(p) => {
                Err((ty.pos, format!("numeric precision {p} must be between 1 and 1000")))
            }
            [p] => Ok(CastTarget::Numeric { typmod: Some((*p, 0)) }),
            [p, s] if s <= p => Ok(CastTarget::Numeric { typmod: Some((*p, *s)) }),
            [p, s] => Err((ty.pos, format!("numeric scale {s} must be between 0 and precision {p}"))),
            _ => Err((ty.pos, "numeric takes at most (precision, scale)".into())),
        },
        "double precision" | "float8" | "float" | "real" | "float4" => no_mods(CastTarget::Float),
        "boolean" | "bool" => no_mods(CastTarget::Bool),
        "date" => no_mods(CastTarget::Date),
        "timestamp" | "timestamp without time zone" => Ok(CastTarget::Timestamp { tz: false }),
        "timestamptz" | "timestamp with time zone" => Ok(CastTarget::Timestamp { tz: true }),
        "json" | "jsonb" => no_mods(CastTarget::Json),
        "uuid" => no_mods(CastTarget::Uuid),
        other => Err((
            ty.pos,
            format!(
                "unsupported type {other}; supported: text, varchar(n), integer, bigint, smallint, \
                 numeric(p,s), double precision, real, boolean, date, timestamp, timestamptz, json, jsonb, uuid"
            ),
        )),
    }
}

fn pair(nodes: Vec<Node>, pos: usize) -> CResult<(Node, Node)> {
    let mut it = nodes.into_iter();
    match (it.next(), it.next()) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => Err((pos, "internal error: expected two operands".into())),
    }
}

struct Checker<'c, 'a> {
    src: &'c str,
    columns: &'c [ColumnRef<'a>],
    types: Vec<Type>,
    used: Vec<usize>,
}

impl Checker<'_, '_> {
    /// Char offset in the expression of char `idx` of the string literal starting at `lit_pos`.
    fn lit_offset(&self, lit_pos: usize, idx: usize) -> usize {
        let mut chars = self.src.chars().skip(lit_pos + 1);
        let mut off = lit_pos + 1;
        for _ in 0..idx {
            match chars.next() {
                Some('\'') => {
                    chars.next();
                    off += 2;
                }
                Some(_) => off += 1,
                None => break,
            }
        }
        off
    }

    fn check(&mut self, ast: &Ast) -> CResult<(Node, Type)> {
        let pos = ast.pos;
        let b = Box::new;
        Ok(match &ast.kind {
            AstKind::Str(s) => (Node::Const(Val::Text(Cow::Owned(s.clone()))), Type::Text),
            AstKind::Num(n) => match (n.parse::<i64>(), value::parse_num(n)) {
                (Ok(i), _) => (Node::Const(Val::Int(i)), Type::Int),
                (_, Ok(v @ Num::Dec(..))) => (Node::Const(Val::Num(v)), Type::Numeric),
                _ => return Err((pos, format!("number {n} is out of range"))),
            },
            AstKind::Bool(v) => (Node::Const(Val::Bool(*v)), Type::Bool),
            AstKind::Null => (Node::Const(Val::Null), Type::Null),
            AstKind::Column { name, quoted } => self.column(name, *quoted, pos)?,
            AstKind::Call { name, args } => self.call(name, args, pos)?,
            AstKind::Neg(e) => {
                let (n, t) = self.numeric(e, "unary -")?;
                (Node::Neg { e: b(n), at: pos }, t)
            }
            AstKind::Not(e) => (Node::Not(b(self.boolean(e, "NOT")?)), Type::Bool),
            AstKind::Binary { op, op_pos, l, r } => self.binary(*op, *op_pos, l, r)?,
            AstKind::Chain { op, items } => self.chain(*op, items)?,
            AstKind::IsNull { e, negated } => (
                Node::IsNull {
                    e: b(self.check(e)?.0),
                    negated: *negated,
                },
                Type::Bool,
            ),
            AstKind::In { e, list, negated } => {
                let all: Vec<&Ast> = std::iter::once(&**e).chain(list).collect();
                let mut nodes = self.comparable(&all, "IN")?.into_iter();
                let e = nodes
                    .next()
                    .ok_or((pos, "internal error: empty IN".to_string()))?;
                (
                    Node::In {
                        e: b(e),
                        list: nodes.collect(),
                        negated: *negated,
                    },
                    Type::Bool,
                )
            }
            AstKind::Between { e, lo, hi, negated } => {
                let mut n = self.comparable(&[e, lo, hi], "BETWEEN")?.into_iter();
                let (Some(e), Some(lo), Some(hi)) = (n.next(), n.next(), n.next()) else {
                    return Err((pos, "internal error: BETWEEN operands".into()));
                };
                (
                    Node::Between {
                        e: b(e),
                        lo: b(lo),
                        hi: b(hi),
                        negated: *negated,
                    },
                    Type::Bool,
                )
            }
            AstKind::Like {
                e,
                pattern,
                negated,
                ci,
            } => {
                let (n, _) = self.check(e)?;
                let AstKind::Str(p) = &pattern.kind else {
                    return Err((
                        pattern.pos,
                        "a LIKE pattern must be a string literal".into(),
                    ));
                };
                let re = like_regex(p, *ci).map_err(|m| (pattern.pos, m))?;
                (
                    Node::Like {
                        e: b(n),
                        re,
                        negated: *negated,
                    },
                    Type::Bool,
                )
            }
            AstKind::Case {
                operand,
                arms,
                otherwise,
            } => self.case(operand.as_deref(), arms, otherwise.as_deref())?,
            AstKind::Cast { e, ty } => self.cast(e, ty)?,
        })
    }

    fn column(&mut self, name: &str, quoted: bool, pos: usize) -> CResult<(Node, Type)> {
        if let Some(idx) = self.columns.iter().position(|c| c.name == name) {
            let ty = self.types.get(idx).copied().unwrap_or(Type::Text);
            self.used.push(idx);
            return Ok((
                Node::Col {
                    idx,
                    ty,
                    name: name.into(),
                },
                ty,
            ));
        }
        if !quoted && NONDETERMINISTIC.contains(&name.to_ascii_lowercase().as_str()) {
            return Err((pos, nondeterministic(name)));
        }
        let mut msg = format!("unknown column \"{name}\"");
        match closest(name, self.columns.iter().map(|c| c.name)) {
            Some(s) => msg.push_str(&format!("; did you mean \"{s}\"?")),
            None if self.columns.is_empty() => msg.push_str("; the source table has no columns"),
            None => {
                let names: Vec<&str> = self.columns.iter().take(20).map(|c| c.name).collect();
                msg.push_str(&format!("; available columns: {}", names.join(", ")));
                if self.columns.len() > 20 {
                    msg.push_str(&format!(", ... ({} more)", self.columns.len() - 20));
                }
            }
        }
        if quoted {
            msg.push_str(" (double quotes name a column; write text in single quotes: 'text')");
        }
        Err((pos, msg))
    }

    /// Checks operands that must end up with one common type. String literals
    /// adopt the others' type (parsed now, like PostgreSQL's unknown literals);
    /// integers widen to numeric, dates to timestamps.
    fn unify(&mut self, args: &[&Ast], what: &str) -> CResult<(Vec<Node>, Type)> {
        let mut checked = Vec::with_capacity(args.len());
        let (mut common, mut any_literal) = (None, false);
        for a in args {
            if matches!(a.kind, AstKind::Str(_)) {
                checked.push(None);
                any_literal = true;
                continue;
            }
            let (n, t) = self.check(a)?;
            if t != Type::Null {
                common = Some(match common {
                    None => t,
                    Some(c) => merge(c, t).ok_or_else(|| {
                        let other = if c == Type::Text { t } else { c };
                        let hint = if c == Type::Text || t == Type::Text {
                            format!(" (cast one side explicitly, e.g. ::text or ::{other})")
                        } else {
                            String::new()
                        };
                        (a.pos, format!("{what}: cannot mix {c} and {t}{hint}"))
                    })?,
                });
            }
            checked.push(Some((n, t)));
        }
        let ty = common.unwrap_or(if any_literal { Type::Text } else { Type::Null });
        let mut nodes = Vec::with_capacity(args.len());
        for (a, c) in args.iter().zip(checked) {
            nodes.push(match (c, &a.kind) {
                (Some((n, t)), _) if t == ty || t == Type::Null => n,
                (Some((n, _)), _) => Node::Cast {
                    e: Box::new(n),
                    to: CastTarget::of(ty),
                    at: a.pos,
                },
                (None, AstKind::Str(s)) => {
                    match value::cast(&Val::Text(Cow::Borrowed(s)), CastTarget::of(ty)) {
                        Ok(v) => Node::Const(v.into_static()),
                        Err(_) => return Err((a.pos, format!("'{s}' is not a valid {ty} value"))),
                    }
                }
                (None, _) => return Err((a.pos, "internal error: literal expected".into())),
            });
        }
        Ok((nodes, ty))
    }

    fn comparable(&mut self, args: &[&Ast], what: &str) -> CResult<Vec<Node>> {
        let (nodes, ty) = self.unify(args, what)?;
        if ty == Type::Json {
            let pos = args.first().map_or(0, |a| a.pos);
            let msg = format!("{what}: json values cannot be compared; extract a field with json_get() or cast with ::text");
            return Err((pos, msg));
        }
        Ok(nodes)
    }

    fn typed(&mut self, ast: &Ast, ok: &[Type], what: &str, want: &str) -> CResult<(Node, Type)> {
        let (n, t) = self.check(ast)?;
        if t == Type::Null || ok.contains(&t) {
            return Ok((n, t));
        }
        let hint = match t {
            Type::Text if ok.contains(&Type::Int) => {
                " (text needs an explicit cast, e.g. ::numeric or ::integer)"
            }
            Type::Text if ok.contains(&Type::Timestamp) => {
                " (text needs an explicit cast, e.g. ::timestamp)"
            }
            _ => "",
        };
        Err((ast.pos, format!("{what} needs {want}, got {t}{hint}")))
    }

    fn numeric(&mut self, ast: &Ast, what: &str) -> CResult<(Node, Type)> {
        self.typed(ast, &[Type::Int, Type::Numeric], what, "a number")
    }

    fn boolean(&mut self, ast: &Ast, what: &str) -> CResult<Node> {
        Ok(self.typed(ast, &[Type::Bool], what, "a boolean")?.0)
    }

    fn int(&mut self, ast: &Ast, what: &str) -> CResult<Box<Node>> {
        Ok(Box::new(
            self.typed(ast, &[Type::Int], what, "an integer")?.0,
        ))
    }

    fn text(&mut self, ast: &Ast) -> CResult<Box<Node>> {
        Ok(Box::new(self.check(ast)?.0))
    }

    fn binary(&mut self, op: BinOp, op_pos: usize, l: &Ast, r: &Ast) -> CResult<(Node, Type)> {
        let b = Box::new;
        let what = format!("operator {}", op.symbol());
        let cmp = |op| -> Option<CmpOp> {
            Some(match op {
                BinOp::Eq => CmpOp::Eq,
                BinOp::Ne => CmpOp::Ne,
                BinOp::Lt => CmpOp::Lt,
                BinOp::Le => CmpOp::Le,
                BinOp::Gt => CmpOp::Gt,
                BinOp::Ge => CmpOp::Ge,
                _ => return None,
            })
        };
        let arith = match op {
            BinOp::Add => Some(ArithOp::Add),
            BinOp::Sub => Some(ArithOp::Sub),
            BinOp::Mul => Some(ArithOp::Mul),
            BinOp::Div => Some(ArithOp::Div),
            BinOp::Mod => Some(ArithOp::Mod),
            _ => None,
        };
        if let Some(cop) = cmp(op) {
            let (x, y) = pair(
                self.comparable(&[l, r], &format!("comparison '{}'", op.symbol()))?,
                op_pos,
            )?;
            return Ok((
                Node::Cmp {
                    op: cop,
                    l: b(x),
                    r: b(y),
                },
                Type::Bool,
            ));
        }
        if let Some(aop) = arith {
            let ((x, tx), (y, ty)) = (self.numeric(l, &what)?, self.numeric(r, &what)?);
            let t = match (tx, ty) {
                (Type::Null, Type::Null) => Type::Null,
                (Type::Int | Type::Null, Type::Int | Type::Null) => Type::Int,
                _ => Type::Numeric,
            };
            return Ok((
                Node::Arith {
                    op: aop,
                    l: b(x),
                    r: b(y),
                    at: op_pos,
                },
                t,
            ));
        }
        Err((
            op_pos,
            format!("internal error: unexpected binary operator {}", op.symbol()),
        ))
    }

    fn chain(&mut self, op: BinOp, items: &[Ast]) -> CResult<(Node, Type)> {
        let mut nodes = Vec::with_capacity(items.len());
        for a in items {
            nodes.push(match op {
                BinOp::And => self.boolean(a, "AND")?,
                BinOp::Or => self.boolean(a, "OR")?,
                _ => self.check(a)?.0,
            });
        }
        Ok(match op {
            BinOp::And => (Node::All(nodes), Type::Bool),
            BinOp::Or => (Node::Any(nodes), Type::Bool),
            _ => (Node::Concat(nodes), Type::Text),
        })
    }

    fn case(
        &mut self,
        operand: Option<&Ast>,
        arms: &[(Ast, Ast)],
        otherwise: Option<&Ast>,
    ) -> CResult<(Node, Type)> {
        let (operand, whens) = match operand {
            Some(o) => {
                let all: Vec<&Ast> = std::iter::once(o)
                    .chain(arms.iter().map(|(w, _)| w))
                    .collect();
                let mut nodes = self.comparable(&all, "CASE")?.into_iter();
                (nodes.next().map(Box::new), nodes.collect())
            }
            None => {
                let mut whens = Vec::with_capacity(arms.len());
                for (w, _) in arms {
                    whens.push(self.boolean(w, "a WHEN condition")?);
                }
                (None, whens)
            }
        };
        let results: Vec<&Ast> = arms.iter().map(|(_, v)| v).chain(otherwise).collect();
        let (mut values, ty) = self.unify(&results, "CASE results")?;
        let otherwise = if otherwise.is_some() {
            values.pop().map(Box::new)
        } else {
            None
        };
        let arms = whens.into_iter().zip(values).collect();
        Ok((
            Node::Case {
                operand,
                arms,
                otherwise,
            },
            ty,
        ))
    }

    fn cast(&mut self, e: &Ast, ty: &TypeName) -> CResult<(Node, Type)> {
        let to = cast_target(ty)?;
        let result = to.result_type();
        if let AstKind::Str(s) = &e.kind {
            return match value::cast(&Val::Text(Cow::Borrowed(s)), to) {
                Ok(v) => Ok((Node::Const(v.into_static()), result)),
                Err(Fail::OutOfRange) => Err((
                    e.pos,
                    format!("'{s}' is out of range for type {}", to.name()),
                )),
                Err(_) => Err((
                    e.pos,
                    format!("invalid input for type {}: '{s}'", to.name()),
                )),
            };
        }
        let (n, from) = self.check(e)?;
        use Type::*;
        let ok = match to {
            _ if matches!(from, Text | Null) => true,
            CastTarget::Text { .. } => true,
            CastTarget::Uuid => false,
            CastTarget::Int { .. } => matches!(from, Int | Numeric | Bool),
            CastTarget::Numeric { .. } | CastTarget::Float => matches!(from, Int | Numeric),
            CastTarget::Bool => matches!(from, Bool | Int),
            CastTarget::Date | CastTarget::Timestamp { .. } => matches!(from, Date | Timestamp),
            CastTarget::Json => from == Json,
        };
        if !ok {
            let hint = if from == Json {
                "; extract a field with json_get() first"
            } else {
                ""
            };
            return Err((ty.pos, format!("cannot cast {from} to {}{hint}", to.name())));
        }
        Ok((
            Node::Cast {
                e: Box::new(n),
                to,
                at: e.pos,
            },
            result,
        ))
    }
}
