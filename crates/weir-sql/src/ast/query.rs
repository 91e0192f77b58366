//! The SELECT body: ksqlDB's clause order and its streaming additions (WINDOW, WITHIN,
//! PARTITION BY, EMIT). Expressions inside are sqlparser [`Expr`]s, printed in ksqlDB form.

use std::fmt;

use sqlparser::ast::{Expr, Ident};

use super::{comma_list, fmt_expr, fmt_ident};

/// `SELECT ... FROM ... [WINDOW] [WHERE] [GROUP BY] [PARTITION BY] [HAVING] [EMIT] [LIMIT]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub select: Vec<SelectItem>,
    pub from: Relation,
    pub window: Option<WindowExpr>,
    pub where_clause: Option<Expr>,
    /// `None`: no GROUP BY. `Some(vec![])`: `GROUP BY ()`.
    pub group_by: Option<Vec<Expr>>,
    pub partition_by: Option<Vec<Expr>>,
    pub having: Option<Expr>,
    pub emit: Option<Emit>,
    pub limit: Option<u64>,
}

// Select lists are short and built once per query: the size of an inline `Expr` costs
// nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum SelectItem {
    /// `*`
    Wildcard,
    /// `source.*`
    QualifiedWildcard(Ident),
    /// `expr [AS alias]`
    Expr { expr: Expr, alias: Option<Ident> },
}

/// The FROM clause: a source and the sources joined to it, left to right.
#[derive(Debug, Clone, PartialEq)]
pub struct Relation {
    pub source: AliasedSource,
    pub joins: Vec<Join>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AliasedSource {
    pub name: Ident,
    pub alias: Option<Ident>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Join {
    pub kind: JoinKind,
    pub source: AliasedSource,
    /// Stream-stream joins say how far apart in time matching records may be.
    pub within: Option<WithinExpr>,
    pub on: Expr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    Inner,
    Left,
    Right,
    Full,
}

/// `WITHIN n unit` or `WITHIN (before, after)`, with an optional grace period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WithinExpr {
    pub before: Duration,
    /// Set when the window is asymmetric: `WITHIN (before, after)`.
    pub after: Option<Duration>,
    pub grace: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowExpr {
    /// ksqlDB lets a window be named (`WINDOW w TUMBLING (...)`); the name has no effect.
    pub name: Option<Ident>,
    pub kind: WindowKind,
    pub retention: Option<Duration>,
    pub grace: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowKind {
    Tumbling { size: Duration },
    Hopping { size: Duration, advance: Duration },
    Session { gap: Duration },
}

/// A time span as ksqlDB writes it: `30 SECONDS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Duration {
    pub value: u64,
    pub unit: TimeUnit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeUnit {
    Milliseconds,
    Seconds,
    Minutes,
    Hours,
    Days,
}

impl TimeUnit {
    /// Accepts the singular and plural spellings ksqlDB accepts.
    pub fn from_word(word: &str) -> Option<TimeUnit> {
        Some(match word {
            "MILLISECOND" | "MILLISECONDS" => TimeUnit::Milliseconds,
            "SECOND" | "SECONDS" => TimeUnit::Seconds,
            "MINUTE" | "MINUTES" => TimeUnit::Minutes,
            "HOUR" | "HOURS" => TimeUnit::Hours,
            "DAY" | "DAYS" => TimeUnit::Days,
            _ => return None,
        })
    }

    pub fn millis(self) -> u64 {
        match self {
            TimeUnit::Milliseconds => 1,
            TimeUnit::Seconds => 1_000,
            TimeUnit::Minutes => 60_000,
            TimeUnit::Hours => 3_600_000,
            TimeUnit::Days => 86_400_000,
        }
    }
}

impl Duration {
    /// The span in milliseconds, saturating rather than overflowing on absurd inputs.
    pub fn as_millis(&self) -> u64 {
        self.value.saturating_mul(self.unit.millis())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emit {
    /// `EMIT CHANGES`: every change, as it happens (push queries, persistent queries).
    Changes,
    /// `EMIT FINAL`: one result per window, once it closes.
    Final,
}

impl fmt::Display for TimeUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeUnit::Milliseconds => "MILLISECONDS",
            TimeUnit::Seconds => "SECONDS",
            TimeUnit::Minutes => "MINUTES",
            TimeUnit::Hours => "HOURS",
            TimeUnit::Days => "DAYS",
        })
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.value, self.unit)
    }
}

