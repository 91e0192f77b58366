//! Watching a plugin folder: `scan` compares the `.so` files there with what it saw last
//! time and loads, reloads or forgets plugins. A file is acted on once it looks the same
//! (size and modification time) on two scans in a row, so one still being copied in is
//! not opened half-written. Call `scan` every half second or so.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use crate::Plugin;

/// What a scan found.
#[derive(Debug)]
pub enum Change {
    Loaded(Arc<Plugin>),
    /// The file changed: the new version serves new queries.
    Replaced {
        old: Arc<Plugin>,
        new: Arc<Plugin>,
    },
    /// The file is gone.
    Removed(Arc<Plugin>),
    /// The file is not a usable plugin; `reason` says why. A plugin it replaces stays.
    Refused {
        path: PathBuf,
        reason: String,
    },
}

type Signature = (SystemTime, u64);

pub struct PluginDir {
    dir: PathBuf,
    config: HashMap<String, String>,
    /// What the last scan saw of each file.
    last_seen: HashMap<PathBuf, Signature>,
    /// The signature each file was acted on at, and the plugin loaded from it.
    loaded: HashMap<PathBuf, (Signature, Option<Arc<Plugin>>)>,
    /// Files in the folder whose latest version was refused, and why.
    refused: BTreeMap<PathBuf, String>,
}

impl PluginDir {
    /// `config`: `<function>.<key>` → value for every plugin (see `plugin_config`).
    pub fn new(dir: &Path, config: HashMap<String, String>) -> Self {
        Self {
            dir: dir.to_path_buf(),
            config,
            last_seen: HashMap::new(),
            loaded: HashMap::new(),
            refused: BTreeMap::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The plugins loaded now.
    pub fn plugins(&self) -> impl Iterator<Item = &Arc<Plugin>> {
        self.loaded.values().filter_map(|(_, p)| p.as_ref())
    }

    /// The files in the folder that are not usable plugins (as last seen), and why.
    pub fn refused(&self) -> impl Iterator<Item = (&Path, &str)> {
        self.refused.iter().map(|(p, r)| (p.as_path(), r.as_str()))
    }

    fn files(&self) -> HashMap<PathBuf, Signature> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return HashMap::new();
        };
        entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "so"))
            .filter_map(|p| {
                let m = std::fs::metadata(&p).ok()?;
                m.is_file()
                    .then(|| (p, (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len())))
            })
            .collect()
    }

    /// At start: loads every plugin there now (they count as settled).
    pub fn initial_scan(&mut self) -> Vec<Change> {
        self.last_seen = self.files();
        self.scan()
    }

    /// Loads what is new or changed (and settled), forgets what is gone.
    pub fn scan(&mut self) -> Vec<Change> {
        let now = self.files();
        let mut changes = Vec::new();
        let gone: Vec<PathBuf> = self
            .loaded
            .keys()
            .filter(|p| !now.contains_key(*p))
            .cloned()
            .collect();
        for path in gone {
            self.refused.remove(&path);
            if let Some((_, Some(plugin))) = self.loaded.remove(&path) {
                changes.push(Change::Removed(plugin));
            }
        }
        let mut paths: Vec<&PathBuf> = now.keys().collect();
        paths.sort();
        for path in paths {
            let sig = now[path];
            let settled = self.last_seen.get(path) == Some(&sig);
            let acted = self.loaded.get(path).map(|(s, _)| *s);
            if !settled || acted == Some(sig) {
                continue;
            }
            let old = self.loaded.get(path).and_then(|(_, p)| p.clone());
            match Plugin::load(path, &self.config) {
                Ok(new) => {
                    self.refused.remove(path);
                    self.loaded.insert(path.clone(), (sig, Some(new.clone())));
                    changes.push(match old {
                        Some(old) => Change::Replaced { old, new },
                        None => Change::Loaded(new),
                    });
                }
                Err(reason) => {
                    self.refused.insert(path.clone(), reason.clone());
                    self.loaded.insert(path.clone(), (sig, old));
                    changes.push(Change::Refused {
                        path: path.clone(),
                        reason,
                    });
                }
            }
        }
        self.last_seen = now;
        changes
    }
}
