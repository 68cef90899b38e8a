//! Lexer and recursive-descent parser: expression text to an untyped syntax tree.
//!
//! Every error carries the char offset it refers to. Nesting is bounded (both the
//! parser's recursion and the depth of the built tree), so no input can exhaust the
//! stack here, in the type checker, in evaluation or in `Drop`.

/// A parse error: char offset into the expression and a message.
pub(super) type PResult<T> = Result<T, (usize, String)>;

/// Maximum recursion of the parser (parentheses, function arguments, prefix operators).
mod ast;
mod lex;

pub(super) use ast::*;
use lex::*;

const MAX_NESTING: u32 = 32;
/// Maximum depth of the syntax tree (also bounds left-associative chains like `a+a+a+...`).
const MAX_DEPTH: u32 = 64;

/// Parses a whole expression.
pub(super) fn parse(src: &str) -> PResult<Ast> {
    let mut p = Parser {
        toks: lex(src)?,
        i: 0,
        nest: 0,
    };
    if p.peek().tok == Tok::Eof {
        return Err((0, "empty expression".into()));
    }
    let e = p.expr()?;
    let t = p.peek();
    if t.tok != Tok::Eof {
        let what = describe(&t.tok);
        return Err((
            t.pos,
            format!("expected an operator or the end of the expression, found {what}"),
        ));
    }
    Ok(e)
}

struct Parser {
    toks: Vec<Token>,
    i: usize,
    nest: u32,
}

impl Parser {
    fn peek(&self) -> &Token {
        // The token list always ends with Eof and `i` never moves past it.
        &self.toks[self.i.min(self.toks.len() - 1)]
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if t.tok != Tok::Eof {
            self.i += 1;
        }
        t
    }

    fn is_kw(&self, kw: &str) -> bool {
        matches!(&self.peek().tok, Tok::Ident(s) if s.eq_ignore_ascii_case(kw))
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        let hit = self.is_kw(kw);
        if hit {
            self.i += 1;
        }
        hit
    }

    fn is_sym(&self, s: &str) -> bool {
        matches!(self.peek().tok, Tok::Sym(t) if t == s)
    }

    fn fail<T>(&self, expected: &str) -> PResult<T> {
        let t = self.peek();
        Err((
            t.pos,
            format!("expected {expected}, found {}", describe(&t.tok)),
        ))
    }

    fn expect_sym(&mut self, s: &str, ctx: &str) -> PResult<()> {
        if self.is_sym(s) {
            self.i += 1;
            return Ok(());
        }
        self.fail(&format!("'{s}' {ctx}"))
    }