impl fmt::Display for WindowExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(n) = &self.name {
            write!(f, "{} ", fmt_ident(n))?;
        }
        match &self.kind {
            WindowKind::Tumbling { size } => write!(f, "TUMBLING (SIZE {size}")?,
            WindowKind::Hopping { size, advance } => {
                write!(f, "HOPPING (SIZE {size}, ADVANCE BY {advance}")?
            }
            WindowKind::Session { gap } => write!(f, "SESSION ({gap}")?,
        }
        if let Some(r) = &self.retention {
            write!(f, ", RETENTION {r}")?;
        }
        if let Some(g) = &self.grace {
            write!(f, ", GRACE PERIOD {g}")?;
        }
        f.write_str(")")
    }
}

impl fmt::Display for WithinExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.after {
            Some(after) => write!(f, "({}, {after})", self.before)?,
            None => write!(f, "{}", self.before)?,
        }
        if let Some(g) = &self.grace {
            write!(f, " GRACE PERIOD {g}")?;
        }
        Ok(())
    }
}

impl fmt::Display for AliasedSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", fmt_ident(&self.name))?;
        if let Some(a) = &self.alias {
            write!(f, " {}", fmt_ident(a))?;
        }
        Ok(())
    }
}

impl fmt::Display for JoinKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JoinKind::Inner => "INNER JOIN",
            JoinKind::Left => "LEFT OUTER JOIN",
            JoinKind::Right => "RIGHT OUTER JOIN",
            JoinKind::Full => "FULL OUTER JOIN",
        })
    }
}

impl fmt::Display for Relation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source)?;
        for j in &self.joins {
            write!(f, " {} {}", j.kind, j.source)?;
            if let Some(w) = &j.within {
                write!(f, " WITHIN {w}")?;
            }
            write!(f, " ON {}", fmt_expr(&j.on))?;
        }
        Ok(())
    }
}

impl fmt::Display for SelectItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SelectItem::Wildcard => f.write_str("*"),
            SelectItem::QualifiedWildcard(s) => write!(f, "{}.*", fmt_ident(s)),
            SelectItem::Expr { expr, alias } => {
                write!(f, "{}", fmt_expr(expr))?;
                if let Some(a) = alias {
                    write!(f, " AS {}", fmt_ident(a))?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SELECT {} FROM {}", comma_list(&self.select), self.from)?;
        if let Some(w) = &self.window {
            write!(f, " WINDOW {w}")?;
        }
        if let Some(w) = &self.where_clause {
            write!(f, " WHERE {}", fmt_expr(w))?;
        }
        if let Some(g) = &self.group_by {
            write!(f, " GROUP BY {}", grouping(g))?;
        }
        if let Some(p) = &self.partition_by {
            write!(f, " PARTITION BY {}", grouping(p))?;
        }
        if let Some(h) = &self.having {
            write!(f, " HAVING {}", fmt_expr(h))?;
        }
        match self.emit {
            Some(Emit::Changes) => f.write_str(" EMIT CHANGES")?,
            Some(Emit::Final) => f.write_str(" EMIT FINAL")?,
            None => {}
        }
        if let Some(l) = self.limit {
            write!(f, " LIMIT {l}")?;
        }
        Ok(())
    }
}

fn grouping(exprs: &[Expr]) -> String {
    if exprs.is_empty() {
        "()".to_string()
    } else {
        exprs
            .iter()
            .map(|e| fmt_expr(e).to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}
