//! Plans a SELECT over one source into what runs per batch: a filter and projections as
//! DataFusion physical expressions, compiled once; and the sink's record layout, with
//! ksqlDB's rule that the source's key columns, selected, stay the key.

use std::ops::ControlFlow;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::sql::planner::{ParserOptions, PlannerContext, SqlToRel};
use weir_format::{Column, Layout, PSEUDO_COLUMNS};
use weir_sql::ast::{Expr, Query, SelectItem, fmt_expr};
use weir_sql::sqlparser::ast::{
    self as sql, BinaryOperator, CaseWhen, FunctionArg, FunctionArgExpr, FunctionArguments, Value,
    helpers::attached_token::AttachedToken, visit_expressions_mut,
};

use crate::catalog::Source;
use crate::error::{EngineError, Result};
use crate::functions::Functions;
use crate::types::sql_type_of;

/// A compiled expression and the type it yields.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub expr: Arc<dyn PhysicalExpr>,
    pub data_type: DataType,
}

/// Compiles expressions over a source's decoded batches.
pub struct ExprCompiler<'a> {
    functions: &'a Functions,
    schema: DFSchema,
}

impl<'a> ExprCompiler<'a> {
    pub fn new(functions: &'a Functions, schema: &Schema, qualifier: Option<&str>) -> Result<Self> {
        let schema = match qualifier {
            Some(q) => DFSchema::try_from_qualified_schema(
                datafusion::common::TableReference::bare(q),
                schema,
            )?,
            None => DFSchema::try_from(schema.clone())?,
        };
        Ok(Self { functions, schema })
    }

    pub fn compile(&self, e: &Expr) -> Result<Compiled> {
        self.compile_as(e, false)
    }

    /// An expression whose rows pass where it is true (WHERE, HAVING): a comparison
    /// with NULL that is false or NULL passes nothing either way, so the comparisons
    /// it is made of at its top (and across its ANDs) need no NULL-to-false step.
    pub fn compile_predicate(&self, e: &Expr) -> Result<Compiled> {
        self.compile_as(e, true)
    }

    fn compile_as(&self, e: &Expr, predicate: bool) -> Result<Compiled> {
        let e = &rewrite_time_literals(e.clone())?;
        let e = &self.coerce_in_lists(e.clone())?;
        let e = &self.coerce_constructors(e.clone())?;
        check_ksql_rules(e)?;
        self.check_comparisons(e)?;
        self.check_greatest_least(e)?;
        let e = self.rewrite_string_plus(e.clone());
        let e = self.rewrite_casts(e);
        let e = int_literals(e);
        let e = &null_comparisons_false(e, predicate);
        self.compile_unchecked(e)
    }

    /// ksqlDB concatenates strings with `+`: a `+` whose sides are both strings becomes
    /// `||` (innermost first, so `a + b + c` chains).
    fn rewrite_string_plus(&self, mut e: Expr) -> Expr {
        let is_string = |x: &Expr| {
            self.compile_unchecked(x).is_ok_and(|c| {
                matches!(
                    c.data_type,
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                )
            })
        };
        let _ = weir_sql::sqlparser::ast::visit_expressions_mut(&mut e, |x: &mut Expr| {
            if let Expr::BinaryOp { left, op, right } = x
                && *op == BinaryOperator::Plus
                && is_string(left)
                && is_string(right)
            {
                *op = BinaryOperator::StringConcat;
            }
            ControlFlow::<()>::Continue(())
        });
        e
    }

    /// `x IN (...)` as ksqlDB reads it: each item is read as `x`'s type. A string literal
    /// for a BOOLEAN is parsed (`'tr'`, `'Y'`), a boolean or number literal for a STRING
    /// is its text, a string for a number must be one; constructors are read element by
    /// element, a STRUCT constructor by field name (missing fields NULL; one with a field
    /// `x` lacks can never be equal, and is left out).
    fn coerce_in_lists(&self, mut e: Expr) -> Result<Expr> {
        let mut failure = None;
        let _ = visit_expressions_mut(&mut e, |x: &mut Expr| {
            if let Expr::InList {
                expr,
                list,
                negated,
            } = x
                && let Ok(lhs) = self.compile_unchecked(expr)
            {
                let mut items = Vec::with_capacity(list.len());
                for item in list.drain(..) {
                    match coerce_to(item, &lhs.data_type) {
                        Ok(Some(i)) => items.push(i),
                        Ok(None) => {}
                        Err(m) => {
                            failure = Some(m);
                            return ControlFlow::Break(());
                        }
                    }
                }
                if items.is_empty() {
                    *x = Expr::value(Value::Boolean(*negated));
                } else {
                    *list = items;
                }
            }
            ControlFlow::<()>::Continue(())
        });
        match failure {
            Some(m) => Err(EngineError::Invalid(format!("Invalid Predicate: {m}"))),
            None => Ok(e),
        }
    }

    /// ARRAY[...] and MAP(k := v, ...) constructors with elements of several types, as
    /// ksqlDB types them: the elements' type is the one their expressions (not literals)
    /// share — for STRUCTs, every field any of them has — and literals are read as it
    /// (`'true'` a BOOLEAN, `10` a STRING key `'10'`, `'x'` for a number an error).
    fn coerce_constructors(&self, mut e: Expr) -> Result<Expr> {
        let mut failure = None;
        let _ = visit_expressions_mut(&mut e, |x: &mut Expr| {
            let outcome = match x {
                Expr::Array(a) => self.coerce_elements(a.elem.iter_mut().collect()),
                Expr::Function(f) if f.name.to_string().eq_ignore_ascii_case("MAP") => {
                    match &mut f.args {
                        FunctionArguments::List(l) => {
                            // `k := v` with a name for a key is the column of that name.
                            for a in l.args.iter_mut() {
                                if let FunctionArg::Named {
                                    name,
                                    arg,
                                    operator,
                                } = a
                                {
                                    *a = FunctionArg::ExprNamed {
                                        name: Expr::Identifier(name.clone()),
                                        arg: arg.clone(),
                                        operator: operator.clone(),
                                    };
                                }
                            }
                            let mut keys = Vec::new();
                            let mut values = Vec::new();
                            for a in l.args.iter_mut() {
                                if let FunctionArg::ExprNamed {
                                    name,
                                    arg: FunctionArgExpr::Expr(v),
                                    ..
                                } = a
                                {
                                    keys.push(name);
                                    values.push(v);
                                }
                            }
                            if !keys.is_empty() && keys.iter().all(|k| is_null_literal(k)) {
                                Err("Cannot construct a map with all NULL keys".to_string())
                            } else {
                                self.coerce_elements(keys)
                                    .and_then(|()| self.coerce_elements(values))
                            }
                        }
                        _ => Ok(()),
                    }
                }
                _ => Ok(()),
            };
            if let Err(m) = outcome {
                failure = Some(m);
                return ControlFlow::Break(());
            }
            ControlFlow::<()>::Continue(())
        });
        match failure {
            Some(m) => Err(EngineError::Invalid(m)),
            None => Ok(e),
        }
    }

