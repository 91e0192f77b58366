//! Prints sqlparser expressions the way ksqlDB writes them: `->` for struct fields, `=>`
//! lambdas, `:=` in STRUCT/MAP constructors, ksqlDB type names in CAST, and every operator
//! application in parentheses (ksqlDB's own formatter does the same, and it makes the
//! printed form independent of precedence rules).
//!
//! Only the forms the parser accepts are printed specially; the parser rejects the rest,
//! so the fallback to sqlparser's own `Display` is for completeness, not a path taken.

use std::fmt;

use sqlparser::ast::{
    AccessExpr, BinaryOperator, Expr, FunctionArg, FunctionArgExpr, FunctionArguments,
    LambdaFunction, OneOrManyWithParens, Subscript, UnaryOperator, Value,
};

use super::types::SqlType;
use super::{fmt_ident, fmt_string};

/// Wraps an expression so that `Display` prints it as ksqlDB SQL.
pub fn fmt_expr(expr: &Expr) -> impl fmt::Display + '_ {
    KsqlExpr(expr)
}

struct KsqlExpr<'a>(&'a Expr);

impl fmt::Display for KsqlExpr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_expr(f, self.0)
    }
}

fn list(f: &mut fmt::Formatter<'_>, exprs: &[Expr]) -> fmt::Result {
    for (i, e) in exprs.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write_expr(f, e)?;
    }
    Ok(())
}

fn write_value(f: &mut fmt::Formatter<'_>, v: &Value) -> fmt::Result {
    match v {
        Value::Number(n, _) => write!(f, "{n}"),
        Value::SingleQuotedString(s) => f.write_str(&fmt_string(s)),
        Value::Boolean(true) => f.write_str("true"),
        Value::Boolean(false) => f.write_str("false"),
        Value::Null => f.write_str("null"),
        other => write!(f, "{other}"),
    }
}

fn write_type(f: &mut fmt::Formatter<'_>, dt: &sqlparser::ast::DataType) -> fmt::Result {
    match SqlType::from_data_type(dt) {
        Some(t) => write!(f, "{t}"),
        None => write!(f, "{dt}"),
    }
}

// Trees are as deep as operator chains are long; grow the stack rather than overflow.
#[recursive::recursive]
fn write_expr(f: &mut fmt::Formatter<'_>, expr: &Expr) -> fmt::Result {
    match expr {
        Expr::Identifier(id) => write!(f, "{}", fmt_ident(id)),
        Expr::CompoundIdentifier(parts) => {
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    f.write_str(".")?;
                }
                write!(f, "{}", fmt_ident(p))?;
            }
            Ok(())
        }
        Expr::CompoundFieldAccess { root, access_chain } => {
            write_expr(f, root)?;
            for access in access_chain {
                match access {
                    AccessExpr::Subscript(Subscript::Index { index }) => {
                        f.write_str("[")?;
                        write_expr(f, index)?;
                        f.write_str("]")?;
                    }
                    AccessExpr::Subscript(s) => write!(f, "[{s}]")?,
                    AccessExpr::Dot(e) => {
                        f.write_str(".")?;
                        write_expr(f, e)?;
                    }
                }
            }
            Ok(())
        }
        Expr::Wildcard(_) => f.write_str("*"),
        Expr::Value(v) => write_value(f, &v.value),
        Expr::TypedString(ts) => {
            write_type(f, &ts.data_type)?;
            f.write_str(" ")?;
            write_value(f, &ts.value.value)
        }
        Expr::Nested(e) => write_expr(f, e),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Arrow,
            right,
        } => {
            write_expr(f, left)?;
            f.write_str("->")?;
            write_expr(f, right)
        }
        Expr::BinaryOp { left, op, right } => {
            f.write_str("(")?;
            write_left_operand(f, left, op)?;
            write!(f, " {op} ")?;
            write_expr(f, right)?;
            f.write_str(")")
        }
        Expr::UnaryOp {
            op: UnaryOperator::Not,
            expr,
        } => {
            f.write_str("(NOT ")?;
            write_expr(f, expr)?;
            f.write_str(")")
        }
        Expr::UnaryOp { op, expr } => {
            write!(f, "{op}")?;
            // `- -1` must not print as the comment `--1`.
            if matches!(**expr, Expr::UnaryOp { .. }) {
                f.write_str("(")?;
                write_expr(f, expr)?;
                f.write_str(")")
            } else {
                write_expr(f, expr)
            }
        }
        Expr::Cast {
            expr, data_type, ..
        } => {
            f.write_str("CAST(")?;
            write_expr(f, expr)?;
            f.write_str(" AS ")?;
            write_type(f, data_type)?;
            f.write_str(")")
        }
        Expr::Case {
            operand,
            conditions,
            else_result,
            ..
        } => {
            f.write_str("CASE")?;
            if let Some(op) = operand {
                f.write_str(" ")?;
                write_expr(f, op)?;
            }
            for c in conditions {
                f.write_str(" WHEN ")?;
                write_expr(f, &c.condition)?;
                f.write_str(" THEN ")?;
                write_expr(f, &c.result)?;
            }
            if let Some(e) = else_result {
                f.write_str(" ELSE ")?;
                write_expr(f, e)?;
            }
            f.write_str(" END")
        }
        Expr::Between {
            expr,
            negated,
            low,
            high,
        } => {
            f.write_str("(")?;
            write_expr(f, expr)?;
            f.write_str(if *negated {
                " NOT BETWEEN "
            } else {
                " BETWEEN "
            })?;
            write_expr(f, low)?;
            f.write_str(" AND ")?;
            write_expr(f, high)?;
            f.write_str(")")
        }
        Expr::InList {
            expr,
            list: items,
            negated,
        } => {
            f.write_str("(")?;
            write_expr(f, expr)?;
            f.write_str(if *negated { " NOT IN (" } else { " IN (" })?;
            list(f, items)?;
            f.write_str("))")
        }
        Expr::Like {
            negated,
            expr,
            pattern,
            escape_char,
            ..
        } => {
            f.write_str("(")?;
            write_expr(f, expr)?;
            f.write_str(if *negated { " NOT LIKE " } else { " LIKE " })?;
            write_expr(f, pattern)?;
            if let Some(esc) = escape_char {
                f.write_str(" ESCAPE ")?;
                write_value(f, &esc.value)?;
            }
            f.write_str(")")
        }
        Expr::IsNull(e) => postfix(f, e, " IS NULL"),
        Expr::IsNotNull(e) => postfix(f, e, " IS NOT NULL"),
        Expr::IsDistinctFrom(a, b) | Expr::IsNotDistinctFrom(a, b) => {
            f.write_str("(")?;
            write_expr(f, a)?;
            f.write_str(if matches!(expr, Expr::IsDistinctFrom(..)) {
                " IS DISTINCT FROM "
            } else {
                " IS NOT DISTINCT FROM "
            })?;
            write_expr(f, b)?;
            f.write_str(")")
        }
        Expr::Array(arr) => {
            f.write_str("ARRAY[")?;
            list(f, &arr.elem)?;
            f.write_str("]")
        }
        Expr::Lambda(l) => write_lambda(f, l),
        Expr::Function(func) => {
            for (i, part) in func.name.0.iter().enumerate() {
                if i > 0 {
                    f.write_str(".")?;
                }
                match part.as_ident() {
                    Some(id) => write!(f, "{}", fmt_ident(id))?,
                    None => write!(f, "{part}")?,
                }
            }
            match &func.args {
                FunctionArguments::None => Ok(()),
                FunctionArguments::List(args) => {
                    f.write_str("(")?;
                    for (i, arg) in args.args.iter().enumerate() {
                        if i > 0 {
                            f.write_str(", ")?;
                        }
                        match arg {
                            FunctionArg::Unnamed(a) => write_arg(f, a)?,
                            FunctionArg::Named { name, arg, .. } => {
                                write!(f, "{} := ", fmt_ident(name))?;
                                write_arg(f, arg)?;
                            }
                            FunctionArg::ExprNamed { name, arg, .. } => {
                                write_expr(f, name)?;
                                f.write_str(" := ")?;
                                write_arg(f, arg)?;
                            }
                        }
                    }
                    f.write_str(")")
                }
                other => write!(f, "{other}"),
            }
        }
        other => write!(f, "{other}"),
    }
}

