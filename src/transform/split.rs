//! TEMPORARY STUB (replaced by the splitter).
use std::collections::BTreeMap;
#[derive(Debug, Clone, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SplitSpec {
    pub separators: Vec<String>,
    pub enumerators: bool,
    pub protected: Vec<String>,
    pub annotations: BTreeMap<String, String>,
    pub dedupe: bool,
}
impl Default for SplitSpec {
    fn default() -> Self {
        SplitSpec { separators: vec![",".into()], enumerators: true, protected: vec![], annotations: BTreeMap::new(), dedupe: true }
    }
}
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SplitSpecError { #[error("bad")] Bad }
pub struct Splitter { names: Vec<String> }
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part { pub position: usize, pub name: String, pub normalized: String, pub annotations: Vec<bool> }
impl Splitter {
    pub fn new(spec: &SplitSpec) -> Result<Splitter, SplitSpecError> { Ok(Splitter { names: spec.annotations.keys().cloned().collect() }) }
    pub fn annotation_names(&self) -> &[String] { &self.names }
    pub fn split(&self, input: Option<&str>) -> Vec<Part> {
        input.unwrap_or("").split(',').map(str::trim).filter(|s| !s.is_empty()).enumerate().map(|(i, s)| Part { position: i + 1, name: s.into(), normalized: s.to_lowercase(), annotations: vec![false; self.names.len()] }).collect()
    }
}
