//! Expressions for computed columns and row filters: a small, typed, SQL-like language.
//!
//! This module owns parsing expression text, type-checking it against the source
//! table's columns, and evaluating it on one row's values as PostgreSQL prints them
//! (COPY / pgoutput text), producing text that PostgreSQL input functions accept.
//!
//! It must never: touch a database or do any I/O; panic on any expression text or
//! row value (problems are [`CompileError`]s with an offset, or [`EvalError`]s); be
//! non-deterministic (no clock, randomness or sequences), so that replays and
//! backfills produce identical rows.
//!
//! Layout: this file (public API); `parse` (the parser to an untyped tree; `parse/lex`
//! the lexer, `parse/ast` the tree); `check` (type checker, builds the evaluation tree;
//! regexes, JSON paths and typed literals are prepared once here; `check/funcs` the function
//! table and each function's checking); `eval` (evaluates the tree on a row; `eval/funcs`
//! the built-in functions); `value` (runtime values, casts; `value/num` numbers, `value/time`
//! dates and timestamps); `json` (JSON paths and a validating, tree-free JSON scanner);
//! `tests/` (examples, compile errors, evaluation errors, properties).

mod check;
mod eval;
mod json;
mod parse;
mod value;

use std::borrow::Cow;
use std::fmt;

use eval::Node;
use value::Val;

/// A source column an expression may reference: name and PostgreSQL type as
/// `format_type()` prints it. Unknown types are treated as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnRef<'a> {
    pub name: &'a str,
    pub sql_type: &'a str,
}

/// Static type of an expression or column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Text,
    Int,
    Numeric,
    Bool,
    Date,
    Timestamp,
    Json,
    /// Only the literal `null` (and expressions that can only be NULL).
    Null,
}

impl Type {
    /// The static type of a column from its `format_type()` name.
    pub fn from_sql_type(sql_type: &str) -> Type {
        let t = sql_type.trim().to_ascii_lowercase();
        if t.ends_with("[]") {
            return Type::Text;
        }
        // Drop modifiers: "numeric(10,2)" -> "numeric", "timestamp(3) with time zone" -> "timestamp with time zone".
        let mut base = String::with_capacity(t.len());
        let mut depth = 0u32;
        for c in t.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                c if depth == 0 => base.push(c),
                _ => {}
            }
        }
        let base = base.split_whitespace().collect::<Vec<_>>().join(" ");
        match base.as_str() {
            "integer" | "int" | "int4" | "bigint" | "int8" | "smallint" | "int2" => Type::Int,
            "numeric" | "decimal" | "double precision" | "real" | "float4" | "float8" => {
                Type::Numeric
            }
            "boolean" | "bool" => Type::Bool,
            "date" => Type::Date,
            "json" | "jsonb" => Type::Json,
            b if b.starts_with("timestamp") => Type::Timestamp,
            _ => Type::Text,
        }
    }

    fn sql_name(self) -> &'static str {
        match self {
            Type::Text => "text",
            Type::Int => "integer",
            Type::Numeric => "numeric",
            Type::Bool => "boolean",
            Type::Date => "date",
            Type::Timestamp => "timestamp",
            Type::Json => "json",
            Type::Null => "null",
        }
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.sql_name())
    }
}

/// A problem found while compiling: `offset` is a char offset into `source_text`.
/// Displays as the message, the position, the offending line and a caret.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{message} at {}", locate(.source_text, .offset))]
pub struct CompileError {
    pub offset: usize,
    pub message: String,
    pub source_text: String,
}

