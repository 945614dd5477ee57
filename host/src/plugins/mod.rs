//! Plugin discovery, loading and the registry by name.
//!
//! Search order: `--plugin-dir` (in the order given), then the folders in
//! `TAPELINE_PLUGIN_PATH`, then the folder of the running `tapeline` executable, so that a plain
//! `cargo build` works with no flags. A plugin name found in an earlier folder shadows the same
//! name in a later one; two libraries in the same folder defining the same name are a conflict
//! that names both files.

pub mod loader;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tapeline_plugin_api::abi::{PluginKind, PluginLibraryRef, PluginManifest};

pub use loader::{load, load_with_steps, LoadError, LoadedLibrary, Step};

/// Environment variable holding extra plugin folders (`:`-separated, `;` on Windows).
pub const PLUGIN_PATH_ENV: &str = "TAPELINE_PLUGIN_PATH";

/// The folders to search, in precedence order, without duplicates.
pub fn search_path(cli_dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = cli_dirs.to_vec();
    if let Some(env) = std::env::var_os(PLUGIN_PATH_ENV) {
        dirs.extend(std::env::split_paths(&env).filter(|p| !p.as_os_str().is_empty()));
    }
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        dirs.push(exe_dir);
    }
    let mut seen = Vec::new();
    dirs.retain(|d| {
        let key = d.canonicalize().unwrap_or_else(|_| d.clone());
        if seen.contains(&key) {
            false
        } else {
            seen.push(key);
            true
        }
    });
    dirs
}

/// Whether a file name looks like a shared library on this platform.
pub fn is_library_name(path: &Path) -> bool {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    matches!(ext, "so" | "dylib" | "dll")
}

/// One plugin the registry can hand out.
#[derive(Clone)]
pub struct PluginEntry {
    pub manifest: PluginManifest,
    pub library: PathBuf,
    pub module: PluginLibraryRef,
}

impl PluginEntry {
    pub fn name(&self) -> &str {
        &self.manifest.name
    }
    pub fn kind(&self) -> PluginKind {
        self.manifest.kind
    }
}

/// A file found on the search path that is not a usable plugin library.
pub struct Rejected {
    pub error: LoadError,
}

/// A plugin name defined twice.
#[derive(Debug, Clone)]
pub struct Conflict {
    pub name: String,
    pub first: PathBuf,
    pub second: PathBuf,
    /// True when the second comes from a later folder and is merely shadowed.
    pub shadowed: bool,
}

/// Every plugin found, by name.
#[derive(Default)]
pub struct Registry {
    plugins: BTreeMap<String, PluginEntry>,
    pub rejected: Vec<Rejected>,
    pub conflicts: Vec<Conflict>,
    pub searched: Vec<PathBuf>,
}

/// Looking up a plugin by name failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LookupError {
    #[error("unknown plugin `{name}`")]
    Unknown {
        name: String,
        suggestions: Vec<String>,
    },
    #[error("plugin `{name}` is defined by two libraries: {} and {}", first.display(), second.display())]
    Ambiguous {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },
}

/// The plugin a plain `cargo build` leaves out (its ALSA binding needs system packages to build),
/// and the command that builds it: the help of a lookup that misses it, and `tapeline plugins`.
pub const DEVICE_CAPTURE_PLUGIN: &str = "cpal-capture";
pub const BUILD_DEVICE_SUPPORT: &str = "bash scripts/build-devices.sh";

impl LookupError {
    pub fn help(&self) -> String {
        match self {
            LookupError::Unknown { name, .. } if name == DEVICE_CAPTURE_PLUGIN => format!(
                "audio-device capture is not built by default: `{BUILD_DEVICE_SUPPORT}` in the \
                 Tapeline checkout builds it (see docs/devices.md)"
            ),
            LookupError::Unknown { suggestions, .. } if !suggestions.is_empty() => {
                format!("did you mean {}?", quote_list(suggestions))
            }
            LookupError::Unknown { .. } => {
                "run `tapeline plugins` to list installed plugins, or add a folder with --plugin-dir".into()
            }
            LookupError::Ambiguous { .. } => "remove one of the two libraries from that folder".into(),
        }
    }
}

/// `a`, `a` or `b`, `a`, `b` or `c`.
pub fn quote_list(items: &[String]) -> String {
    let q: Vec<String> = items.iter().map(|s| format!("`{s}`")).collect();
    match q.len() {
        0 => String::new(),
        1 => q[0].clone(),
        n => format!("{} or {}", q[..n - 1].join(", "), q[n - 1]),
    }
}

/// Names among `candidates` close to `name`, closest first.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut scored: Vec<(f64, &str)> = candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(name, c), c))
        .filter(|(s, c)| *s > 0.75 || c.contains(name) || (name.len() > 2 && name.contains(c)))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored
        .into_iter()
        .take(3)
        .map(|(_, c)| c.to_string())
        .collect()
}

impl Registry {
    /// Search the folders and load every library found. Never fails: libraries that do not load
    /// are kept in `rejected` with their reason.
    pub fn discover(dirs: &[PathBuf]) -> Registry {
        let mut reg = Registry {
            searched: dirs.to_vec(),
            ..Registry::default()
        };
        for (tier, dir) in dirs.iter().enumerate() {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && is_library_name(p))
                .collect();
            files.sort();
            for file in files {
                reg.add_file(&file, tier);
            }
        }
        reg
    }

    /// Load one file into the registry (as the lowest-precedence tier).
    pub fn add_library(&mut self, path: &Path) -> Result<(), LoadError> {
        match load(path) {
            Ok(lib) => {
                self.insert(lib, usize::MAX);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn add_file(&mut self, file: &Path, tier: usize) {
        match load(file) {
            Ok(lib) => self.insert(lib, tier),
            Err(error) => {
                tracing::debug!(file = %file.display(), %error, "rejected plugin library");
                self.rejected.push(Rejected { error });
            }
        }
    }

    fn insert(&mut self, lib: LoadedLibrary, tier: usize) {
        for manifest in lib.manifests {
            let name = manifest.name.to_string();
            if let Some(existing) = self.plugins.get(&name) {
                let same_tier = self.tier_of(&existing.library) == Some(tier);
                self.conflicts.push(Conflict {
                    name,
                    first: existing.library.clone(),
                    second: lib.path.clone(),
                    shadowed: !same_tier,
                });
                continue;
            }
            self.plugins.insert(
                name,
                PluginEntry {
                    manifest,
                    library: lib.path.clone(),
                    module: lib.module,
                },
            );
        }
    }

    fn tier_of(&self, library: &Path) -> Option<usize> {
        let dir = library.parent()?;
        self.searched
            .iter()
            .position(|d| d.canonicalize().ok() == dir.canonicalize().ok())
    }

    /// Every plugin, sorted by name.
    pub fn plugins(&self) -> impl Iterator<Item = &PluginEntry> {
        self.plugins.values()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.plugins.keys().map(String::as_str)
    }

    /// Look a plugin up by name.
    pub fn get(&self, name: &str) -> Result<&PluginEntry, LookupError> {
        if let Some(c) = self
            .conflicts
            .iter()
            .find(|c| c.name == name && !c.shadowed)
        {
            return Err(LookupError::Ambiguous {
                name: name.into(),
                first: c.first.clone(),
                second: c.second.clone(),
            });
        }
        self.plugins.get(name).ok_or_else(|| LookupError::Unknown {
            name: name.into(),
            suggestions: closest(name, self.names()),
        })
    }
}
