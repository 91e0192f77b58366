//! Planning errors in the statement's own terms.
//!
//! Planning works over names the user never wrote: an aggregation's stateless step and
//! results (`WEIR_AGG_n`, `WEIR_GROUP_i`, ...), a join's wide row (`ALIAS_COLUMN`). When a
//! plan fails, the failure is explained with what the statement said: a column that
//! resolves nowhere is named with its clause, as ksqlDB does (`SELECT column 'X' cannot be
//! resolved.`); a column outside GROUP BY and outside every aggregate is named as such;
//! any other message gets the internal names replaced by the text they stand for.

use std::collections::HashSet;
use std::ops::ControlFlow;

use weir_sql::ast::{Expr, Query, SelectItem, fmt_expr};
use weir_sql::sqlparser::ast::{self as sql, VisitMut, VisitorMut, visit_expressions};

use crate::catalog::Source;
use crate::error::EngineError;
use crate::functions::Functions;

/// What a statement's column references may resolve to.
pub(crate) struct Scope<'a> {
    /// Each source read, under the alias the statement gives it.
    pub inputs: Vec<(&'a str, &'a Source)>,
    pub functions: &'a Functions,
    /// Internal names and the text each stands for.
    pub renames: Vec<(String, String)>,
}

/// The time units some functions take as bare words (`TIMESTAMPADD(SECONDS, 1, T)`).
const TIME_UNITS: [&str; 14] = [
    "NANOSECONDS",
    "MICROSECONDS",
    "MILLISECONDS",
    "SECONDS",
    "MINUTES",
    "HOURS",
    "DAYS",
    "NANOSECOND",
    "MICROSECOND",
    "MILLISECOND",
    "SECOND",
    "MINUTE",
    "HOUR",
    "DAY",
];

impl Scope<'_> {
    /// `err`, a failure to plan `query`, explained in the statement's terms.
    pub(crate) fn explain(&self, err: EngineError, query: &Query) -> EngineError {
        if !matches!(
            err,
            EngineError::Invalid(_) | EngineError::Plan(_) | EngineError::Unsupported(_)
        ) {
            return err;
        }
        if let Some(e) = self.unresolved(query) {
            return e;
        }
        if let Some(e) = self.ungrouped(query) {
            return e;
        }
        rename(err, &self.renames)
    }

    /// The first column reference, clause by clause, that names no column of any input.
    fn unresolved(&self, query: &Query) -> Option<EngineError> {
        let windowed =
            query.window.is_some() || self.inputs.iter().any(|(_, s)| s.window.is_some());
        let select = query.select.iter().filter_map(|i| match i {
            SelectItem::Expr { expr, .. } => Some(expr),
            _ => None,
        });
        let clauses = select
            .map(|e| ("SELECT", e))
            .chain(query.where_clause.iter().map(|e| ("WHERE", e)))
            .chain(query.group_by.iter().flatten().map(|e| ("GROUP BY", e)))
            .chain(
                query
                    .partition_by
                    .iter()
                    .flatten()
                    .map(|e| ("PARTITION BY", e)),
            )
            .chain(query.having.iter().map(|e| ("HAVING", e)));
        for (clause, e) in clauses {
            for r in references(e) {
                if !self.resolves(&r, windowed) {
                    return Some(EngineError::Invalid(format!(
                        "{clause} column '{}' cannot be resolved.",
                        r.join(".")
                    )));
                }
            }
        }
        None
    }

    fn resolves(&self, reference: &[String], windowed: bool) -> bool {
        let special = |c: &str| {
            weir_format::PSEUDO_COLUMNS.contains(&c)
                || (windowed && crate::WINDOW_BOUNDS.contains(&c))
        };
        let has = |s: &Source, c: &str| {
            special(c)
                || s.layout
                    .key_columns
                    .iter()
                    .chain(&s.layout.value_columns)
                    .any(|col| col.name == c)
        };
        match reference {
            [c] => special(c) || self.inputs.iter().any(|(_, s)| has(s, c)),
            [q, c] => self.inputs.iter().any(|(alias, s)| {
                (alias.eq_ignore_ascii_case(q) || s.name.eq_ignore_ascii_case(q)) && has(s, c)
            }),
            _ => true,
        }
    }

    /// With GROUP BY: the select items (then HAVING) that use a column outside every
    /// aggregate call and every grouping expression.
    fn ungrouped(&self, query: &Query) -> Option<EngineError> {
        let group_by = query.group_by.as_ref()?;
        let windowed = query.window.is_some();
        let loose = |e: &Expr| -> Vec<String> {
            let mut e = e.clone();
            let _ = e.visit(&mut Grouped {
                group_by,
                functions: self.functions,
            });
            references(&e)
                .into_iter()
                .filter(|r| {
                    let c = r.last().map(String::as_str).unwrap_or_default();
                    !(windowed && crate::WINDOW_BOUNDS.contains(&c))
                })
                .map(|r| r.join("."))
                .collect()
        };
        let mut found = Vec::new();
        for item in &query.select {
            let SelectItem::Expr { expr, .. } = item else {
                continue;
            };
            let columns = loose(expr);
            if columns.is_empty() {
                continue;
            }
            if self.has_aggregate(expr) {
                found.extend(columns);
            } else {
                found.push(fmt_expr(expr).to_string());
            }
        }
        if !found.is_empty() {
            found.dedup();
            return Some(EngineError::Invalid(format!(
                "Non-aggregate SELECT expression(s) not part of GROUP BY: {}\nEither add the column(s) to the GROUP BY or remove them from the SELECT.",
                found.join(", ")
            )));
        }
        let having = query.having.as_ref()?;
        let columns = loose(having);
        (!columns.is_empty()).then(|| {
            EngineError::Invalid(format!(
                "Non-aggregate HAVING expression not part of GROUP BY: {}",
                columns.join(", ")
            ))
        })
    }

    fn has_aggregate(&self, e: &Expr) -> bool {
        let mut found = false;
        let _ = visit_expressions(e, |x: &Expr| {
            found |= is_aggregate(x, self.functions);
            ControlFlow::<()>::Continue(())
        });
        found
    }
}

