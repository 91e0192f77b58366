//! A plugin's scalar functions as DataFusion UDFs: one UDF per SQL name, its overloads
//! chosen by argument types, one FFI call per batch.

use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::datatypes::DataType;
use datafusion::common::{Result, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use crate::{FunctionMeta, Plugin};

/// One SQL name of a plugin: its overloads (index into the plugin's scalars, and meta).
pub struct PluginScalar {
    name: String,
    plugin: Arc<Plugin>,
    overloads: Vec<(usize, FunctionMeta)>,
    signature: Signature,
}

impl std::fmt::Debug for PluginScalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginScalar")
            .field("name", &self.name)
            .field("plugin", &self.plugin)
            .finish()
    }
}

impl PartialEq for PluginScalar {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && Arc::ptr_eq(&self.plugin, &other.plugin)
    }
}
impl Eq for PluginScalar {}
impl std::hash::Hash for PluginScalar {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
        self.plugin.generation.hash(state);
    }
}

/// Whether a value of type `from` may be passed where `to` is declared (ksqlDB widens
/// INT → BIGINT → DOUBLE; a NULL literal fits anything).
fn widens(from: &DataType, to: &DataType) -> bool {
    from == to
        || matches!(from, DataType::Null)
        || matches!(
            (from, to),
            (DataType::Int32, DataType::Int64)
                | (DataType::Int32 | DataType::Int64, DataType::Float64)
                | (DataType::Utf8View | DataType::LargeUtf8, DataType::Utf8)
        )
}

impl PluginScalar {
    /// The UDFs for every scalar SQL name in `plugin`.
    pub fn all(plugin: &Arc<Plugin>) -> Vec<ScalarUDF> {
        let mut names: Vec<&str> = plugin.scalars.iter().map(|f| f.name.as_str()).collect();
        names.dedup();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|name| {
                let overloads: Vec<(usize, FunctionMeta)> = plugin
                    .scalars
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| f.name == name)
                    .map(|(i, f)| (i, f.clone()))
                    .collect();
                let volatility = if overloads.iter().all(|(_, f)| f.deterministic) {
                    Volatility::Immutable
                } else {
                    Volatility::Volatile
                };
                ScalarUDF::new_from_impl(PluginScalar {
                    // DataFusion resolves names in lower case.
                    name: name.to_ascii_lowercase(),
                    plugin: plugin.clone(),
                    overloads,
                    signature: Signature::user_defined(volatility),
                })
            })
            .collect()
    }

    /// The overload for these argument types: exact first, then by widening.
    fn resolve(&self, args: &[DataType]) -> Option<&(usize, FunctionMeta)> {
        let fits = |f: &FunctionMeta, exact: bool| {
            f.arg_types.len() == args.len()
                && f.arg_types.iter().zip(args).all(|(want, got)| {
                    if exact {
                        want == got
                    } else {
                        widens(got, want)
                    }
                })
        };
        self.overloads
            .iter()
            .find(|(_, f)| fits(f, true))
            .or_else(|| self.overloads.iter().find(|(_, f)| fits(f, false)))
    }

    fn describe(args: &[DataType]) -> String {
        args.iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl ScalarUDFImpl for PluginScalar {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        match self.resolve(args) {
            Some((_, f)) => Ok(f.arg_types.clone()),
            None => plan_err!(
                "Function '{}' does not accept parameters ({})",
                self.name.to_ascii_uppercase(),
                Self::describe(args)
            ),
        }
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match self.resolve(args) {
            Some((_, f)) => Ok(f.return_type.clone()),
            None => plan_err!(
                "Function '{}' does not accept parameters ({})",
                self.name.to_ascii_uppercase(),
                Self::describe(args)
            ),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let arrays: Vec<ArrayRef> = args
            .args
            .iter()
            .map(|a| a.to_array(rows))
            .collect::<Result<_>>()?;
        let types: Vec<DataType> = arrays.iter().map(|a| a.data_type().clone()).collect();
        let Some((index, _)) = self.resolve(&types) else {
            return exec_err!(
                "{}: no overload for ({})",
                self.name,
                Self::describe(&types)
            );
        };
        match self.plugin.invoke(*index, &arrays, rows) {
            Ok(a) => Ok(ColumnarValue::Array(a)),
            Err(e) => exec_err!(
                "{} (plugin {} {}): {e}",
                self.name.to_ascii_uppercase(),
                self.plugin.library,
                self.plugin.version
            ),
        }
    }
}
