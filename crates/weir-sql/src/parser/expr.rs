//! Finishes an expression sqlparser has parsed: refuses what ksqlDB's grammar does not
//! have (subqueries, `::` casts, `IS TRUE`, ...), checks numeric literals fit their type,
//! and normalizes the tree (parentheses dropped, `src.col[1]` as a qualified column with a
//! subscript) so that equal SQL gives equal trees.

use sqlparser::ast::{
    AccessExpr, BinaryOperator, CastKind, DataType, Expr, FunctionArg, FunctionArgExpr,
    FunctionArguments, Spanned, Subscript, UnaryOperator, Value,
};

use crate::ast::chains_with;
use crate::error::{ParseError, Position};

/// How deeply an expression may nest, counting as canonical printing does (a chain such
/// as `a OR b OR c` is one level). The printed form then always reads back within the
/// parser's recursion limit: each level costs it at most two.
pub const MAX_NESTING: usize = 32;

pub(crate) fn finish_expr(e: Expr, fallback: Position) -> Result<Expr, ParseError> {
    let f = Finisher { fallback };
    let e = f.expr(e)?;
    let depth = printed_depth(&e);
    if depth > MAX_NESTING {
        return Err(ParseError::new(
            f.pos(&e),
            format!("Expression nests {depth} levels deep, more than the {MAX_NESTING} allowed"),
        ));
    }
    Ok(e)
}

/// Nesting depth of the canonical printed form of a finished expression.
#[recursive::recursive]
fn printed_depth(e: &Expr) -> usize {
    let max = |es: &mut dyn Iterator<Item = &Expr>| es.map(printed_depth).max().unwrap_or(0);
    1 + match e {
        Expr::BinaryOp { left, op, right } => {
            // The left spine of a chain prints flat.
            let mut spine = &**left;
            let mut depth = printed_depth(right);
            let mut outer = op;
            while let Expr::BinaryOp {
                left: l,
                op: inner,
                right: r,
            } = spine
            {
                if !chains_with(inner, outer) {
                    break;
                }
                depth = depth.max(printed_depth(r));
                spine = l;
                outer = inner;
            }
            depth.max(printed_depth(spine))
        }
        Expr::UnaryOp { expr, .. }
        | Expr::IsNull(expr)
        | Expr::IsNotNull(expr)
        | Expr::Cast { expr, .. } => printed_depth(expr),
        Expr::IsDistinctFrom(a, b) | Expr::IsNotDistinctFrom(a, b) => {
            printed_depth(a).max(printed_depth(b))
        }
        Expr::Between {
            expr, low, high, ..
        } => max(&mut [&**expr, &**low, &**high].into_iter()),
        Expr::InList { expr, list, .. } => printed_depth(expr).max(max(&mut list.iter())),
        Expr::Like { expr, pattern, .. } => printed_depth(expr).max(printed_depth(pattern)),
        Expr::Case {
            operand,
            conditions,
            else_result,
            ..
        } => max(&mut operand
            .iter()
            .map(|o| &**o)
            .chain(conditions.iter().flat_map(|c| [&c.condition, &c.result]))
            .chain(else_result.iter().map(|o| &**o))),
        Expr::Array(a) => max(&mut a.elem.iter()),
        Expr::Lambda(l) => printed_depth(&l.body),
        Expr::Function(f) => match &f.args {
            FunctionArguments::List(list) => max(&mut list.args.iter().flat_map(|a| {
                let (name, arg) = match a {
                    FunctionArg::Unnamed(arg) | FunctionArg::Named { arg, .. } => (None, arg),
                    FunctionArg::ExprNamed { name, arg, .. } => (Some(name), arg),
                };
                let arg = match arg {
                    FunctionArgExpr::Expr(e) => Some(e),
                    _ => None,
                };
                name.into_iter().chain(arg)
            })),
            _ => 0,
        },
        Expr::CompoundFieldAccess { root, access_chain } => {
            let subscripts = access_chain.iter().filter_map(|a| match a {
                AccessExpr::Subscript(Subscript::Index { index }) => Some(index),
                _ => None,
            });
            printed_depth(root).max(max(&mut subscripts.into_iter()))
        }
        _ => 0,
    }
}

/// True for the forms ksqlDB calls boolean expressions and predicates, which GROUP BY and
/// PARTITION BY do not take unparenthesized (`GROUP BY a AND b` is a syntax error there).
pub(crate) fn is_predicate(e: &Expr) -> bool {
    use BinaryOperator::*;
    match e {
        Expr::BinaryOp { op, .. } => matches!(op, And | Or | Eq | NotEq | Lt | LtEq | Gt | GtEq),
        Expr::UnaryOp {
            op: UnaryOperator::Not,
            ..
        } => true,
        Expr::Between { .. }
        | Expr::InList { .. }
        | Expr::Like { .. }
        | Expr::IsNull(_)
        | Expr::IsNotNull(_)
        | Expr::IsDistinctFrom(..)
        | Expr::IsNotDistinctFrom(..) => true,
        _ => false,
    }
}

struct Finisher {
    fallback: Position,
}

