//! The plugin folder: plugins there at start are registered before the command log is
//! replayed (so persistent queries that call them resume); afterwards the folder is
//! scanned every half second and what changed is registered or removed while the
//! server runs. A plugin that cannot be loaded is logged with its file and the reason;
//! the server carries on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use weir_engine::Functions;
use weir_engine::functions::PluginFunction;
use weir_udf_host::{Change, Plugin, PluginDir, PluginScalar, plugin_config};

use crate::AppState;

/// How often the folder is looked at: a new plugin is callable within two scans.
pub const SCAN_INTERVAL: Duration = Duration::from_millis(500);

pub fn open(dir: &std::path::Path, properties: &BTreeMap<String, String>) -> PluginDir {
    PluginDir::new(dir, plugin_config(properties))
}

fn infos(plugin: &Plugin) -> Vec<PluginFunction> {
    let mut out: BTreeMap<String, PluginFunction> = BTreeMap::new();
    for (kind, list) in [
        ("SCALAR", &plugin.scalars),
        ("AGGREGATE", &plugin.aggregates),
    ] {
        for f in list {
            let signature = weir_engine::meta::FunctionSignature {
                arguments: f.args.clone(),
                return_type: f.returns.clone(),
                description: f.description.clone(),
            };
            out.entry(f.name.clone())
                .or_insert_with(|| PluginFunction {
                    name: f.name.clone(),
                    kind: kind.to_string(),
                    description: f.description.clone(),
                    library: plugin.library.clone(),
                    version: plugin.version.clone(),
                    author: plugin.author.clone(),
                    path: plugin.path.display().to_string(),
                    generation: plugin.generation,
                    signatures: vec![],
                })
                .signatures
                .push(signature);
        }
    }
    out.into_values().collect()
}

/// A plugin's aggregate as GROUP BY calls it (its first overload).
struct Aggregate {
    plugin: Arc<Plugin>,
    index: usize,
}

impl weir_engine::functions::PluginAggregate for Aggregate {
    fn arg_types(&self) -> Vec<arrow::datatypes::DataType> {
        self.plugin.aggregates[self.index].arg_types.clone()
    }

    fn return_type(&self) -> arrow::datatypes::DataType {
        self.plugin.aggregates[self.index].return_type.clone()
    }

    fn new_state(&self) -> Result<Box<dyn weir_engine::functions::PluginAggregateState>, String> {
        Ok(Box::new(State(self.plugin.new_aggregate(self.index)?)))
    }
}

struct State(weir_udf_host::AggregateState);

impl weir_engine::functions::PluginAggregateState for State {
    fn update(&mut self, args: &[arrow::array::ArrayRef]) -> Result<(), String> {
        self.0.update(args)
    }
    fn state(&self) -> Result<Vec<u8>, String> {
        self.0.state()
    }
    fn merge(&mut self, state: &[u8]) -> Result<(), String> {
        self.0.merge(state)
    }
    fn result(&self) -> Result<arrow::array::ArrayRef, String> {
        self.0.result()
    }
}

fn register(functions: &mut Functions, plugin: &Arc<Plugin>) {
    let udfs = PluginScalar::all(plugin);
    for info in infos(plugin) {
        let builtin =
            functions.scalar(&info.name).is_some() && functions.plugin(&info.name).is_none();
        if builtin {
            tracing::warn!(file = %plugin.path.display(), function = %info.name,
                "plugin function not loaded: a built-in function has that name");
            continue;
        }
        let aggregate = plugin
            .aggregates
            .iter()
            .position(|a| a.name.eq_ignore_ascii_case(&info.name));
        match (
            udfs.iter()
                .find(|u| u.name().eq_ignore_ascii_case(&info.name)),
            aggregate,
        ) {
            (Some(udf), _) => functions.register_plugin(udf.clone(), info),
            (None, Some(index)) => functions.register_plugin_aggregate(
                Arc::new(Aggregate {
                    plugin: plugin.clone(),
                    index,
                }),
                info,
            ),
            (None, None) => functions.register_plugin_info(info),
        }
    }
}

fn unregister(functions: &mut Functions, plugin: &Plugin) {
    for info in infos(plugin) {
        let ours = functions
            .plugin(&info.name)
            .is_some_and(|p| p.generation == plugin.generation);
        if ours {
            functions.deregister_plugin(&info.name);
        }
    }
}

/// Applies what a scan found, logging each change.
pub fn apply(functions: &mut Functions, changes: Vec<Change>) {
    for change in changes {
        match change {
            Change::Loaded(p) => {
                register(functions, &p);
                tracing::info!(file = %p.path.display(), library = %p.library, version = %p.version,
                    functions = p.scalars.len() + p.aggregates.len(), "plugin loaded");
            }
            Change::Replaced { old, new } => {
                unregister(functions, &old);
                register(functions, &new);
                tracing::info!(file = %new.path.display(), library = %new.library, version = %new.version,
                    "plugin replaced: new queries use the new version, running ones keep theirs");
            }
            Change::Removed(p) => {
                unregister(functions, &p);
                tracing::info!(file = %p.path.display(), library = %p.library, "plugin removed");
            }
            Change::Refused { path, reason } => {
                tracing::warn!(file = %path.display(), %reason, "plugin refused");
            }
        }
    }
}

/// Tells `functions` which files of the folder are refused plugins, and why.
pub fn note_refusals(functions: &mut Functions, dir: &PluginDir) {
    functions.set_plugin_refusals(
        dir.refused()
            .map(|(path, why)| {
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                format!("plugin file {name} refused: {why}")
            })
            .collect(),
    );
}

/// Scans the folder until the server stops.
pub fn watch(mut dir: PluginDir, state: Arc<AppState>) {
    while !*state.stopping.borrow() {
        std::thread::sleep(SCAN_INTERVAL);
        let refused_before: Vec<std::path::PathBuf> =
            dir.refused().map(|(p, _)| p.to_path_buf()).collect();
        let changes = dir.scan();
        // A refused file removed is no change of plugins, but of what is said about them.
        let refusals_changed = !dir
            .refused()
            .map(|(p, _)| p)
            .eq(refused_before.iter().map(|p| p.as_path()));
        if !changes.is_empty() || refusals_changed {
            let mut engine = state.runtime.engine();
            apply(engine.functions_mut(), changes);
            note_refusals(engine.functions_mut(), &dir);
        }
    }
}
