//! The untyped syntax tree the parser builds, with the nesting limits it enforces.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::transform::expr) enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Concat,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

impl BinOp {
    pub(in crate::transform::expr) fn symbol(self) -> &'static str {
        match self {
            BinOp::Or => "or",
            BinOp::And => "and",
            BinOp::Eq => "=",
            BinOp::Ne => "<>",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Concat => "||",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Mod => "%",
        }
    }
}

#[derive(Debug, Clone)]
pub(in crate::transform::expr) struct Ast {
    pub pos: usize,
    depth: u32,
    pub kind: AstKind,
}

#[derive(Debug, Clone)]
pub(in crate::transform::expr) enum AstKind {
    Str(String),
    Num(String),
    Bool(bool),
    Null,
    Column {
        name: String,
        quoted: bool,
    },
    Call {
        name: String,
        args: Vec<Ast>,
    },
    Neg(Box<Ast>),
    Not(Box<Ast>),
    Binary {
        op: BinOp,
        op_pos: usize,
        l: Box<Ast>,
        r: Box<Ast>,
    },
    /// `a and b and ...`, `a or b or ...`, `a || b || ...` (flat, so long chains stay shallow).
    Chain {
        op: BinOp,
        items: Vec<Ast>,
    },
    IsNull {
        e: Box<Ast>,
        negated: bool,
    },
    In {
        e: Box<Ast>,
        list: Vec<Ast>,
        negated: bool,
    },
    Between {
        e: Box<Ast>,
        lo: Box<Ast>,
        hi: Box<Ast>,
        negated: bool,
    },
    Like {
        e: Box<Ast>,
        pattern: Box<Ast>,
        negated: bool,
        ci: bool,
    },
    Case {
        operand: Option<Box<Ast>>,
        arms: Vec<(Ast, Ast)>,
        otherwise: Option<Box<Ast>>,
    },
    Cast {
        e: Box<Ast>,
        ty: TypeName,
    },
}

/// A type name as written after `::` or `as`, lowercased, words joined by one space.
#[derive(Debug, Clone)]
pub(in crate::transform::expr) struct TypeName {
    pub name: String,
    pub mods: Vec<u32>,
    pub pos: usize,
}

pub(super) fn mk(pos: usize, kind: AstKind) -> PResult<Ast> {
    let sub = |a: &Ast| a.depth;
    let child = match &kind {
        AstKind::Str(_)
        | AstKind::Num(_)
        | AstKind::Bool(_)
        | AstKind::Null
        | AstKind::Column { .. } => 0,
        AstKind::Call { args: items, .. } | AstKind::Chain { items, .. } => {
            items.iter().map(sub).max().unwrap_or(0)
        }
        AstKind::Neg(e) | AstKind::Not(e) | AstKind::IsNull { e, .. } | AstKind::Cast { e, .. } => {
            e.depth
        }
        AstKind::Binary { l, r, .. } => l.depth.max(r.depth),
        AstKind::In { e, list, .. } => list.iter().map(sub).max().unwrap_or(0).max(e.depth),
        AstKind::Between { e, lo, hi, .. } => e.depth.max(lo.depth).max(hi.depth),
        AstKind::Like { e, pattern, .. } => e.depth.max(pattern.depth),
        AstKind::Case {
            operand,
            arms,
            otherwise,
        } => {
            let arms = arms
                .iter()
                .map(|(c, v)| c.depth.max(v.depth))
                .max()
                .unwrap_or(0);
            arms.max(operand.as_deref().map_or(0, sub))
                .max(otherwise.as_deref().map_or(0, sub))
        }
    };
    if child >= MAX_DEPTH {
        return Err((pos, "expression is nested too deeply".into()));
    }
    Ok(Ast {
        pos,
        depth: child + 1,
        kind,
    })
}
