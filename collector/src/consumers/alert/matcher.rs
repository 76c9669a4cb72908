//! Label matchers, as routes and silences use them: `name=value`,
//! `name!=value`, `name=~regex`, `name!~regex` (regexes anchored at both
//! ends, as in Alertmanager). A label an alert does not have matches as
//! the empty string.

use std::collections::BTreeMap;
use std::fmt;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// An alert's labels.
pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Re,
    NotRe,
}

/// One matcher.
#[derive(Debug, Clone)]
pub struct Matcher {
    name: String,
    op: Op,
    value: String,
    regex: Option<Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}

/// Longest matcher text accepted (API input).
const MAX_LEN: usize = 1024;

impl Matcher {
    /// Parses `name=value` and friends; the value may be double-quoted.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() > MAX_LEN {
            return Err(format!("matcher longer than {MAX_LEN} bytes"));
        }
        let at = text.find(['=', '!']).ok_or_else(|| {
            format!("{text:?}: expected name=value, name!=value, name=~regex or name!~regex")
        })?;
        let (name, rest) = text.split_at(at);
        let name = name.trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "{text:?}: label name {name:?} must be letters, digits, - or _"
            ));
        }
        let (op, value) = if let Some(v) = rest.strip_prefix("=~") {
            (Op::Re, v)
        } else if let Some(v) = rest.strip_prefix("!~") {
            (Op::NotRe, v)
        } else if let Some(v) = rest.strip_prefix("!=") {
            (Op::Ne, v)
        } else if let Some(v) = rest.strip_prefix('=') {
            (Op::Eq, v)
        } else {
            return Err(format!("{text:?}: expected =, !=, =~ or !~ after {name:?}"));
        };
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value)
            .to_owned();
        let regex = match op {
            Op::Re | Op::NotRe => Some(
                Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| format!("{text:?}: bad regex: {e}"))?,
            ),
            Op::Eq | Op::Ne => None,
        };
        Ok(Self {
            name: name.to_owned(),
            op,
            value,
            regex,
        })
    }

    /// An equality matcher.
    pub fn eq(name: &str, value: &str) -> Self {
        Self {
            name: name.to_owned(),
            op: Op::Eq,
            value: value.to_owned(),
            regex: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        let v = labels.get(&self.name).map_or("", String::as_str);
        match (self.op, &self.regex) {
            (Op::Eq, _) => v == self.value,
            (Op::Ne, _) => v != self.value,
            (Op::Re, Some(r)) => r.is_match(v),
            (Op::NotRe, Some(r)) => !r.is_match(v),
            (Op::Re | Op::NotRe, None) => false,
        }
    }
}

/// Whether every matcher matches.
pub fn all_match(matchers: &[Matcher], labels: &Labels) -> bool {
    matchers.iter().all(|m| m.matches(labels))
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Re => "=~",
            Op::NotRe => "!~",
        };
        write!(f, "{}{op}{}", self.name, self.value)
    }
}

impl Serialize for Matcher {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Matcher {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Matcher::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn operators() {
        let l = labels(&[("agent", "edge-1"), ("severity", "critical")]);
        let m = |s| Matcher::parse(s).unwrap().matches(&l);
        assert!(m("agent=edge-1") && m("agent = \"edge-1\"") && !m("agent=edge-2"));
        assert!(m("agent!=edge-2") && !m("agent!=edge-1"));
        assert!(m("agent=~edge-.*") && !m("agent=~edge") && m("severity!~warning|info"));
        // Absent labels are "".
        assert!(m("target=") && !m("target=~.+"));
        assert_eq!(Matcher::parse("a=~x.*").unwrap().to_string(), "a=~x.*");
    }

    #[test]
    fn mistakes_are_named() {
        let e = |s| Matcher::parse(s).unwrap_err();
        assert!(e("agent").contains("expected name=value"));
        assert!(e("=x").contains("label name \"\""));
        assert!(e("a=~(").contains("bad regex"));
        assert!(e("a!x").contains("expected =, !=, =~ or !~"));
    }
}