/// True when `inner` applied on the left of `outer` prints without its own parentheses:
/// both are left-associative operators of one precedence level, so `(A + B - C)` parses
/// back to `((A + B) - C)`. A long chain thus prints flat instead of nesting deeper than
/// the parser's recursion limit.
pub(crate) fn chains_with(inner: &BinaryOperator, outer: &BinaryOperator) -> bool {
    use BinaryOperator::*;
    let level = |op: &BinaryOperator| match op {
        Or => Some(1),
        And => Some(2),
        StringConcat => Some(3),
        Plus | Minus => Some(4),
        Multiply | Divide | Modulo => Some(5),
        _ => None,
    };
    level(inner).is_some() && level(inner) == level(outer)
}

#[recursive::recursive]
fn write_left_operand(f: &mut fmt::Formatter<'_>, left: &Expr, op: &BinaryOperator) -> fmt::Result {
    match left {
        Expr::BinaryOp {
            left: inner,
            op: inner_op,
            right,
        } if chains_with(inner_op, op) => {
            write_left_operand(f, inner, inner_op)?;
            write!(f, " {inner_op} ")?;
            write_expr(f, right)
        }
        other => write_expr(f, other),
    }
}

fn postfix(f: &mut fmt::Formatter<'_>, e: &Expr, suffix: &str) -> fmt::Result {
    f.write_str("(")?;
    write_expr(f, e)?;
    f.write_str(suffix)?;
    f.write_str(")")
}

fn write_arg(f: &mut fmt::Formatter<'_>, arg: &FunctionArgExpr) -> fmt::Result {
    match arg {
        FunctionArgExpr::Expr(e) => write_expr(f, e),
        FunctionArgExpr::Wildcard => f.write_str("*"),
        other => write!(f, "{other}"),
    }
}

fn write_lambda(f: &mut fmt::Formatter<'_>, l: &LambdaFunction) -> fmt::Result {
    match &l.params {
        OneOrManyWithParens::One(p) => write!(f, "{}", fmt_ident(&p.name))?,
        OneOrManyWithParens::Many(ps) => {
            f.write_str("(")?;
            for (i, p) in ps.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{}", fmt_ident(&p.name))?;
            }
            f.write_str(")")?;
        }
    }
    f.write_str(" => ")?;
    write_expr(f, &l.body)
}
