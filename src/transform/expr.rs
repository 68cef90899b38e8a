//! TEMPORARY STUB (replaced by the expression language).
pub struct ColumnRef<'a> { pub name: &'a str, pub sql_type: &'a str }
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type { Text, Int, Numeric, Bool, Date, Timestamp, Json, Null }
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{message} at {offset}")]
pub struct CompileError { pub offset: usize, pub message: String }
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EvalError { #[error("bad {0}")] Bad(String) }
pub struct Compiled { col: usize, cols: Vec<usize> }
impl Compiled {
    pub fn compile(src: &str, columns: &[ColumnRef<'_>]) -> Result<Compiled, CompileError> {
        let i = columns.iter().position(|c| c.name == src.trim()).ok_or(CompileError { offset: 0, message: "unknown".into() })?;
        Ok(Compiled { col: i, cols: vec![i] })
    }
    pub fn compile_filter(src: &str, columns: &[ColumnRef<'_>]) -> Result<Compiled, CompileError> { Self::compile(src, columns) }
    pub fn result_type(&self) -> Type { Type::Text }
    pub fn columns_used(&self) -> &[usize] { &self.cols }
    pub fn eval(&self, row: &[Option<&str>]) -> Result<Option<String>, EvalError> { Ok(row.get(self.col).copied().flatten().map(str::to_string)) }
    pub fn eval_filter(&self, row: &[Option<&str>]) -> Result<bool, EvalError> { Ok(row.get(self.col).copied().flatten() == Some("t")) }
}