    fn expect_kw(&mut self, kw: &str, ctx: &str) -> PResult<()> {
        if self.eat_kw(kw) {
            return Ok(());
        }
        self.fail(&format!("{} {ctx}", kw.to_ascii_uppercase()))
    }

    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> PResult<T>) -> PResult<T> {
        if self.nest >= MAX_NESTING {
            return Err((self.peek().pos, "expression is nested too deeply".into()));
        }
        self.nest += 1;
        let r = f(self);
        self.nest -= 1;
        r
    }

    fn expr(&mut self) -> PResult<Ast> {
        self.nested(Self::or)
    }

    fn binary_chain(
        &mut self,
        sub: fn(&mut Self) -> PResult<Ast>,
        op_of: fn(&Self) -> Option<BinOp>,
    ) -> PResult<Ast> {
        let mut l = sub(self)?;
        while let Some(op) = op_of(self) {
            let op_pos = self.next().pos;
            let r = sub(self)?;
            l = mk(
                l.pos,
                AstKind::Binary {
                    op,
                    op_pos,
                    l: Box::new(l),
                    r: Box::new(r),
                },
            )
            .map_err(|(_, m)| (op_pos, m))?;
        }
        Ok(l)
    }

    /// A flat chain of one associative operator.
    fn chain(
        &mut self,
        op: BinOp,
        sub: fn(&mut Self) -> PResult<Ast>,
        is_op: fn(&Self) -> bool,
    ) -> PResult<Ast> {
        let first = sub(self)?;
        if !is_op(self) {
            return Ok(first);
        }
        let pos = first.pos;
        let mut items = vec![first];
        while is_op(self) {
            self.i += 1;
            items.push(sub(self)?);
        }
        mk(pos, AstKind::Chain { op, items })
    }

    fn or(&mut self) -> PResult<Ast> {
        self.chain(BinOp::Or, Self::and, |p| p.is_kw("or"))
    }

    fn and(&mut self) -> PResult<Ast> {
        self.chain(BinOp::And, Self::not, |p| p.is_kw("and"))
    }

    fn not(&mut self) -> PResult<Ast> {
        if self.is_kw("not") {
            let pos = self.next().pos;
            let e = self.nested(Self::not)?;
            return mk(pos, AstKind::Not(Box::new(e)));
        }
        self.is_null()
    }

    fn is_null(&mut self) -> PResult<Ast> {
        let mut e = self.comparison()?;
        while self.eat_kw("is") {
            let negated = self.eat_kw("not");
            if !self.eat_kw("null") {
                return self.fail("NULL after IS (only IS [NOT] NULL is supported)");
            }
            e = mk(
                e.pos,
                AstKind::IsNull {
                    e: Box::new(e),
                    negated,
                },
            )?;
        }
        Ok(e)
    }

    fn cmp_op(&self) -> Option<BinOp> {
        match self.peek().tok {
            Tok::Sym("=") => Some(BinOp::Eq),
            Tok::Sym("<>") => Some(BinOp::Ne),
            Tok::Sym("<") => Some(BinOp::Lt),
            Tok::Sym("<=") => Some(BinOp::Le),
            Tok::Sym(">") => Some(BinOp::Gt),
            Tok::Sym(">=") => Some(BinOp::Ge),
            _ => None,
        }
    }

    fn comparison(&mut self) -> PResult<Ast> {
        let l = self.membership()?;
        let Some(op) = self.cmp_op() else {
            return Ok(l);
        };
        let op_pos = self.next().pos;
        let r = self.membership()?;
        if self.cmp_op().is_some() {
            let pos = self.peek().pos;
            return Err((
                pos,
                "comparisons cannot be chained; combine them with AND".into(),
            ));
        }
        mk(
            l.pos,
            AstKind::Binary {
                op,
                op_pos,
                l: Box::new(l),
                r: Box::new(r),
            },
        )
    }

    /// `x [not] in (...)`, `x [not] between a and b`, `x [not] like/ilike p`.
    fn membership(&mut self) -> PResult<Ast> {
        let e = self.concat()?;
        let save = self.i;
        let negated = self.eat_kw("not");
        let (pos, e) = (e.pos, Box::new(e));
        if self.eat_kw("in") {
            self.expect_sym("(", "after IN")?;
            let mut list = vec![self.expr()?];
            while self.is_sym(",") {
                self.i += 1;
                list.push(self.expr()?);
            }
            self.expect_sym(")", "to close the IN list")?;
            return mk(pos, AstKind::In { e, list, negated });
        }
        if self.eat_kw("between") {
            let lo = Box::new(self.concat()?);
            self.expect_kw("and", "in BETWEEN")?;
            let hi = Box::new(self.concat()?);
            return mk(pos, AstKind::Between { e, lo, hi, negated });
        }
        let ci = self.is_kw("ilike");
        if ci || self.is_kw("like") {
            self.i += 1;
            let pattern = Box::new(self.concat()?);
            return mk(
                pos,
                AstKind::Like {
                    e,
                    pattern,
                    negated,
                    ci,
                },
            );
        }
        self.i = save;
        Ok(*e)
    }

    fn concat(&mut self) -> PResult<Ast> {
        self.chain(BinOp::Concat, Self::additive, |p| p.is_sym("||"))
    }

    fn additive(&mut self) -> PResult<Ast> {
        self.binary_chain(Self::multiplicative, |p| match p.peek().tok {
            Tok::Sym("+") => Some(BinOp::Add),
            Tok::Sym("-") => Some(BinOp::Sub),
            _ => None,
        })
    }

    fn multiplicative(&mut self) -> PResult<Ast> {
        self.binary_chain(Self::unary, |p| match p.peek().tok {
            Tok::Sym("*") => Some(BinOp::Mul),
            Tok::Sym("/") => Some(BinOp::Div),
            Tok::Sym("%") => Some(BinOp::Mod),
            _ => None,
        })
    }

    fn unary(&mut self) -> PResult<Ast> {
        if self.is_sym("-") {
            let pos = self.next().pos;
            let e = self.nested(Self::unary)?;
            return mk(pos, AstKind::Neg(Box::new(e)));
        }
        let mut e = self.primary()?;
        while self.is_sym("::") {
            let op_pos = self.next().pos;
            let ty = self.type_name()?;
            e = mk(e.pos, AstKind::Cast { e: Box::new(e), ty }).map_err(|(_, m)| (op_pos, m))?;
        }
        Ok(e)
    }

    fn primary(&mut self) -> PResult<Ast> {
        let t = self.next();
        let pos = t.pos;
        match t.tok {
            Tok::Str(s) => mk(pos, AstKind::Str(s)),
            Tok::Num(n) => mk(pos, AstKind::Num(n)),
            Tok::QIdent(name) => mk(pos, AstKind::Column { name, quoted: true }),
            Tok::Sym("(") => {
                let e = self.expr()?;
                self.expect_sym(")", "to close '('")?;
                Ok(e)
            }
            Tok::Ident(name) => match name.to_ascii_lowercase().as_str() {
                "true" => mk(pos, AstKind::Bool(true)),
                "false" => mk(pos, AstKind::Bool(false)),
                "null" => mk(pos, AstKind::Null),
                "case" => self.case(pos),
                "cast" if self.is_sym("(") => {
                    self.i += 1;
                    let e = self.expr()?;
                    self.expect_kw("as", "in CAST(... AS type)")?;
                    let ty = self.type_name()?;
                    self.expect_sym(")", "to close CAST(")?;
                    mk(pos, AstKind::Cast { e: Box::new(e), ty })
                }
                kw if RESERVED.contains(&kw) => Err((
                    pos,
                    format!("expected an expression, found keyword '{name}'"),
                )),
                _ if self.is_sym("(") => {
                    self.i += 1;
                    let mut args = Vec::new();
                    if !self.is_sym(")") {
                        args.push(self.expr()?);
                        while self.is_sym(",") {
                            self.i += 1;
                            args.push(self.expr()?);
                        }
                    }
                    self.expect_sym(")", "to close the argument list")?;
                    mk(pos, AstKind::Call { name, args })
                }
                _ => mk(
                    pos,
                    AstKind::Column {
                        name,
                        quoted: false,
                    },
                ),
            },
            other => Err((
                pos,
                format!("expected an expression, found {}", describe(&other)),
            )),
        }
    }

    fn case(&mut self, pos: usize) -> PResult<Ast> {
        let operand = if self.is_kw("when") {
            None
        } else {
            Some(Box::new(self.expr()?))
        };
        let mut arms = Vec::new();
        while self.eat_kw("when") {
            let cond = self.expr()?;
            self.expect_kw("then", "after the WHEN condition")?;
            arms.push((cond, self.expr()?));
        }
        if arms.is_empty() {
            return self.fail("WHEN in CASE");
        }
        let otherwise = if self.eat_kw("else") {
            Some(Box::new(self.expr()?))
        } else {
            None
        };
        self.expect_kw("end", "to close CASE")?;
        mk(
            pos,
            AstKind::Case {
                operand,
                arms,
                otherwise,
            },
        )
    }

    fn type_name(&mut self) -> PResult<TypeName> {
        let t = self.next();
        let Tok::Ident(word) = t.tok else {
            self.i -= usize::from(t.tok != Tok::Eof);
            return self.fail("a type name");
        };
        let mut name = word.to_ascii_lowercase();
        let mut mods = Vec::new();
        match name.as_str() {
            "double" => {
                self.expect_kw("precision", "after DOUBLE")?;
                name.push_str(" precision");
            }
            "character" if self.eat_kw("varying") => name.push_str(" varying"),
            "timestamp" => {
                mods = self.type_mods()?;
                let with = self.is_kw("with");
                if with || self.is_kw("without") {
                    self.i += 1;
                    self.expect_kw("time", "in WITH/WITHOUT TIME ZONE")?;
                    self.expect_kw("zone", "in WITH/WITHOUT TIME ZONE")?;
                    name.push_str(if with {
                        " with time zone"
                    } else {
                        " without time zone"
                    });
                }
            }
            _ => {}
        }
        if mods.is_empty() {
            mods = self.type_mods()?;
        }
        Ok(TypeName {
            name,
            mods,
            pos: t.pos,
        })
    }

    fn type_mods(&mut self) -> PResult<Vec<u32>> {
        let mut mods = Vec::new();
        if !self.is_sym("(") {
            return Ok(mods);
        }
        self.i += 1;
        loop {
            let t = self.peek();
            match &t.tok {
                Tok::Num(n) if n.parse::<u32>().is_ok() => mods.push(n.parse::<u32>().unwrap_or(0)),
                _ => return self.fail("an integer type modifier"),
            }
            self.i += 1;
            if !self.is_sym(",") {
                break;
            }
            self.i += 1;
        }
        self.expect_sym(")", "to close the type modifiers")?;
        Ok(mods)
    }
}
