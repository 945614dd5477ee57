//! Loading one plugin library through the stable ABI, and explaining why a file is not usable.

use std::path::{Path, PathBuf};

use abi_stable::abi_stability::abi_checking::{check_layout_compatibility, AbiInstabilityErrors};
use abi_stable::library::{lib_header_from_path, LibHeader, LibraryError, RootModule};
use abi_stable::sabi_types::VersionNumber;
use abi_stable::type_layout::TLFieldOrFunction;
use tapeline_plugin_api::abi::{PluginLibraryRef, PluginManifest};
use tapeline_plugin_api::API_VERSION;

/// A library that loaded and passed every check.
#[derive(Clone)]
pub struct LoadedLibrary {
    pub path: PathBuf,
    pub module: PluginLibraryRef,
    pub manifests: Vec<PluginManifest>,
}

/// Why a file is not a usable plugin library. Each variant's message is one line; [`help`]
/// says what to do; [`detail`] holds the raw report shown with `--verbose`.
///
/// [`help`]: LoadError::help
/// [`detail`]: LoadError::detail
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The path does not exist. Retrying cannot help until the file is built or the path fixed.
    #[error("{path}: no such file")]
    Missing { path: PathBuf },
    /// The file exists but the dynamic loader refused it (not a shared library, wrong
    /// architecture, missing dependency).
    #[error("{path}: not a loadable shared library ({reason})")]
    NotALibrary { path: PathBuf, reason: String },
    /// A shared library that does not export a Tapeline root module.
    #[error(
        "{path}: a shared library, but not a Tapeline plugin (it exports no Tapeline root module)"
    )]
    NotAPlugin { path: PathBuf },
    /// Built with an `abi_stable` whose header this host cannot read.
    #[error("{path}: built with an incompatible abi_stable version")]
    AbiStable { path: PathBuf, detail: String },
    /// Built against another `tapeline-plugin-api` version.
    #[error("{path}: built for tapeline-plugin-api {built_for}; this host speaks {host}")]
    ApiVersion {
        path: PathBuf,
        built_for: String,
        host: String,
    },
    /// Same API version, but the types differ (a modified or mismatched copy of the API).
    #[error("{path}: ABI layout mismatch: {first}")]
    Layout {
        path: PathBuf,
        first: String,
        detail: String,
    },
    /// The library's root module failed to initialise or panicked.
    #[error("{path}: the plugin library failed to initialise: {reason}")]
    Init { path: PathBuf, reason: String },
}

impl LoadError {
    pub fn path(&self) -> &Path {
        match self {
            LoadError::Missing { path }
            | LoadError::NotALibrary { path, .. }
            | LoadError::NotAPlugin { path }
            | LoadError::AbiStable { path, .. }
            | LoadError::ApiVersion { path, .. }
            | LoadError::Layout { path, .. }
            | LoadError::Init { path, .. } => path,
        }
    }

    /// What to do about it.
    pub fn help(&self) -> String {
        match self {
            LoadError::Missing { .. } => {
                "check the path, or build the plugin first (cargo build --release)".into()
            }
            LoadError::NotALibrary { .. } => {
                "point at the .so/.dylib/.dll that cargo builds for a crate with crate-type = [\"cdylib\"]"
                    .into()
            }
            LoadError::NotAPlugin { .. } => {
                "a plugin crate must call tapeline_plugin_api::export_plugin!(...); other libraries cannot be loaded"
                    .into()
            }
            LoadError::AbiStable { .. } | LoadError::ApiVersion { .. } | LoadError::Layout { .. } => {
                format!(
                    "rebuild the plugin against tapeline-plugin-api {API_VERSION} (the version this host speaks)"
                )
            }
            LoadError::Init { .. } => "run `tapeline doctor FILE --verbose` for the details".into(),
        }
    }

    /// The long report, for `--verbose`.
    pub fn detail(&self) -> Option<&str> {
        match self {
            LoadError::AbiStable { detail, .. } | LoadError::Layout { detail, .. } => Some(detail),
            _ => None,
        }
    }
}