    /// Reads the elements of one constructor as their common type (see
    /// [`ExprCompiler::coerce_constructors`]); leaves them be when there is none.
    fn coerce_elements(&self, items: Vec<&mut Expr>) -> std::result::Result<(), String> {
        let mut types = Vec::new();
        for i in &items {
            let literal = matches!(i, Expr::Value(_));
            let Ok(c) = self.compile_unchecked(i) else {
                return Ok(());
            };
            types.push((c.data_type, literal));
        }
        let given: Vec<&DataType> = types
            .iter()
            .filter(|(t, literal)| !*literal && *t != DataType::Null)
            .map(|(t, _)| t)
            .collect();
        let target = if given.is_empty() {
            // Literals only: a number among strings makes them numbers.
            let number = items.iter().find_map(|i| match i {
                Expr::Value(v) => match &v.value {
                    Value::Number(n, _) if n.parse::<i32>().is_ok() => Some(DataType::Int32),
                    Value::Number(n, _) if n.parse::<i64>().is_ok() => Some(DataType::Int64),
                    Value::Number(..) => Some(DataType::Float64),
                    _ => None,
                },
                _ => None,
            });
            let strings = items.iter().any(
                |i| matches!(i, Expr::Value(v) if matches!(v.value, Value::SingleQuotedString(_))),
            );
            match (number, strings) {
                (Some(n), true) => n,
                _ => return Ok(()),
            }
        } else if given.iter().all(|t| matches!(t, DataType::Struct(_))) {
            let mut fields: Vec<arrow::datatypes::FieldRef> = Vec::new();
            for t in &given {
                if let DataType::Struct(fs) = t {
                    for f in fs {
                        if !fields.iter().any(|g| g.name() == f.name()) {
                            fields.push(f.clone());
                        }
                    }
                }
            }
            DataType::Struct(fields.into())
        } else if given.windows(2).all(|w| w[0] == w[1]) {
            given[0].clone()
        } else {
            return Ok(());
        };
        let mixed = types
            .iter()
            .any(|(t, _)| *t != target && *t != DataType::Null);
        if !mixed {
            return Ok(());
        }
        for item in items {
            if let Some(c) = coerce_item(item.clone(), &target, true)? {
                *item = c;
            }
        }
        Ok(())
    }

    /// CASTs DataFusion does not plan become `ksql_cast(x, 'type')`: to a type with a MAP
    /// in it, and of a MAP, STRUCT or ARRAY to STRING.
    fn rewrite_casts(&self, mut e: Expr) -> Expr {
        let _ = visit_expressions_mut(&mut e, |x: &mut Expr| {
            if let Expr::Cast {
                expr, data_type, ..
            } = x
                && let Some(target) = weir_sql::ast::SqlType::from_data_type(data_type)
            {
                let has_map = format!("{target}").contains("MAP<");
                let to_string = target == weir_sql::ast::SqlType::String
                    && self.compile_unchecked(expr).is_ok_and(|c| {
                        matches!(
                            c.data_type,
                            DataType::Map(..) | DataType::Struct(_) | DataType::List(_)
                        )
                    });
                if has_map || to_string {
                    let arrow = weir_format::convert::arrow_type(&target);
                    *x = call(
                        "ksql_cast",
                        vec![(**expr).clone(), string_lit(&arrow.to_string())],
                    );
                }
            }
            ControlFlow::<()>::Continue(())
        });
        e
    }

    /// ksqlDB's type rules for comparisons, which DataFusion would coerce past: a number
    /// against a string that is not a numeric literal, a boolean against anything else,
    /// and ordering of ARRAY, MAP or STRUCT values are errors.
    fn check_comparisons(&self, e: &Expr) -> Result<()> {
        let mut comparisons = Vec::new();
        let _ = weir_sql::sqlparser::ast::visit_expressions(e, |x: &Expr| {
            if let Expr::BinaryOp { left, op, right } = x
                && comparison_name(op).is_some()
            {
                comparisons.push(((**left).clone(), op.clone(), (**right).clone()));
            }
            // `x IN (a, b)` compares like `x = a OR x = b`.
            if let Expr::InList { expr, list, .. } = x {
                for item in list {
                    comparisons.push(((**expr).clone(), BinaryOperator::Eq, item.clone()));
                }
            }
            ControlFlow::<()>::Continue(())
        });
        for (left, op, right) in comparisons {
            // A side that does not compile alone (a lambda's parameter) is checked when
            // the whole expression compiles.
            let (Ok(l), Ok(r)) = (
                self.compile_unchecked(&left),
                self.compile_unchecked(&right),
            ) else {
                continue;
            };
            let (lt, rt) = (l.data_type, r.data_type);
            let numeric = |t: &DataType| t.is_numeric();
            let string = |t: &DataType| {
                matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
            };
            let nested = |t: &DataType| {
                matches!(
                    t,
                    DataType::List(_) | DataType::Map(..) | DataType::Struct(_)
                )
            };
            let numeric_literal = |e: &Expr| matches!(e, Expr::Value(v) if matches!(&v.value, Value::SingleQuotedString(s) if s.trim().parse::<f64>().is_ok()));
            let ordering = !matches!(op, BinaryOperator::Eq | BinaryOperator::NotEq);
            let name = |t: &DataType| {
                sql_type_of(t)
                    .map(|t| t.to_string())
                    .unwrap_or_else(|_| t.to_string())
            };
            let refused = (numeric(&lt) && string(&rt) && !numeric_literal(&right))
                || (string(&lt) && numeric(&rt) && !numeric_literal(&left))
                || (lt == DataType::Boolean && (numeric(&rt) || string(&rt)))
                || (rt == DataType::Boolean && (numeric(&lt) || string(&lt)))
                || (ordering && (nested(&lt) || nested(&rt)));
            if refused && lt != DataType::Null && rt != DataType::Null {
                return Err(EngineError::Invalid(format!(
                    "Cannot compare {} ({}) to {} ({}) with {}.",
                    fmt_expr(&left),
                    name(&lt),
                    fmt_expr(&right),
                    name(&rt),
                    comparison_name(&op).unwrap_or_default()
                )));
            }
        }
        Ok(())
    }

