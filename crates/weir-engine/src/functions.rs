//! Functions under ksqlDB's names: a DataFusion `ContextProvider` that resolves a name as
//! ksqlDB spells it (`UCASE`, `LEN`, `IFNULL`) to the DataFusion function with the same
//! meaning, and otherwise to DataFusion's function of that name.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion::common::TableReference;
use datafusion::config::ConfigOptions;
use datafusion::error::Result as DfResult;
use datafusion::execution::session_state::SessionState;
use datafusion::execution::{FunctionRegistry, SessionStateBuilder};
use datafusion::logical_expr::planner::ExprPlanner;
use datafusion::logical_expr::{AggregateUDF, HigherOrderUDF, ScalarUDF, TableSource, WindowUDF};
use datafusion::sql::planner::ContextProvider;

/// ksqlDB names whose DataFusion function has another name.
const ALIASES: &[(&str, &str)] = &[
    ("UCASE", "upper"),
    ("LCASE", "lower"),
    ("LEN", "character_length"),
    ("IFNULL", "nvl"),
    ("ARRAY_CONTAINS", "array_has"),
    ("ARRAY_LENGTH", "ksql_array_length"),
    ("ARRAY_SORT", "ksql_array_sort"),
    ("ARRAY_REMOVE", "ksql_array_remove"),
    ("GENERATE_SERIES", "ksql_generate_series"),
    ("ENTRIES", "ksql_entries"),
    ("CONCAT", "concat"),
    ("CONCAT_WS", "concat_ws"),
    ("REPLACE", "replace"),
    // DataFusion's ENCODE takes two arguments; ksqlDB's three.
    ("ENCODE", "ksql_encode"),
    ("LPAD", "ksql_lpad"),
    ("RPAD", "ksql_rpad"),
    ("ARRAY_JOIN", "ksql_array_join"),
];

#[derive(Clone)]
pub struct Functions {
    state: SessionState,
    options: ConfigOptions,
    aliases: HashMap<&'static str, &'static str>,
    /// Functions from plugins, by upper-cased name.
    plugins: HashMap<String, PluginFunction>,
    /// Where row warnings of function calls on this thread are collected (plugins that
    /// returned NULL for a bad input); each goes to the processing log.
    pub(crate) warning_source: Option<fn() -> Vec<String>>,
    /// Aggregate functions from plugins, by upper-cased name.
    aggregates: HashMap<String, Arc<dyn PluginAggregate>>,
    /// Files in the plugin folder that were refused, each with why (shown with the
    /// function list).
    plugin_refusals: Vec<String>,
}

/// An aggregate function from a plugin, as GROUP BY calls it.
pub trait PluginAggregate: Send + Sync {
    /// The Arrow types of its arguments.
    fn arg_types(&self) -> Vec<DataType>;
    fn return_type(&self) -> DataType;
    /// A fresh state (one per group and call).
    fn new_state(&self) -> Result<Box<dyn PluginAggregateState>, String>;
}

/// One running state of a plugin aggregate (kept per group, so it moves with the engine
/// between threads).
pub trait PluginAggregateState: Send {
    fn update(&mut self, args: &[arrow::array::ArrayRef]) -> Result<(), String>;
    /// Serialized, to checkpoint it and merge it into a fresh state.
    fn state(&self) -> Result<Vec<u8>, String>;
    fn merge(&mut self, state: &[u8]) -> Result<(), String>;
    /// The result: an array of one row.
    fn result(&self) -> Result<arrow::array::ArrayRef, String>;
}

impl Functions {
    /// Sets where the engine collects functions' row warnings after each batch.
    pub fn set_warning_source(&mut self, source: fn() -> Vec<String>) {
        self.warning_source = Some(source);
    }
}

/// What SHOW FUNCTIONS and DESCRIBE FUNCTION say of a plugin function.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginFunction {
    pub name: String,
    /// `SCALAR` or `AGGREGATE`.
    pub kind: String,
    pub description: String,
    pub library: String,
    pub version: String,
    pub author: String,
    /// The library file, and which load of it (a replaced file loads anew).
    pub path: String,
    pub generation: u64,
    /// One per overload.
    pub signatures: Vec<crate::meta::FunctionSignature>,
}

impl std::fmt::Debug for Functions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Functions").finish_non_exhaustive()
    }
}

impl Default for Functions {
    fn default() -> Self {
        let mut state = SessionStateBuilder::new().with_default_features().build();
        for udf in crate::builtins::all()
            .into_iter()
            .chain(crate::rowfns::all())
        {
            state
                .register_udf(udf)
                .expect("registering a scalar function cannot fail");
        }
        for f in crate::lambda::all() {
            state
                .register_higher_order_function(f)
                .expect("registering a higher-order function cannot fail");
        }
        Self {
            options: state.config_options().as_ref().clone(),
            state,
            aliases: ALIASES.iter().copied().collect(),
            plugins: HashMap::new(),
            warning_source: None,
            aggregates: HashMap::new(),
            plugin_refusals: Vec::new(),
        }
    }
}