/// One step of loading a library, as `tapeline doctor` reports it.
pub struct Step {
    pub what: &'static str,
    pub outcome: Result<String, LoadError>,
}

/// Load the library at `path`, recording each check in `steps` as it goes.
///
/// Uses `lib_header_from_path(..)?.init_root_module()` rather than `RootModule::load_from_file`,
/// which caches one library per root-module type and would silently hand back the first library
/// for every later path.
pub fn load_with_steps(path: &Path, steps: &mut Vec<Step>) -> Result<LoadedLibrary, LoadError> {
    record(steps, "file exists", exists(path), |_| {
        path.display().to_string()
    })?;
    let header = record(
        steps,
        "opens as a shared library exporting a Tapeline root module",
        open(path),
        |_| "yes".into(),
    )?;
    let built_for = header.version_strings().version.to_string();
    record(
        steps,
        "built for this host's plugin API version",
        check_version(path, header),
        |_| format!("{built_for} (host speaks {API_VERSION})"),
    )?;
    record(
        steps,
        "ABI layout matches the host's",
        check_layout(path, header),
        |s| s.clone(),
    )?;
    let module = record(steps, "root module initialises", init(path, header), |_| {
        "yes".into()
    })?;
    let manifests: Vec<PluginManifest> = (module.manifests())().into_iter().collect();
    let names: Vec<String> = manifests
        .iter()
        .map(|m| format!("{} ({})", m.name, m.kind))
        .collect();
    let listed: Result<(), LoadError> = Ok(());
    record(steps, "lists its plugins", listed, |_| {
        if names.is_empty() {
            "none".into()
        } else {
            names.join(", ")
        }
    })?;
    Ok(LoadedLibrary {
        path: path.to_path_buf(),
        module,
        manifests,
    })
}

fn record<T>(
    steps: &mut Vec<Step>,
    what: &'static str,
    result: Result<T, LoadError>,
    describe: impl FnOnce(&T) -> String,
) -> Result<T, LoadError> {
    let outcome = match &result {
        Ok(v) => Ok(describe(v)),
        Err(e) => Err(e.clone()),
    };
    steps.push(Step { what, outcome });
    result
}

/// Load the library at `path`.
pub fn load(path: &Path) -> Result<LoadedLibrary, LoadError> {
    load_with_steps(path, &mut Vec::new())
}

fn exists(path: &Path) -> Result<(), LoadError> {
    if path.is_file() {
        Ok(())
    } else {
        Err(LoadError::Missing {
            path: path.to_path_buf(),
        })
    }
}

fn open(path: &Path) -> Result<&'static LibHeader, LoadError> {
    lib_header_from_path(path).map_err(|e| library_error(path, e))
}

fn check_version(path: &Path, header: &LibHeader) -> Result<(), LoadError> {
    let built_for = header.version_strings().version.as_str();
    let mismatch = || LoadError::ApiVersion {
        path: path.to_path_buf(),
        built_for: built_for.to_string(),
        host: API_VERSION.to_string(),
    };
    let host = VersionNumber::new(<PluginLibraryRef as RootModule>::VERSION_STRINGS)
        .map_err(|_| mismatch())?;
    let lib = VersionNumber::new(header.version_strings()).map_err(|_| mismatch())?;
    // 0.x: the minor version is the ABI version; from 1.0 on, the major.
    let compatible = if host.major == 0 {
        lib.major == 0 && lib.minor == host.minor
    } else {
        lib.major == host.major
    };
    if compatible {
        Ok(())
    } else {
        Err(mismatch())
    }
}