fn is_aggregate(e: &Expr, functions: &Functions) -> bool {
    crate::aggregate::is_aggregate_call(e, functions)
}

/// Blanks out (before visiting inside them) aggregate calls and grouping expressions.
struct Grouped<'a> {
    group_by: &'a [Expr],
    functions: &'a Functions,
}

impl VisitorMut for Grouped<'_> {
    type Break = ();

    fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
        if is_aggregate(e, self.functions)
            || self.group_by.iter().any(|g| crate::plan::same_expr(g, e))
        {
            *e = Expr::value(sql::Value::Null);
        }
        ControlFlow::Continue(())
    }
}

/// The column references in `e`, each as written (`C` or `Q.C`): struct field names
/// after `->`, lambda parameters and time-unit words are not references.
fn references(e: &Expr) -> Vec<Vec<String>> {
    let mut fields: HashSet<*const Expr> = HashSet::new();
    let mut params: HashSet<String> = HashSet::new();
    let _ = visit_expressions(e, |x: &Expr| {
        match x {
            Expr::BinaryOp {
                op: sql::BinaryOperator::Arrow,
                right,
                ..
            } => {
                fields.insert(&**right as *const Expr);
            }
            Expr::Lambda(l) => {
                let names: Vec<&sql::LambdaFunctionParameter> = match &l.params {
                    sql::OneOrManyWithParens::One(p) => vec![p],
                    sql::OneOrManyWithParens::Many(ps) => ps.iter().collect(),
                };
                params.extend(names.into_iter().map(|p| p.name.value.clone()));
            }
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    let mut out = Vec::new();
    let _ = visit_expressions(e, |x: &Expr| {
        if fields.contains(&(x as *const Expr)) {
            return ControlFlow::<()>::Continue(());
        }
        match x {
            Expr::Identifier(id)
                if !params.contains(&id.value) && !TIME_UNITS.contains(&id.value.as_str()) =>
            {
                out.push(vec![id.value.clone()]);
            }
            Expr::CompoundIdentifier(parts) => {
                out.push(parts.iter().map(|p| p.value.clone()).collect());
            }
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    out
}

/// `err` with each internal name (a whole word of its message) replaced by what it
/// stands for, and DataFusion's "No field named" in ksqlDB's words.
pub(crate) fn rename(err: EngineError, renames: &[(String, String)]) -> EngineError {
    let words = |m: &str| -> String {
        let mut m = m.to_string();
        for (from, to) in renames {
            m = replace_word(&m, from, to);
        }
        m
    };
    let fix = |m: String| -> String {
        match m.strip_prefix("Schema error: No field named ") {
            Some(rest) => {
                let end = rest.find([' ', '\n']).unwrap_or(rest.len());
                let raw = rest[..end].trim_end_matches('.');
                let last = raw.rsplit("\".\"").next().unwrap_or(raw).trim_matches('"');
                format!("Column '{}' cannot be resolved.", words(last))
            }
            None => words(&m),
        }
    };
    match err {
        EngineError::Invalid(m) => EngineError::Invalid(fix(m)),
        EngineError::Plan(m) => EngineError::Plan(fix(m)),
        EngineError::Unsupported(m) => EngineError::Unsupported(fix(m)),
        other => other,
    }
}

/// `text` with every occurrence of the word `from` (not inside a longer name) replaced.
fn replace_word(text: &str, from: &str, to: &str) -> String {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(from) {
        let before = rest[..i].chars().next_back();
        let after = rest[i + from.len()..].chars().next();
        let whole = !before.is_some_and(is_name) && !after.is_some_and(is_name);
        out.push_str(&rest[..i]);
        out.push_str(if whole { to } else { from });
        rest = &rest[i + from.len()..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::replace_word;

    #[test]
    fn only_whole_words_are_replaced() {
        assert_eq!(
            replace_word("`WEIR_AGG_1` and WEIR_AGG_10", "WEIR_AGG_1", "SUM(V)"),
            "`SUM(V)` and WEIR_AGG_10"
        );
    }
}