impl Functions {
    fn datafusion_name(&self, name: &str) -> String {
        let upper = name.to_ascii_uppercase();
        match self.aliases.get(upper.as_str()) {
            Some(n) => n.to_string(),
            None => name.to_ascii_lowercase(),
        }
    }

    /// The ksqlDB names that stand for a DataFusion function of another name.
    pub fn alias_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.aliases.keys().copied()
    }

    /// The scalar function a ksqlDB name resolves to.
    pub fn scalar(&self, name: &str) -> Option<Arc<ScalarUDF>> {
        self.get_function_meta(name)
    }

    /// Makes a plugin's scalar function callable by new queries (replacing an earlier
    /// version: queries planned with that one keep it).
    pub fn register_plugin(&mut self, udf: ScalarUDF, info: PluginFunction) {
        let _ = self.state.register_udf(Arc::new(udf));
        self.plugins.insert(info.name.to_ascii_uppercase(), info);
    }

    /// Describes a plugin function that cannot be called (an aggregate with no overload
    /// queries can use).
    /// Says which plugin files were refused and why (replacing what was said before).
    pub fn set_plugin_refusals(&mut self, refusals: Vec<String>) {
        self.plugin_refusals = refusals;
    }

    /// The plugin files refused, each as `plugin file NAME refused: WHY`.
    pub fn plugin_refusals(&self) -> &[String] {
        &self.plugin_refusals
    }

    pub fn register_plugin_info(&mut self, info: PluginFunction) {
        self.plugins.insert(info.name.to_ascii_uppercase(), info);
    }

    /// Makes a plugin's aggregate function callable by new GROUP BY queries (queries
    /// planned with an earlier version keep it).
    pub fn register_plugin_aggregate(
        &mut self,
        aggregate: Arc<dyn PluginAggregate>,
        info: PluginFunction,
    ) {
        self.aggregates
            .insert(info.name.to_ascii_uppercase(), aggregate);
        self.plugins.insert(info.name.to_ascii_uppercase(), info);
    }

    /// The plugin aggregate of this name, if there is one.
    pub fn plugin_aggregate(&self, name: &str) -> Option<Arc<dyn PluginAggregate>> {
        self.aggregates.get(&name.to_ascii_uppercase()).cloned()
    }

    /// Makes a plugin function unavailable to new queries.
    pub fn deregister_plugin(&mut self, name: &str) {
        let _ = self.state.deregister_udf(&name.to_ascii_lowercase());
        self.plugins.remove(&name.to_ascii_uppercase());
        self.aggregates.remove(&name.to_ascii_uppercase());
    }

    /// The plugin function of this name, if it is one.
    pub fn plugin(&self, name: &str) -> Option<&PluginFunction> {
        self.plugins.get(&name.to_ascii_uppercase())
    }

    pub fn plugins(&self) -> impl Iterator<Item = &PluginFunction> {
        self.plugins.values()
    }

    /// The DataFusion session whose function registry and expression planning we use.
    pub fn state(&self) -> &SessionState {
        &self.state
    }
}

impl ContextProvider for Functions {
    fn get_table_source(&self, name: TableReference) -> DfResult<Arc<dyn TableSource>> {
        datafusion::common::plan_err!("'{name}' is not a column here")
    }

    fn get_expr_planners(&self) -> &[Arc<dyn ExprPlanner>] {
        self.state.expr_planners()
    }

    fn get_function_meta(&self, name: &str) -> Option<Arc<ScalarUDF>> {
        self.state
            .scalar_functions()
            .get(&self.datafusion_name(name))
            .cloned()
    }

    fn get_higher_order_meta(&self, name: &str) -> Option<Arc<HigherOrderUDF>> {
        self.state
            .higher_order_functions()
            .get(&self.datafusion_name(name))
            .cloned()
    }

    fn get_aggregate_meta(&self, name: &str) -> Option<Arc<AggregateUDF>> {
        self.state
            .aggregate_functions()
            .get(&self.datafusion_name(name))
            .cloned()
    }

    fn get_window_meta(&self, _name: &str) -> Option<Arc<WindowUDF>> {
        None
    }

    fn get_variable_type(&self, _variable_names: &[String]) -> Option<DataType> {
        None
    }

    fn options(&self) -> &ConfigOptions {
        &self.options
    }

    fn udf_names(&self) -> Vec<String> {
        self.state.scalar_functions().keys().cloned().collect()
    }

    fn higher_order_function_names(&self) -> Vec<String> {
        self.state
            .higher_order_functions()
            .keys()
            .cloned()
            .collect()
    }

    fn udaf_names(&self) -> Vec<String> {
        self.state.aggregate_functions().keys().cloned().collect()
    }

    fn udwf_names(&self) -> Vec<String> {
        Vec::new()
    }
}