/// The root module, once the version and the layout are checked (by [`check_version`] and
/// [`check_layout`]). Not `init_root_module`: abi_stable's own version rule refuses a library
/// whose minor version is older than the host's, which is what API 1.x promises to load.
fn init(path: &Path, header: &LibHeader) -> Result<PluginLibraryRef, LoadError> {
    // SAFETY: `load_with_steps` calls this only after `check_layout` found the library's root
    // module layout compatible with `PluginLibraryRef`'s (a library without a layout is refused
    // there).
    unsafe { header.unchecked_layout::<PluginLibraryRef>() }
        .map_err(|e| library_error(path, e.into_library_error::<PluginLibraryRef>()))
}

fn check_layout(path: &Path, header: &LibHeader) -> Result<String, LoadError> {
    let Some(found) = header.layout() else {
        return Err(LoadError::Layout {
            path: path.to_path_buf(),
            first: "the library exports no layout to check".into(),
            detail: String::new(),
        });
    };
    match check_layout_compatibility(<PluginLibraryRef as abi_stable::StableAbi>::LAYOUT, found) {
        Ok(()) => Ok("yes".into()),
        Err(errors) => Err(LoadError::Layout {
            path: path.to_path_buf(),
            first: first_layout_difference(&errors),
            detail: format!("{errors:?}"),
        }),
    }
}

/// Name the differing field and its two types, in one line: the most specific error (the
/// deepest in the type tree) is the one that tells a person what changed.
fn first_layout_difference(errors: &AbiInstabilityErrors) -> String {
    let Some(deepest) = errors
        .errors
        .iter()
        .filter(|e| !e.errs.is_empty())
        .max_by_key(|e| e.stack_trace.len())
    else {
        return "the root module's layout differs".into();
    };
    let fields: Vec<_> = deepest
        .stack_trace
        .iter()
        .filter_map(|ef| match &ef.expected {
            TLFieldOrFunction::Field(f) => Some(f),
            TLFieldOrFunction::Function(_) => None,
        })
        .collect();
    let path = match fields.as_slice() {
        [.., outer, field] => format!("{}.{}", outer.layout().name(), field.name()),
        [field] => field.name().to_string(),
        [] => "root module".to_string(),
    };
    match deepest
        .stack_trace
        .last()
        .map(|ef| (&ef.expected, &ef.found))
    {
        Some((TLFieldOrFunction::Field(e), TLFieldOrFunction::Field(f))) => format!(
            "{path}: expected `{}`, found `{}`",
            e.layout().full_type(),
            f.layout().full_type()
        ),
        _ => {
            let err = format!("{:?}", deepest.errs[0]);
            let err: String = err.split_whitespace().collect::<Vec<_>>().join(" ");
            format!("{path}: {}", err.chars().take(160).collect::<String>())
        }
    }
}

fn library_error(path: &Path, e: LibraryError) -> LoadError {
    let path = path.to_path_buf();
    match e {
        LibraryError::OpenError { err, .. } => {
            if !path.exists() {
                return LoadError::Missing { path };
            }
            let reason = err.to_string();
            // dlerror repeats the path; keep what follows it.
            let reason = match reason.rsplit_once(": ") {
                Some((_, tail)) => tail.to_string(),
                None => reason,
            };
            LoadError::NotALibrary { path, reason }
        }
        LibraryError::GetSymbolError { .. } => LoadError::NotAPlugin { path },
        LibraryError::InvalidAbiHeader(h) => LoadError::AbiStable {
            path,
            detail: format!("{h:?}"),
        },
        LibraryError::InvalidCAbi { expected, found } => LoadError::AbiStable {
            path,
            detail: format!("C ABI test failed: expected {expected}, found {found}"),
        },
        LibraryError::IncompatibleVersionNumber { actual_version, .. } => LoadError::ApiVersion {
            path,
            built_for: actual_version.to_string(),
            host: API_VERSION.to_string(),
        },
        LibraryError::AbiInstability(e) => LoadError::Layout {
            path,
            first: "the root module's layout differs".into(),
            detail: e.to_string(),
        },
        other => LoadError::Init {
            path,
            reason: other.to_string().trim().replace('\n', " "),
        },
    }
}