impl Finisher {
    fn pos(&self, e: &Expr) -> Position {
        let start = e.span().start;
        if start.line == 0 {
            self.fallback
        } else {
            start.into()
        }
    }

    fn unsupported(&self, e: &Expr, what: &str) -> ParseError {
        ParseError::new(
            self.pos(e),
            format!("{what} is not supported in ksqlDB SQL: {e}"),
        )
    }

    fn boxed(&self, e: Box<Expr>) -> Result<Box<Expr>, ParseError> {
        Ok(Box::new(self.expr(*e)?))
    }

    fn exprs(&self, es: Vec<Expr>) -> Result<Vec<Expr>, ParseError> {
        es.into_iter().map(|e| self.expr(e)).collect()
    }

    fn check_number(&self, e: &Expr, n: &str, negative: bool) -> Result<(), ParseError> {
        let written = if negative {
            format!("-{n}")
        } else {
            n.to_string()
        };
        if n.contains(['.', 'e', 'E']) {
            match n.parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(()),
                _ => Err(ParseError::new(
                    self.pos(e),
                    format!("Number overflows DOUBLE: {written}"),
                )),
            }
        } else {
            let limit: u128 = if negative { 1 << 63 } else { (1 << 63) - 1 };
            match n.parse::<u128>() {
                Ok(v) if v <= limit => Ok(()),
                _ => Err(ParseError::new(
                    self.pos(e),
                    format!("Invalid numeric literal: {written}"),
                )),
            }
        }
    }

    fn value(&self, e: &Expr, v: &Value, negative: bool) -> Result<(), ParseError> {
        match v {
            Value::Number(n, _) => self.check_number(e, n, negative),
            Value::SingleQuotedString(_) | Value::Boolean(_) | Value::Null => Ok(()),
            _ => Err(self.unsupported(e, "This literal")),
        }
    }

    // Trees are as deep as operator chains are long; grow the stack rather than overflow.
    #[recursive::recursive]
    fn expr(&self, e: Expr) -> Result<Expr, ParseError> {
        Ok(match e {
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) => e,
            Expr::Value(ref v) => {
                self.value(&e, &v.value, false)?;
                e
            }
            Expr::TypedString(ref ts) => {
                let temporal = matches!(
                    ts.data_type,
                    DataType::Date | DataType::Time(..) | DataType::Timestamp(..)
                );
                if !temporal || !matches!(ts.value.value, Value::SingleQuotedString(_)) {
                    return Err(self.unsupported(&e, "This typed literal"));
                }
                e
            }
            Expr::Nested(inner) => self.expr(*inner)?,
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Arrow,
                right,
            } => {
                if !matches!(*right, Expr::Identifier(_) | Expr::Wildcard(_)) {
                    return Err(self.unsupported(&right, "A field reference"));
                }
                Expr::BinaryOp {
                    left: self.boxed(left)?,
                    op: BinaryOperator::Arrow,
                    right,
                }
            }
            Expr::BinaryOp { left, op, right } => {
                use BinaryOperator::*;
                if !matches!(
                    op,
                    Plus | Minus
                        | Multiply
                        | Divide
                        | Modulo
                        | Eq
                        | NotEq
                        | Lt
                        | LtEq
                        | Gt
                        | GtEq
                        | And
                        | Or
                        | StringConcat
                ) {
                    let e = Expr::BinaryOp { left, op, right };
                    return Err(self.unsupported(&e, "This operator"));
                }
                Expr::BinaryOp {
                    left: self.boxed(left)?,
                    op,
                    right: self.boxed(right)?,
                }
            }
            Expr::UnaryOp {
                op: UnaryOperator::Minus,
                expr,
            } if matches!(&*expr, Expr::Value(v) if matches!(v.value, Value::Number(..))) => {
                if let Expr::Value(v) = &*expr {
                    self.value(&expr, &v.value, true)?;
                }
                Expr::UnaryOp {
                    op: UnaryOperator::Minus,
                    expr,
                }
            }
            Expr::UnaryOp { op, expr } => {
                if !matches!(
                    op,
                    UnaryOperator::Minus | UnaryOperator::Plus | UnaryOperator::Not
                ) {
                    let e = Expr::UnaryOp { op, expr };
                    return Err(self.unsupported(&e, "This operator"));
                }
                Expr::UnaryOp {
                    op,
                    expr: self.boxed(expr)?,
                }
            }
            Expr::Cast {
                kind: CastKind::Cast,
                expr,
                data_type,
                array,
                format: None,
            } => Expr::Cast {
                kind: CastKind::Cast,
                expr: self.boxed(expr)?,
                data_type,
                array,
                format: None,
            },
            Expr::Case {
                case_token,
                end_token,
                operand,
                conditions,
                else_result,
            } => Expr::Case {
                case_token,
                end_token,
                operand: operand.map(|o| self.boxed(o)).transpose()?,
                conditions: conditions
                    .into_iter()
                    .map(|mut c| {
                        c.condition = self.expr(c.condition)?;
                        c.result = self.expr(c.result)?;
                        Ok(c)
                    })
                    .collect::<Result<_, ParseError>>()?,
                else_result: else_result.map(|o| self.boxed(o)).transpose()?,
            },
            Expr::Between {
                expr,
                negated,
                low,
                high,
            } => Expr::Between {
                expr: self.boxed(expr)?,
                negated,
                low: self.boxed(low)?,
                high: self.boxed(high)?,
            },
            Expr::InList {
                expr,
                list,
                negated,
            } => Expr::InList {
                expr: self.boxed(expr)?,
                list: self.exprs(list)?,
                negated,
            },
            Expr::Like {
                negated,
                any: false,
                expr,
                pattern,
                escape_char,
            } => {
                if let Some(esc) = &escape_char
                    && !matches!(&esc.value, Value::SingleQuotedString(s) if s.chars().count() == 1)
                {
                    return Err(ParseError::new(
                        self.pos(&expr),
                        "ESCAPE takes a single character in quotes",
                    ));
                }
                Expr::Like {
                    negated,
                    any: false,
                    expr: self.boxed(expr)?,
                    pattern: self.boxed(pattern)?,
                    escape_char,
                }
            }
            Expr::IsNull(x) => Expr::IsNull(self.boxed(x)?),
            Expr::IsNotNull(x) => Expr::IsNotNull(self.boxed(x)?),
            Expr::IsDistinctFrom(a, b) => Expr::IsDistinctFrom(self.boxed(a)?, self.boxed(b)?),
            Expr::IsNotDistinctFrom(a, b) => {
                Expr::IsNotDistinctFrom(self.boxed(a)?, self.boxed(b)?)
            }
            Expr::Array(mut arr) if arr.named => {
                arr.elem = self.exprs(arr.elem)?;
                Expr::Array(arr)
            }
            Expr::Lambda(mut l) => {
                l.body = self.boxed(l.body)?;
                Expr::Lambda(l)
            }
            Expr::Function(mut f)
                if f.over.is_none() && f.filter.is_none() && f.within_group.is_empty() =>
            {
                match f.args {
                    FunctionArguments::List(mut list)
                        if list.duplicate_treatment.is_none() && list.clauses.is_empty() =>
                    {
                        list.args = list
                            .args
                            .into_iter()
                            .map(|a| self.arg(a))
                            .collect::<Result<_, _>>()?;
                        f.args = FunctionArguments::List(list);
                    }
                    FunctionArguments::None => {}
                    other => {
                        f.args = other;
                        let e = Expr::Function(f);
                        return Err(self.unsupported(&e, "This form of function call"));
                    }
                }
                Expr::Function(f)
            }
            Expr::CompoundFieldAccess { root, access_chain } => {
                self.field_access(*root, access_chain)?
            }
            other => return Err(self.unsupported(&other, "This expression")),
        })
    }

    fn arg(&self, a: FunctionArg) -> Result<FunctionArg, ParseError> {
        let fin = |x: FunctionArgExpr| -> Result<FunctionArgExpr, ParseError> {
            Ok(match x {
                FunctionArgExpr::Expr(e) => FunctionArgExpr::Expr(self.expr(e)?),
                other => other,
            })
        };
        Ok(match a {
            FunctionArg::Unnamed(x) => FunctionArg::Unnamed(fin(x)?),
            FunctionArg::Named {
                name,
                arg,
                operator,
            } => FunctionArg::Named {
                name,
                arg: fin(arg)?,
                operator,
            },
            FunctionArg::ExprNamed {
                name,
                arg,
                operator,
            } => FunctionArg::ExprNamed {
                name: self.expr(name)?,
                arg: fin(arg)?,
                operator,
            },
        })
    }

    /// `a.b[1]` arrives as `a` with the chain `.b`, `[1]`: the leading names are a
    /// qualified column (`CompoundIdentifier`), the rest subscripts.
    fn field_access(&self, root: Expr, chain: Vec<AccessExpr>) -> Result<Expr, ParseError> {
        let mut root = self.expr(root)?;
        let mut rest = Vec::new();
        for access in chain {
            match access {
                AccessExpr::Dot(Expr::Identifier(id)) if rest.is_empty() => {
                    root = match root {
                        Expr::Identifier(first) => Expr::CompoundIdentifier(vec![first, id]),
                        Expr::CompoundIdentifier(mut parts) => {
                            parts.push(id);
                            Expr::CompoundIdentifier(parts)
                        }
                        other => {
                            let e = Expr::CompoundFieldAccess {
                                root: Box::new(other),
                                access_chain: vec![AccessExpr::Dot(Expr::Identifier(id))],
                            };
                            return Err(self.unsupported(&e, "'.' field access (use '->')"));
                        }
                    };
                }
                AccessExpr::Subscript(Subscript::Index { index }) => {
                    rest.push(AccessExpr::Subscript(Subscript::Index {
                        index: self.expr(index)?,
                    }));
                }
                other => {
                    let e = Expr::CompoundFieldAccess {
                        root: Box::new(root),
                        access_chain: vec![other],
                    };
                    return Err(self.unsupported(&e, "This kind of element access"));
                }
            }
        }
        Ok(if rest.is_empty() {
            root
        } else {
            Expr::CompoundFieldAccess {
                root: Box::new(root),
                access_chain: rest,
            }
        })
    }
}