    /// ksqlDB resolves GREATEST and LEAST among overloads of one type each (INTEGER,
    /// BIGINT, DOUBLE, DECIMAL, STRING, BYTES, DATE, TIME, TIMESTAMP), with NULL matching
    /// any: arguments of one type pick theirs; numbers of several types pick the one
    /// overload all of them widen to, and are ambiguous where several would do (INTEGER
    /// with BIGINT could be BIGINT, DECIMAL or DOUBLE); anything else is refused.
    /// (An integer literal is an INTEGER, as ksqlDB types it.)
    fn check_greatest_least(&self, e: &Expr) -> Result<()> {
        let mut calls = Vec::new();
        let _ = weir_sql::sqlparser::ast::visit_expressions(e, |x: &Expr| {
            if let Expr::Function(f) = x {
                let name = f.name.to_string().to_ascii_lowercase();
                if (name == "greatest" || name == "least")
                    && let FunctionArguments::List(list) = &f.args
                {
                    let args: Vec<Expr> = list
                        .args
                        .iter()
                        .filter_map(|a| match a {
                            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
                            _ => None,
                        })
                        .collect();
                    calls.push((name, args));
                }
            }
            ControlFlow::<()>::Continue(())
        });
        for (name, args) in calls {
            let mut types = Vec::new();
            for a in &args {
                let is_int_literal = matches!(a, Expr::Value(v) if matches!(&v.value, Value::Number(n, _) if n.parse::<i32>().is_ok()));
                types.push(if is_int_literal {
                    DataType::Int32
                } else {
                    match self.compile_unchecked(a) {
                        Ok(c) => c.data_type,
                        // (Inside a lambda: checked when the whole compiles.)
                        Err(_) => return Ok(()),
                    }
                });
            }
            let shown = || {
                types
                    .iter()
                    .map(|t| {
                        sql_type_of(t)
                            .map(|t| t.to_string())
                            .unwrap_or_else(|_| t.to_string())
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let given: Vec<&DataType> = types.iter().filter(|t| **t != DataType::Null).collect();
            let family = |t: &DataType| match t {
                DataType::Int8 | DataType::Int16 | DataType::Int32 => 0,
                DataType::Int64 => 1,
                DataType::Decimal128(..) | DataType::Decimal256(..) => 2,
                DataType::Float32 | DataType::Float64 => 3,
                _ => 4,
            };
            let numeric: Vec<u8> = given.iter().map(|t| family(t)).collect();
            if args.is_empty()
                || (!given.is_empty() && numeric.contains(&4) && numeric.iter().any(|f| *f < 4))
            {
                return Err(EngineError::Invalid(format!(
                    "Function '{name}' does not accept parameters ({}).",
                    shown()
                )));
            }
            if numeric.iter().all(|f| *f < 4) && numeric.windows(2).any(|w| w[0] != w[1]) {
                // The overloads every argument widens to: BIGINT takes INTEGER, DECIMAL
                // takes both, DOUBLE takes every number.
                let widest = numeric.iter().copied().max().unwrap_or(0);
                let candidates = (widest.max(1)..=3).count();
                if candidates > 1 {
                    return Err(EngineError::Invalid(format!(
                        "Function '{name}' cannot be resolved due to ambiguous method parameters ({}).",
                        shown()
                    )));
                }
            }
        }
        Ok(())
    }

    fn compile_unchecked(&self, e: &Expr) -> Result<Compiled> {
        let e = rewrite_for_datafusion(e.clone());
        let planner = SqlToRel::new_with_options(
            self.functions,
            ParserOptions {
                enable_ident_normalization: false,
                ..Default::default()
            },
        );
        let logical = planner.sql_to_expr(e, &self.schema, &mut PlannerContext::new())?;
        let expr = self
            .functions
            .state()
            .create_physical_expr(logical, &self.schema)?;
        let data_type = expr.data_type(self.schema.as_arrow())?;
        Ok(Compiled { expr, data_type })
    }
}

/// An IN list's item read as type `ty` (see [`ExprCompiler::coerce_in_lists`]): `None`
/// when it can never equal a value of that type.
fn coerce_to(item: Expr, ty: &DataType) -> std::result::Result<Option<Expr>, String> {
    coerce_item(item, ty, false)
}

/// [`coerce_to`]; with `cast_values`, a constructor's element: STRUCT fields given by
/// other expressions are cast to the field's type too (an INT field widened to BIGINT),
/// and a numeric string becomes a number.
fn coerce_item(
    item: Expr,
    ty: &DataType,
    cast_values: bool,
) -> std::result::Result<Option<Expr>, String> {
    let type_name = || {
        sql_type_of(ty)
            .map(|t| t.to_string())
            .unwrap_or_else(|_| ty.to_string())
    };
    let literal = |e: &Expr| match e {
        Expr::Value(v) => Some(v.value.clone()),
        _ => None,
    };
    let cast = |e: Expr, t: &DataType| -> Expr {
        match sql_type_of(t) {
            Ok(st) => Expr::Cast {
                kind: sql::CastKind::Cast,
                expr: Box::new(e),
                data_type: st.to_data_type(),
                array: false,
                format: None,
            },
            Err(_) => e,
        }
    };
    Ok(Some(match (ty, literal(&item)) {
        (DataType::Boolean, Some(Value::SingleQuotedString(s))) => {
            let l = s.trim().to_ascii_lowercase();
            let prefix = |word: &str| !l.is_empty() && word.starts_with(&l);
            let b = if prefix("true") || prefix("yes") {
                true
            } else if prefix("false") || prefix("no") {
                false
            } else {
                return Err(format!("invalid input syntax for type BOOLEAN: \"{s}\"."));
            };
            Expr::value(Value::Boolean(b))
        }
        (DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View, Some(Value::Boolean(b))) => {
            string_lit(&b.to_string())
        }
        (DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View, Some(Value::Number(n, _))) => {
            string_lit(&n)
        }
        (t, Some(Value::SingleQuotedString(s))) if t.is_numeric() => {
            if s.trim().parse::<f64>().is_err() {
                return Err(format!(
                    "invalid input syntax for type {}: \"{s}\".",
                    type_name()
                ));
            }
            if cast_values { cast(item, t) } else { item }
        }
        (DataType::List(f), None) => match item {
            Expr::Array(mut a) => {
                for el in a.elem.iter_mut() {
                    if let Some(c) = coerce_item(el.clone(), f.data_type(), cast_values)? {
                        *el = c;
                    }
                }
                Expr::Array(a)
            }
            other => other,
        },
        (DataType::Map(entries, _), None) => match item {
            Expr::Function(mut func) if func.name.to_string().eq_ignore_ascii_case("MAP") => {
                let value_type = match entries.data_type() {
                    DataType::Struct(fs) if fs.len() == 2 => fs[1].data_type().clone(),
                    _ => return Ok(Some(Expr::Function(func))),
                };
                if let FunctionArguments::List(l) = &mut func.args {
                    for a in l.args.iter_mut() {
                        if let FunctionArg::Named {
                            arg: FunctionArgExpr::Expr(v),
                            ..
                        }
                        | FunctionArg::ExprNamed {
                            arg: FunctionArgExpr::Expr(v),
                            ..
                        } = a
                            && let Some(c) = coerce_item(v.clone(), &value_type, cast_values)?
                        {
                            *v = c;
                        }
                    }
                }
                Expr::Function(func)
            }
            other => other,
        },
        (DataType::Struct(fields), None) => match item {
            Expr::Function(func) if func.name.to_string().eq_ignore_ascii_case("STRUCT") => {
                let FunctionArguments::List(l) = &func.args else {
                    return Ok(Some(Expr::Function(func)));
                };
                let mut given = Vec::new();
                for a in &l.args {
                    match a {
                        FunctionArg::Named {
                            name,
                            arg: FunctionArgExpr::Expr(v),
                            ..
                        } => given.push((name.value.clone(), v.clone())),
                        _ => return Ok(Some(Expr::Function(func))),
                    }
                }
                if given
                    .iter()
                    .any(|(n, _)| !fields.iter().any(|f| f.name() == n))
                {
                    return Ok(None);
                }
                let mut args = Vec::new();
                for f in fields.iter() {
                    let value = match given.iter().find(|(n, _)| n == f.name()) {
                        Some((_, v)) => coerce_item(v.clone(), f.data_type(), cast_values)?
                            .unwrap_or_else(|| Expr::value(Value::Null)),
                        None => Expr::value(Value::Null),
                    };
                    // Literals take the field's type; other values must have it.
                    let value = match value {
                        v @ Expr::Value(_) => cast(v, f.data_type()),
                        v if cast_values => cast(v, f.data_type()),
                        v => v,
                    };
                    args.push(FunctionArg::Named {
                        name: sql::Ident::with_quote('`', f.name()),
                        arg: FunctionArgExpr::Expr(value),
                        operator: sql::FunctionArgOperator::Assignment,
                    });
                }
                let mut func = func.clone();
                func.args = FunctionArguments::List(sql::FunctionArgumentList {
                    duplicate_treatment: None,
                    args,
                    clauses: vec![],
                });
                Expr::Function(func)
            }
            other => other,
        },
        _ => item,
    }))
}

/// ksqlDB types an integer literal that fits 32 bits as INTEGER (`1 AS I` is an INTEGER
/// column, `x + 1` keeps `x`'s INTEGER); DataFusion would make it BIGINT.
fn int_literals(mut e: Expr) -> Expr {
    let _ = visit_expressions_mut(&mut e, |x: &mut Expr| {
        if let Expr::Value(v) = x
            && let Value::Number(n, _) = &v.value
            && n.parse::<i32>().is_ok()
        {
            *x = Expr::Cast {
                kind: sql::CastKind::Cast,
                expr: Box::new(x.clone()),
                data_type: sql::DataType::Integer(None),
                array: false,
                format: None,
            };
        }
        ControlFlow::<()>::Continue(())
    });
    e
}

/// ksqlDB's comparisons are false, not NULL, when a side is NULL (`NOT (x = 1)` is
/// true for a NULL `x`): each comparison becomes `coalesce(comparison, false)`, except
/// where `predicate` says a NULL would be dropped like a false (the top of a WHERE and
/// the sides of its ANDs).
fn null_comparisons_false(e: Expr, predicate: bool) -> Expr {
    fn wrap_all(mut e: Expr) -> Expr {
        let _ = visit_expressions_mut(&mut e, |x: &mut Expr| {
            if let Expr::BinaryOp { op, .. } = x
                && comparison_name(op).is_some()
            {
                let inner = std::mem::replace(x, Expr::value(Value::Null));
                *x = call("coalesce", vec![inner, Expr::value(Value::Boolean(false))]);
            }
            ControlFlow::<()>::Continue(())
        });
        e
    }
    if !predicate {
        return wrap_all(e);
    }
    match e {
        Expr::BinaryOp { left, op, right } if op == BinaryOperator::And => Expr::BinaryOp {
            left: Box::new(null_comparisons_false(*left, true)),
            op,
            right: Box::new(null_comparisons_false(*right, true)),
        },
        Expr::BinaryOp { left, op, right } if comparison_name(&op).is_some() => Expr::BinaryOp {
            left: Box::new(wrap_all(*left)),
            op,
            right: Box::new(wrap_all(*right)),
        },
        Expr::Nested(inner) => Expr::Nested(Box::new(null_comparisons_false(*inner, true))),
        other => wrap_all(other),
    }
}

fn call(name: &str, args: Vec<Expr>) -> Expr {
    let args = args
        .into_iter()
        .map(|a| FunctionArg::Unnamed(FunctionArgExpr::Expr(a)))
        .collect();
    weir_sql::function_call(sql::Ident::new(name), args)
}

fn string_lit(s: &str) -> Expr {
    Expr::value(Value::SingleQuotedString(s.to_string()))
}

/// What ksqlDB refuses when it compiles an expression, though DataFusion would accept it.
fn check_ksql_rules(e: &Expr) -> Result<()> {
    let flow = weir_sql::sqlparser::ast::visit_expressions(e, |x: &Expr| {
        let refusal = match x {
            Expr::Array(a) if a.elem.is_empty() => Some(
                "Array constructor cannot be empty. Please supply at least one element (see https://github.com/confluentinc/ksql/issues/4239).".to_string(),
            ),
            Expr::Function(f)
                if f.name.to_string().eq_ignore_ascii_case("MAP")
                    && matches!(&f.args, FunctionArguments::List(l) if l.args.is_empty()) =>
            {
                Some("Map constructor cannot be empty. Please supply at least one key value pair (see https://github.com/confluentinc/ksql/issues/4239).".to_string())
            }
            Expr::BinaryOp { left, op, right }
                if matches!(
                    op,
                    BinaryOperator::Eq
                        | BinaryOperator::NotEq
                        | BinaryOperator::Lt
                        | BinaryOperator::LtEq
                        | BinaryOperator::Gt
                        | BinaryOperator::GtEq
                ) && is_null_literal(left)
                    && is_null_literal(right) =>
            {
                Some(format!("Comparison with NULL not supported: NULL {op} NULL"))
            }
            _ => None,
        };
        match refusal {
            Some(r) => ControlFlow::Break(r),
            None => ControlFlow::Continue(()),
        }
    });
    match flow {
        ControlFlow::Break(reason) => Err(EngineError::Invalid(reason)),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// ksqlDB's name for a comparison operator, as its error messages spell it.
fn comparison_name(op: &BinaryOperator) -> Option<&'static str> {
    Some(match op {
        BinaryOperator::Eq => "EQUAL",
        BinaryOperator::NotEq => "NOT_EQUAL",
        BinaryOperator::Lt => "LESS_THAN",
        BinaryOperator::LtEq => "LESS_THAN_OR_EQUAL",
        BinaryOperator::Gt => "GREATER_THAN",
        BinaryOperator::GtEq => "GREATER_THAN_OR_EQUAL",
        _ => return None,
    })
}

fn is_null_literal(e: &Expr) -> bool {
    matches!(e, Expr::Value(v) if v.value == Value::Null)
}

/// ksqlDB constructors as DataFusion calls: `STRUCT(A := x)` is `named_struct('A', x)`,
/// `MAP(k := v)` is `map([k], [v])`, and `AS_VALUE(x)` is `x`.
fn rewrite_constructor(f: &sql::Function) -> Option<Expr> {
    let name = f.name.to_string().to_ascii_uppercase();
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    let value_of = |a: &FunctionArgExpr| match a {
        FunctionArgExpr::Expr(e) => Some(e.clone()),
        _ => None,
    };
    match name.as_str() {
        "STRUCT" => {
            let mut args = Vec::new();
            let mut names = std::collections::HashSet::new();
            for a in &list.args {
                if let FunctionArg::Named { name, .. } = a
                    && !names.insert(name.value.clone())
                {
                    // Two fields of one name: leave the call as is, so planning rejects it.
                    return None;
                }
            }
            for a in &list.args {
                let FunctionArg::Named { name, arg, .. } = a else {
                    return None;
                };
                args.push(string_lit(&name.value));
                args.push(value_of(arg)?);
            }
            Some(call("named_struct", args))
        }
        "MAP" => {
            let (mut keys, mut values) = (Vec::new(), Vec::new());
            for a in &list.args {
                let (k, v) = match a {
                    FunctionArg::ExprNamed { name, arg, .. } => (name.clone(), value_of(arg)?),
                    FunctionArg::Named { name, arg, .. } => {
                        (Expr::Identifier(name.clone()), value_of(arg)?)
                    }
                    FunctionArg::Unnamed(_) => return None,
                };
                keys.push(k);
                values.push(v);
            }
            Some(call(
                "map",
                vec![call("make_array", keys), call("make_array", values)],
            ))
        }
        // A time unit (`DAYS`, `MILLISECONDS`) is a keyword, not a column: pass its name.
        "DATEADD" | "DATESUB" | "TIMEADD" | "TIMESUB" | "TIMESTAMPADD" | "TIMESTAMPSUB"
            if list.args.len() == 3 =>
        {
            let FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Identifier(unit))) = &list.args[0]
            else {
                return None;
            };
            const UNITS: &[&str] = &["MILLISECOND", "SECOND", "MINUTE", "HOUR", "DAY"];
            let u = unit.value.to_ascii_uppercase();
            if !UNITS.contains(&u.trim_end_matches('S')) {
                return None;
            }
            let mut args = vec![string_lit(&unit.value)];
            for a in &list.args[1..] {
                match a {
                    FunctionArg::Unnamed(e) => args.push(value_of(e)?),
                    _ => return None,
                }
            }
            Some(call(&name.to_ascii_lowercase(), args))
        }
        // DataFusion evaluates COALESCE only after simplifying it to CASE, which physical
        // planning alone skips: write the CASE.
        "COALESCE" | "IFNULL" if list.args.len() >= 2 => {
            let mut args = Vec::new();
            for a in &list.args {
                match a {
                    FunctionArg::Unnamed(e) => args.push(value_of(e)?),
                    _ => return None,
                }
            }
            let last = args.pop()?;
            Some(Expr::Case {
                case_token: AttachedToken::empty(),
                end_token: AttachedToken::empty(),
                operand: None,
                conditions: args
                    .into_iter()
                    .map(|a| CaseWhen {
                        condition: Expr::IsNotNull(Box::new(a.clone())),
                        result: a,
                    })
                    .collect(),
                else_result: Some(Box::new(last)),
            })
        }
        "AS_VALUE" if list.args.len() == 1 => match &list.args[0] {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// ksqlDB compares ROWTIME (and window bounds) with a string as a timestamp: the string
/// literal becomes its millis since the epoch (`'2019-01-01T00:00:00+0445'`, with any
/// suffix of `yyyy-MM-ddTHH:mm:ss.SSS` left out).
fn rewrite_time_literals(mut e: Expr) -> Result<Expr> {
    let is_time = |e: &Expr| matches!(e, Expr::Identifier(i) if ["ROWTIME", "WINDOWSTART", "WINDOWEND"].contains(&i.value.as_str()));
    let mut failure = None;
    let mut convert = |lit: &mut Expr| {
        if let Expr::Value(v) = lit
            && let Value::SingleQuotedString(s) = &v.value
        {
            match crate::javatime::parse_partial_timestamp(s) {
                Ok(ms) => *lit = Expr::Value(Value::Number(ms.to_string(), false).into()),
                Err(e) => failure = Some(e),
            }
        }
    };
    let _ = visit_expressions_mut(&mut e, |x: &mut Expr| {
        match x {
            Expr::BinaryOp { left, op, right } if comparison_name(op).is_some() => {
                if is_time(left) {
                    convert(right);
                } else if is_time(right) {
                    convert(left);
                }
            }
            Expr::Between {
                expr, low, high, ..
            } if is_time(expr) => {
                convert(low);
                convert(high);
            }
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    match failure {
        Some(msg) => Err(EngineError::Invalid(msg)),
        None => Ok(e),
    }
}

/// ksqlDB's `a->b` is DataFusion's `get_field(a, 'b')`; constructors are rewritten too.
fn rewrite_for_datafusion(mut e: Expr) -> Expr {
    let _ = visit_expressions_mut(&mut e, |e: &mut Expr| {
        // DataFusion names a lambda's parameters in lower case whatever its identifier
        // rules (and looks up references as written): parameters and the references to
        // them in lower case.
        if let Expr::Lambda(l) = e {
            let mut names = Vec::new();
            match &mut l.params {
                sql::OneOrManyWithParens::One(p) => names.push(&mut p.name),
                sql::OneOrManyWithParens::Many(ps) => {
                    names.extend(ps.iter_mut().map(|p| &mut p.name))
                }
            }
            let params: Vec<String> = names.iter().map(|n| n.value.clone()).collect();
            for n in names {
                n.value = n.value.to_lowercase();
                n.quote_style = None;
            }
            let _ = visit_expressions_mut(&mut *l.body, |x: &mut Expr| {
                if let Expr::Identifier(id) = x
                    && params.contains(&id.value)
                {
                    id.value = id.value.to_lowercase();
                    id.quote_style = None;
                }
                ControlFlow::<()>::Continue(())
            });
        }
        if let Expr::Function(f) = e
            && let Some(rewritten) = rewrite_constructor(f)
        {
            *e = rewritten;
            return ControlFlow::<()>::Continue(());
        }
        // LIKE with an escape character other than `\`: the pattern rewritten to `\`.
        if let Expr::Like {
            pattern,
            escape_char: escape @ Some(_),
            ..
        }
        | Expr::ILike {
            pattern,
            escape_char: escape @ Some(_),
            ..
        } = e
            && let Some(Value::SingleQuotedString(c)) = escape.as_ref().map(|v| v.value.clone())
            && c != "\\"
        {
            **pattern = call(
                "ksql_like_escape",
                vec![(**pattern).clone(), string_lit(&c)],
            );
            *escape = None;
        }
        // ksqlDB's `+` with a string operand concatenates.
        if let Expr::BinaryOp { left, op, right } = e
            && *op == BinaryOperator::Plus
            && [left, right].iter().any(|x| {
                matches!(x.as_ref(), Expr::Value(v) if matches!(v.value, Value::SingleQuotedString(_)))
            })
        {
            *op = BinaryOperator::StringConcat;
        }
        if let Expr::BinaryOp {
            left,
            op: BinaryOperator::Arrow,
            right,
        } = e
            && let Expr::Identifier(field) = right.as_ref()
        {
            *e = call(
                "get_field",
                vec![(**left).clone(), string_lit(&field.value)],
            );
        }
        ControlFlow::<()>::Continue(())
    });
    e
}

/// One output column: its name, how it is computed, and whether it is a key column.
#[derive(Debug, Clone)]
pub struct Projection {
    pub name: String,
    /// For a table function (`EXPLODE`), the list it unnests; its type is the element's.
    pub compiled: Compiled,
    pub is_key: bool,
    /// `EXPLODE(list)`: one output row per element.
    pub explode: bool,
    /// Reads the source's value columns: a tombstone (no value) leaves it null.
    pub reads_value: bool,
}

/// Names of the columns an expression refers to (by their last name part).
fn referenced_columns(e: &Expr) -> Vec<String> {
    let mut out = Vec::new();
    let _ = weir_sql::sqlparser::ast::visit_expressions(e, |x: &Expr| {
        match x {
            Expr::Identifier(id) => out.push(id.value.clone()),
            Expr::CompoundIdentifier(parts) => out.extend(parts.last().map(|p| p.value.clone())),
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    out
}

/// The name a query's columns may be qualified with: the FROM alias, else the source's.
pub(crate) fn source_alias<'a>(query: &'a Query, source: &'a Source) -> &'a str {
    query
        .from
        .source
        .alias
        .as_ref()
        .map(|a| a.value.as_str())
        .unwrap_or(&source.name)
}

/// A stateless SELECT over one source, ready to run per batch.
#[derive(Debug, Clone)]
pub struct SelectPlan {
    pub source: String,
    pub input_schema: SchemaRef,
    pub filter: Option<Compiled>,
    pub projections: Vec<Projection>,
    /// Where the output records go: key columns then value columns.
    pub output_layout_columns: (Vec<Column>, Vec<Column>),
    pub output_schema: SchemaRef,
    /// PARTITION BY: the key comes from expressions, not the source's key.
    pub repartitions: bool,
    /// Under PARTITION BY, the output columns (by index among the projections) whose key
    /// values come from the source's value: a tombstone has none, so they are null.
    pub value_derived_keys: Vec<usize>,
    /// Over a windowed source (not re-keyed): the input columns of the window's bounds,
    /// carried to the output as the sink's key window.
    pub window_bounds: Option<(usize, usize)>,
}

/// Plans a SELECT whose rows go to a sink topic (CREATE ... AS SELECT, INSERT INTO).
pub fn plan_select(functions: &Functions, query: &Query, source: &Source) -> Result<SelectPlan> {
    plan(functions, query, source, true)
}

/// Plans a push query: its rows go to a client, so the key need not be selected.
pub fn plan_push(functions: &Functions, query: &Query, source: &Source) -> Result<SelectPlan> {
    plan(functions, query, source, false)
}

fn plan(
    functions: &Functions,
    query: &Query,
    source: &Source,
    to_sink: bool,
) -> Result<SelectPlan> {
    if !query.from.joins.is_empty() {
        return Err(EngineError::Unsupported("joins".into()));
    }
    if query.window.is_some() || query.group_by.is_some() || query.having.is_some() {
        return Err(EngineError::Unsupported("aggregations and windows".into()));
    }
    // A windowed source's rows carry their window's bounds after the columns.
    let input_schema = match source.window {
        None => source.layout.schema(),
        Some(_) => crate::with_window_bounds(&source.layout.schema()),
    };
    let alias = source_alias(query, source);
    let compiler = ExprCompiler::new(functions, &input_schema, Some(alias))?;
    let filter = query
        .where_clause
        .as_ref()
        .map(|w| {
            let c = compiler.compile_predicate(w)?;
            if c.data_type != DataType::Boolean && c.data_type != DataType::Null {
                return Err(EngineError::Invalid(format!(
                    "Type error in WHERE expression: Should evaluate to boolean but is {} ({})",
                    fmt_expr(w),
                    sql_type_of(&c.data_type)
                        .map(|t| t.to_string())
                        .unwrap_or_else(|_| c.data_type.to_string())
                )));
            }
            Ok(c)
        })
        .transpose()?;

    let key_names: Vec<&str> = source
        .layout
        .key_columns
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    let value_names: Vec<&str> = source
        .layout
        .value_columns
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    let reads_value = |e: &Expr| {
        referenced_columns(e)
            .iter()
            .any(|r| value_names.contains(&r.as_str()))
    };
    // PARTITION BY re-keys: `*` puts the old key after the value columns, and the
    // partitioning expressions become the key.
    // `PARTITION BY NULL` re-keys to no key at all: every column a value.
    let partition_by = match query.partition_by.as_deref().unwrap_or_default() {
        [p] if is_null_literal(p) => &[],
        p => p,
    };
    let repartition = query.partition_by.is_some();
    let partition_columns: Vec<Option<String>> = partition_by.iter().map(column_name).collect();
    let all_columns: Vec<&Column> = if repartition {
        source
            .layout
            .value_columns
            .iter()
            .chain(&source.layout.key_columns)
            .filter(|c| !partition_columns.iter().flatten().any(|p| *p == c.name))
            .collect()
    } else {
        source.layout.columns().collect()
    };
    let is_key_column = |name: &str| !repartition && key_names.contains(&name);
    let mut projections: Vec<Projection> = Vec::new();
    let mut namer = ColumnNamer::new(
        source.layout.columns().map(|c| c.name.as_str()),
        &query.select,
    );
    for item in &query.select {
        match item {
            SelectItem::Wildcard | SelectItem::QualifiedWildcard(_) => {
                if let SelectItem::QualifiedWildcard(q) = item
                    && q.value != alias
                {
                    return Err(EngineError::Invalid(format!(
                        "Unknown source in {}.*",
                        q.value
                    )));
                }
                for c in &all_columns {
                    let e = Expr::Identifier(sql::Ident::with_quote('`', &c.name));
                    projections.push(Projection {
                        name: c.name.clone(),
                        compiled: compiler.compile(&e)?,
                        is_key: is_key_column(&c.name),
                        explode: false,
                        reads_value: value_names.contains(&c.name.as_str()),
                    });
                }
            }
            SelectItem::Expr {
                expr,
                alias: item_alias,
            } => {
                let column = column_name(expr);
                let name = match (item_alias, &column) {
                    (Some(a), _) => a.value.clone(),
                    (None, Some(c)) => {
                        namer.given(c);
                        c.clone()
                    }
                    (None, None) => item_name(expr, &mut namer),
                };
                let is_key = if repartition {
                    partition_by.iter().any(|p| same_expr(p, expr))
                } else {
                    column.as_deref().is_some_and(|c| key_names.contains(&c))
                };
                let (compiled, explode) = match exploded_argument(expr) {
                    Some(list) => {
                        let mut c = compiler.compile(&list)?;
                        c.data_type = match &c.data_type {
                            DataType::List(f) | DataType::LargeList(f) => f.data_type().clone(),
                            other => {
                                return Err(EngineError::Invalid(format!(
                                    "EXPLODE takes an ARRAY, not {}",
                                    sql_type_of(other)
                                        .map(|t| t.to_string())
                                        .unwrap_or_else(|_| other.to_string())
                                )));
                            }
                        };
                        (c, true)
                    }
                    None => (compiler.compile(expr)?, false),
                };
                projections.push(Projection {
                    name,
                    compiled,
                    explode,
                    reads_value: reads_value(expr),
                    is_key,
                });
            }
        }
    }
    for p in &projections {
        if p.compiled.data_type == DataType::Null {
            return Err(EngineError::Invalid(
                "Can't infer a type of null. Please explicitly cast it to a required type, e.g. CAST(null AS VARCHAR).".into(),
            ));
        }
        // A client may read a windowed table's bounds; a sink may not be given them.
        if to_sink && crate::WINDOW_BOUNDS.contains(&p.name.as_str()) {
            return Err(EngineError::Invalid(format!(
                "`{}` is a reserved column name. You cannot use it as an alias for a column.",
                p.name
            )));
        }
        if PSEUDO_COLUMNS.contains(&p.name.as_str()) {
            return Err(EngineError::Invalid(format!(
                "Reserved column name in select: `{}`. Please remove or alias the column.",
                p.name
            )));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for p in &projections {
        if !seen.insert(p.name.as_str()) {
            return Err(EngineError::Invalid(format!(
                "Duplicate column name in select: `{}`",
                p.name
            )));
        }
    }
    // Partitioning expressions that are not selected still make the key under `SELECT *`;
    // an explicit projection must include them all, as ksqlDB requires.
    if repartition {
        let wildcard = query
            .select
            .iter()
            .any(|i| !matches!(i, SelectItem::Expr { .. }));
        let missing: Vec<&Expr> = partition_by
            .iter()
            .filter(|p| {
                !query
                    .select
                    .iter()
                    .any(|item| matches!(item, SelectItem::Expr { expr, .. } if same_expr(p, expr)))
            })
            .collect();
        if !wildcard && !missing.is_empty() {
            let qualified: Vec<String> = partition_by
                .iter()
                .map(|p| match column_name(p) {
                    Some(c) => format!("{alias}.{c}"),
                    None => fmt_expr(p).to_string(),
                })
                .collect();
            let (noun, list) = match qualified.len() {
                1 => ("expression", qualified[0].clone()),
                _ => ("expressions", qualified.join(" and ")),
            };
            return Err(EngineError::Invalid(format!(
                "The query used to build the sink must include the partitioning {noun} {list} in its projection (eg, SELECT {}...).",
                qualified.join(", ")
            )));
        }
        let mut keys = Vec::new();
        for (p, col) in partition_by.iter().zip(&partition_columns) {
            let selected = query
                .select
                .iter()
                .any(|item| matches!(item, SelectItem::Expr { expr, .. } if same_expr(p, expr)));
            if !selected {
                let name = col.clone().unwrap_or_else(|| namer.generated());
                keys.push(Projection {
                    name,
                    compiled: compiler.compile(p)?,
                    is_key: true,
                    explode: false,
                    reads_value: reads_value(p),
                });
            }
        }
        keys.append(&mut projections);
        projections = keys;
    }
    // ksqlDB: the source's key columns must be selected, so the output keeps its key.
    for k in key_names.iter().filter(|_| !repartition && to_sink) {
        if !projections
            .iter()
            .any(|p| p.is_key && column_source(query, p, k))
        {
            return Err(EngineError::Invalid(format!(
                "Key missing from projection (ie, SELECT). The query used to build the sink must include the key column {k} in its projection (eg, SELECT {k}...)."
            )));
        }
    }
    // A sink's key holds each key column once; a client's rows may repeat it.
    if !repartition && to_sink {
        for k in &key_names {
            let aliases: Vec<&str> = query
                .select
                .iter()
                .filter_map(|item| match item {
                    SelectItem::Expr { expr, alias }
                        if column_name(expr).as_deref() == Some(*k) =>
                    {
                        Some(alias.as_ref().map(|a| a.value.as_str()).unwrap_or(k))
                    }
                    _ => None,
                })
                .collect();
            if aliases.len() > 1 {
                return Err(EngineError::Invalid(format!(
                    "The projection contains a key column (`{k}`) more than once, aliased as: {}.",
                    aliases.join(" and ")
                )));
            }
        }
    }
    // A sink needs a value; a client may ask for keys alone.
    if to_sink && projections.iter().all(|p| p.is_key) {
        return Err(EngineError::Invalid(
            "The projection contains no value columns.".into(),
        ));
    }
    let mut key_cols = Vec::new();
    let mut value_cols = Vec::new();
    for p in &projections {
        let col = Column::new(&p.name, sql_type_of(&p.compiled.data_type)?);
        if p.is_key {
            key_cols.push(col)
        } else {
            value_cols.push(col)
        }
    }
    let value_derived_keys: Vec<usize> = if repartition {
        projections
            .iter()
            .enumerate()
            .filter(|(_, p)| p.is_key && p.reads_value)
            .map(|(i, _)| i)
            .collect()
    } else {
        Vec::new()
    };
    // ROWTIME and ROWOFFSET ride along: the output records' timestamps, and where each
    // came from (for exactly-once recovery).
    let mut fields = vec![
        Field::new(PSEUDO_COLUMNS[0], DataType::Int64, false),
        Field::new(PSEUDO_COLUMNS[2], DataType::Int64, false),
    ];
    fields.extend(
        projections
            .iter()
            .map(|p| Field::new(&p.name, p.compiled.data_type.clone(), true)),
    );
    let window_bounds = (source.window.is_some() && !repartition).then(|| {
        let n = input_schema.fields().len();
        (n - 2, n - 1)
    });
    if window_bounds.is_some() {
        for c in crate::aggregate::WINDOW_COLUMNS {
            fields.push(Field::new(c, DataType::Int64, true));
        }
    }
    Ok(SelectPlan {
        source: source.name.clone(),
        window_bounds,
        input_schema,
        filter,
        projections,
        output_layout_columns: (key_cols, value_cols),
        output_schema: Arc::new(Schema::new(fields)),
        repartitions: repartition,
        value_derived_keys,
    })
}

fn column_source(query: &Query, p: &Projection, key: &str) -> bool {
    query.select.iter().any(|item| match item {
        SelectItem::Wildcard | SelectItem::QualifiedWildcard(_) => p.name == key,
        SelectItem::Expr { expr, alias } => {
            column_name(expr).is_some_and(|c| c == key)
                && alias.as_ref().map(|a| &a.value).unwrap_or(&p.name) == &p.name
        }
    })
}

/// The list argument of a top-level `EXPLODE(list)` select item.
/// `EXPLODE(...)`: a table function.
pub fn is_table_function(e: &Expr) -> bool {
    exploded_argument(e).is_some()
}

fn exploded_argument(e: &Expr) -> Option<Expr> {
    let Expr::Function(f) = e else { return None };
    let name = f.name.to_string().to_ascii_uppercase();
    if name != "EXPLODE" && name != "CUBE_EXPLODE" {
        return None;
    }
    let arg = match &f.args {
        FunctionArguments::List(l) if l.args.len() == 1 => match &l.args[0] {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(arg)) => arg.clone(),
            _ => return None,
        },
        _ => return None,
    };
    // CUBE_EXPLODE(list): one row per combination of the list's elements.
    Some(if name == "CUBE_EXPLODE" {
        call("ksql_cube", vec![arg])
    } else {
        arg
    })
}

pub(crate) fn column_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(id) => Some(id.value.clone()),
        Expr::CompoundIdentifier(parts) => parts.last().map(|p| p.value.clone()),
        _ => None,
    }
}

/// The same expression, or the same column however qualified.
pub(crate) fn same_expr(a: &Expr, b: &Expr) -> bool {
    match (column_name(a), column_name(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Names for select items written without an alias, as ksqlDB gives them: `KSQL_COL_n`
/// for an expression, the field's name for `x->f`; neither takes a name a column of the
/// source or another item has (`KSQL_COL_n` skips to the next free `n`, `f` becomes
/// `f_1`, `f_2`, ...).
pub(crate) struct ColumnNamer {
    taken: std::collections::HashSet<String>,
    generated: usize,
}

impl ColumnNamer {
    pub(crate) fn new<'a>(
        source_columns: impl IntoIterator<Item = &'a str>,
        select: &[SelectItem],
    ) -> Self {
        let mut taken: std::collections::HashSet<String> =
            source_columns.into_iter().map(str::to_string).collect();
        for item in select {
            if let SelectItem::Expr { alias: Some(a), .. } = item {
                taken.insert(a.value.clone());
            }
        }
        Self {
            taken,
            generated: 0,
        }
    }

    pub(crate) fn generated(&mut self) -> String {
        loop {
            let name = format!("KSQL_COL_{}", self.generated);
            self.generated += 1;
            if self.taken.insert(name.clone()) {
                return name;
            }
        }
    }

    pub(crate) fn field(&mut self, field: &str) -> String {
        if self.taken.insert(field.to_string()) {
            return field.to_string();
        }
        (1..)
            .map(|i| format!("{field}_{i}"))
            .find(|n| self.taken.insert(n.clone()))
            .expect("some suffix is free")
    }

    /// A name the query gives (a column, an alias): taken from now on.
    pub(crate) fn given(&mut self, name: &str) {
        self.taken.insert(name.to_string());
    }
}

/// The name of a select item without an alias (see [`ColumnNamer`]).
pub(crate) fn item_name(expr: &Expr, namer: &mut ColumnNamer) -> String {
    match expr {
        Expr::BinaryOp {
            op: BinaryOperator::Arrow,
            right,
            ..
        } => match right.as_ref() {
            Expr::Identifier(f) => namer.field(&f.value),
            _ => namer.generated(),
        },
        _ => namer.generated(),
    }
}

impl SelectPlan {
    /// Runs the filter and projections over a decoded batch. The output's first columns
    /// are ROWTIME (the output records' timestamps) and ROWOFFSET, then the projections.
    /// The plan for a run of deletes (`deletes` true): without its WHERE, so that a
    /// table's delete reaches what was derived from the deleted row.
    pub fn for_run(&self, deletes: bool) -> std::borrow::Cow<'_, SelectPlan> {
        if deletes && self.filter.is_some() {
            std::borrow::Cow::Owned(SelectPlan {
                filter: None,
                ..self.clone()
            })
        } else {
            std::borrow::Cow::Borrowed(self)
        }
    }

    pub fn apply(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        // A function that panics on some input must fail this batch, not the server.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.apply_unguarded(batch)))
            .unwrap_or_else(|p| {
                let why = crate::error::panic_message(p.as_ref());
                Err(EngineError::Execution(format!("a function failed: {why}")))
            })
    }

    /// Runs the plan over a batch; if the batch fails, row by row, so one bad row does not
    /// cost the others. Returns the outputs and, per failed row, its ROWOFFSET and why.
    pub fn apply_each(&self, batch: &RecordBatch) -> (Vec<RecordBatch>, Vec<(u64, String)>) {
        if let Ok(out) = self.apply(batch) {
            return (vec![out], Vec::new());
        }
        let mut outs = Vec::new();
        let mut failures = Vec::new();
        for row in 0..batch.num_rows() {
            let one = batch.slice(row, 1);
            match self.apply(&one) {
                Ok(out) => outs.push(out),
                Err(e) => {
                    let offset = one
                        .column(2)
                        .as_primitive::<arrow::datatypes::Int64Type>()
                        .value(0) as u64;
                    failures.push((offset, e.to_string()));
                }
            }
        }
        (outs, failures)
    }

    fn apply_unguarded(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let batch = match &self.filter {
            Some(f) => {
                let mask = f.expr.evaluate(batch)?.into_array(batch.num_rows())?;
                let mask = match mask.data_type() {
                    DataType::Boolean => mask,
                    _ => arrow::compute::cast(&mask, &DataType::Boolean)
                        .map_err(|e| EngineError::Execution(e.to_string()))?,
                };
                filter_record_batch(batch, mask.as_boolean())
                    .map_err(|e| EngineError::Execution(e.to_string()))?
            }
            None => batch.clone(),
        };
        let mut columns: Vec<ArrayRef> = vec![batch.column(0).clone(), batch.column(2).clone()];
        for p in &self.projections {
            columns.push(
                p.compiled
                    .expr
                    .evaluate(&batch)?
                    .into_array(batch.num_rows())?,
            );
        }
        if let Some((start, end)) = self.window_bounds {
            columns.push(batch.column(start).clone());
            columns.push(batch.column(end).clone());
        }
        if self.projections.iter().any(|p| p.explode) {
            columns = self.explode(columns)?;
        }
        RecordBatch::try_new(self.output_schema.clone(), columns)
            .map_err(|e| EngineError::Execution(e.to_string()))
    }

    /// Table functions: each input row becomes as many rows as its longest exploded list
    /// (none for empty or null lists); shorter lists are padded with nulls, and the other
    /// columns repeat.
    fn explode(&self, columns: Vec<ArrayRef>) -> Result<Vec<ArrayRef>> {
        use arrow::array::{Array, ListArray, UInt32Array};
        let err = |e: arrow::error::ArrowError| EngineError::Execution(e.to_string());
        let rows = columns[0].len();
        let lists: Vec<Option<ListArray>> = self
            .projections
            .iter()
            .zip(&columns[2..])
            .map(|(p, c)| p.explode.then(|| c.as_list::<i32>().clone()))
            .collect();
        let len = |l: &ListArray, r: usize| {
            if l.is_null(r) {
                0
            } else {
                l.value_length(r) as usize
            }
        };
        let mut repeat = Vec::new();
        let mut element: Vec<Vec<Option<u32>>> = vec![Vec::new(); lists.len()];
        for r in 0..rows {
            let n = lists.iter().flatten().map(|l| len(l, r)).max().unwrap_or(0);
            for j in 0..n {
                repeat.push(r as u32);
                for (i, l) in lists.iter().enumerate() {
                    if let Some(l) = l {
                        let start = l.value_offsets()[r] as usize;
                        element[i].push((j < len(l, r)).then_some((start + j) as u32));
                    }
                }
            }
        }
        let repeat = UInt32Array::from(repeat);
        let mut out = Vec::with_capacity(columns.len());
        for (i, c) in columns.iter().enumerate() {
            // (Columns after the projections, a window's bounds, repeat like the others.)
            let exploded = i >= 2 && lists.get(i - 2).is_some_and(Option::is_some);
            out.push(if exploded {
                let list = lists[i - 2].as_ref().expect("checked");
                let idx = UInt32Array::from(std::mem::take(&mut element[i - 2]));
                arrow::compute::take(list.values().as_ref(), &idx, None).map_err(err)?
            } else {
                arrow::compute::take(c.as_ref(), &repeat, None).map_err(err)?
            });
        }
        Ok(out)
    }

    /// A tombstone's output under PARTITION BY: key columns computed from the (absent)
    /// value are null.
    pub fn null_value_derived_keys(&self, out: &RecordBatch) -> Result<RecordBatch> {
        let mut columns = out.columns().to_vec();
        for &i in &self.value_derived_keys {
            let c = &columns[2 + i];
            columns[2 + i] = arrow::array::new_null_array(c.data_type(), c.len());
        }
        RecordBatch::try_new(out.schema(), columns)
            .map_err(|e| EngineError::Execution(e.to_string()))
    }

    pub fn output_layout(&self, template: &Layout) -> Layout {
        Layout {
            key_columns: self.output_layout_columns.0.clone(),
            value_columns: self.output_layout_columns.1.clone(),
            key_format: template.key_format.clone(),
            value_format: template.value_format.clone(),
            header_columns: Vec::new(),
        }
    }
}