fn locate(src: &str, offset: &usize) -> String {
    let offset = *offset;
    let (mut line_no, mut line_start) = (1, 0);
    for (i, ch) in src.chars().enumerate().take(offset) {
        if ch == '\n' {
            line_no += 1;
            line_start = i + 1;
        }
    }
    let line: String = src
        .chars()
        .skip(line_start)
        .take_while(|c| *c != '\n')
        .collect();
    let line = line.trim_end_matches('\r');
    let col = offset.saturating_sub(line_start);
    let pad: String = line
        .chars()
        .take(col)
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect();
    let place = if src.contains('\n') {
        format!("line {line_no}, column {}", col + 1)
    } else {
        format!("column {}", col + 1)
    };
    format!("{place}:\n  {line}\n  {pad}^")
}

/// A problem evaluating an expression on one row. `at` is the char offset in the
/// expression of the operation that failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EvalError {
    #[error("invalid {ty} value {value:?} in column {column:?}")]
    InvalidColumnValue {
        column: String,
        ty: &'static str,
        value: String,
    },
    #[error("invalid input for type {ty}: {value:?} (expression column {})", .at + 1)]
    InvalidCast {
        at: usize,
        ty: &'static str,
        value: String,
    },
    #[error("division by zero (expression column {})", .at + 1)]
    DivisionByZero { at: usize },
    #[error("{what} value out of range (expression column {})", .at + 1)]
    OutOfRange { at: usize, what: &'static str },
    #[error("invalid JSON: {detail} (expression column {})", .at + 1)]
    InvalidJson { at: usize, detail: String },
    #[error("{message} (expression column {})", .at + 1)]
    InvalidArgument { at: usize, message: String },
    #[error("the row has {len} values but the expression reads column {column:?} (index {index})")]
    MissingColumn {
        index: usize,
        column: String,
        len: usize,
    },
    #[error(
        "an expression of type {0} cannot be used as a filter (compile it with compile_filter)"
    )]
    NotBoolean(Type),
    #[error("internal error in expression evaluation: {0}")]
    Internal(String),
}

/// A compiled expression: immutable, `Send + Sync`, cheap to evaluate per row.
#[derive(Debug, Clone)]
pub struct Compiled {
    root: Node,
    ty: Type,
    used: Vec<usize>,
}

impl Compiled {
    /// Compiles a computed-column expression against the source columns.
    pub fn compile(src: &str, columns: &[ColumnRef<'_>]) -> Result<Compiled, CompileError> {
        Self::build(src, columns, false)
    }

    /// Compiles a row filter; the expression must be boolean.
    pub fn compile_filter(src: &str, columns: &[ColumnRef<'_>]) -> Result<Compiled, CompileError> {
        Self::build(src, columns, true)
    }

    fn build(src: &str, columns: &[ColumnRef<'_>], filter: bool) -> Result<Compiled, CompileError> {
        let wrap = |(offset, message): (usize, String)| CompileError {
            offset,
            message,
            source_text: src.to_owned(),
        };
        let ast = parse::parse(src).map_err(wrap)?;
        let (root, ty, used) = check::check(src, &ast, columns).map_err(wrap)?;
        if filter && ty != Type::Bool {
            let message =
                format!("a filter must be a boolean expression, but this expression is {ty}");
            return Err(wrap((ast.pos, message)));
        }
        Ok(Compiled { root, ty, used })
    }

    pub fn result_type(&self) -> Type {
        self.ty
    }

    /// Indices into `columns` the expression reads (sorted, unique).
    pub fn columns_used(&self) -> &[usize] {
        &self.used
    }

    /// `row[i]` is the text value of `columns[i]` (None = NULL). Returns the text value (None = NULL).
    pub fn eval(&self, row: &[Option<&str>]) -> Result<Option<String>, EvalError> {
        Ok(self.root.eval(row)?.into_text().map(Cow::into_owned))
    }

    /// Evaluates a filter: NULL counts as false.
    pub fn eval_filter(&self, row: &[Option<&str>]) -> Result<bool, EvalError> {
        match self.root.eval(row)? {
            Val::Bool(b) => Ok(b),
            Val::Null => Ok(false),
            _ => Err(EvalError::NotBoolean(self.ty)),
        }
    }
}

#[cfg(test)]
mod tests;
