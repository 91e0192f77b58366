//! Substitution variables, as ksqlDB has them: `DEFINE name = 'value';` binds a name,
//! `${name}` anywhere in a later statement (an identifier, a literal, inside a quoted
//! string) is replaced by the value as text before the statement is parsed, `$${name}`
//! stands for the text `${name}` itself, and `UNDEFINE name;` unbinds it. Names are
//! case-insensitive (`${replicas}` is `${REPLICAS}`).
//!
//! A script is cut into statements before any substitution (a value may hold a `;`
//! without ending the statement), and each statement is substituted with the variables
//! as they stand when it runs: [`crate::ParsedStatement::resolve`].

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::Statement;
use crate::error::Position;

/// The variables of a session or a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Variables {
    values: BTreeMap<String, String>,
}

/// What [`Variables::apply`] did with a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Defined,
    Undefined,
    /// `UNDEFINE` of a name that was not defined (a warning in ksqlDB).
    NotDefined(String),
}

impl Variables {
    pub fn new() -> Self {
        Self::default()
    }

    /// From a request's `sessionVariables` object: its values as text (a number or a
    /// boolean is written as JSON writes it).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, String)>) -> Self {
        let mut v = Self::new();
        for (name, value) in pairs {
            v.define(name, &value);
        }
        v
    }

    pub fn define(&mut self, name: &str, value: &str) {
        self.values.insert(name.to_uppercase(), value.to_string());
    }

    /// Unbinds `name`; false when it was not bound.
    pub fn undefine(&mut self, name: &str) -> bool {
        self.values.remove(&name.to_uppercase()).is_some()
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(&name.to_uppercase()).map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Name and value of each variable, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Carries out `DEFINE` and `UNDEFINE`; `None` for any other statement.
    pub fn apply(&mut self, stmt: &Statement) -> Option<Applied> {
        match stmt {
            Statement::DefineVariable { name, value } => {
                self.define(&name.value, value);
                Some(Applied::Defined)
            }
            Statement::UndefineVariable { name } => Some(if self.undefine(&name.value) {
                Applied::Undefined
            } else {
                Applied::NotDefined(format!(
                    "Cannot undefine variable '{}' which was never defined",
                    name.value
                ))
            }),
            _ => None,
        }
    }

    /// `text` with every `${name}` of a defined variable replaced by its value and every
    /// `$${` by `${`. References to names not defined are left as they are.
    pub fn substitute<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if !text.contains("${") {
            return Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find("${") {
            let escaped = at > 0 && rest.as_bytes()[at - 1] == b'$';
            let after = &rest[at + 2..];
            let reference = after
                .find('}')
                .map(|end| &after[..end])
                .filter(|name| is_name(name));
            match reference {
                Some(name) if escaped => {
                    out.push_str(&rest[..at - 1]);
                    out.push_str("${");
                    out.push_str(name);
                    out.push('}');
                    rest = &after[name.len() + 1..];
                }
                Some(name) if self.get(name).is_some() => {
                    out.push_str(&rest[..at]);
                    out.push_str(self.get(name).unwrap_or_default());
                    rest = &after[name.len() + 1..];
                }
                _ => {
                    out.push_str(&rest[..at + 2]);
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        Cow::Owned(out)
    }
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_')
}

/// A variable reference outside quotes, found by [`mask`].
#[derive(Debug, Clone)]
pub(crate) struct Reference {
    pub position: Position,
    pub name: String,
}

/// `sql` with each `${name}` (and `$${name}`) written outside quotes and comments replaced
/// by as many `_` as it has characters, so the script tokenizes and splits into statements
/// with every position unchanged; and where those references were.
pub(crate) fn mask(sql: &str) -> (Cow<'_, str>, Vec<Reference>) {
    if !sql.contains("${") {
        return (Cow::Borrowed(sql), Vec::new());
    }
    let chars: Vec<char> = sql.chars().collect();
    let mut out = String::with_capacity(sql.len());
    let mut refs = Vec::new();
    let (mut line, mut column) = (1u64, 1u64);
    let mut i = 0;
    // What the scanner is inside: None for code, Some(c) for a quote or comment.
    let mut inside: Option<char> = None;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let mut take = 1;
        match inside {
            None => match c {
                '\'' | '"' | '`' => inside = Some(c),
                '-' if next == Some('-') => inside = Some('\n'),
                '/' if next == Some('*') => {
                    inside = Some('*');
                    take = 2;
                }
                '$' => {
                    let open = if next == Some('$') && chars.get(i + 2) == Some(&'{') {
                        Some(i + 3)
                    } else if next == Some('{') {
                        Some(i + 2)
                    } else {
                        None
                    };
                    if let Some(open) = open
                        && let Some(len) = chars[open..].iter().position(|&c| c == '}')
                    {
                        let name: String = chars[open..open + len].iter().collect();
                        if is_name(&name) {
                            let end = open + len + 1;
                            refs.push(Reference {
                                position: Position::new(line, column),
                                name,
                            });
                            for _ in i..end {
                                out.push('_');
                            }
                            column += (end - i) as u64;
                            i = end;
                            continue;
                        }
                    }
                }
                _ => {}
            },
            Some('\n') => {
                if c == '\n' {
                    inside = None;
                }
            }
            Some('*') => {
                if c == '*' && next == Some('/') {
                    inside = None;
                    take = 2;
                }
            }
            Some(q) => {
                if c == q {
                    // A doubled quote stays inside.
                    if next == Some(q) {
                        take = 2;
                    } else {
                        inside = None;
                    }
                }
            }
        }
        for &c in &chars[i..(i + take).min(chars.len())] {
            out.push(c);
            if c == '\n' {
                line += 1;
                column = 1;
            } else {
                column += 1;
            }
        }
        i += take;
    }
    (Cow::Owned(out), refs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_defined_names_case_insensitively_and_keeps_escapes() {
        let mut v = Variables::new();
        v.define("format", "AVRO");
        v.define("REPLICAS", "3");
        assert_eq!(
            v.substitute(
                "WITH (value_format='${FORMAT}', replicas=${replicas}, x='$${format}', y=${nope})"
            ),
            "WITH (value_format='AVRO', replicas=3, x='${format}', y=${nope})"
        );
    }

    #[test]
    fn mask_keeps_positions_and_skips_strings_and_comments() {
        let sql = "-- ${a}\nCREATE STREAM ${s} (x INT) WITH (kafka_topic='${t}');";
        let (masked, refs) = mask(sql);
        assert_eq!(masked.chars().count(), sql.chars().count());
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0].name, "s");
        assert_eq!(refs[0].position, Position::new(2, 15));
        assert!(masked.contains("CREATE STREAM ____ (x INT) WITH (kafka_topic='${t}')"));
    }
}
