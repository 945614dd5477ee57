//! Why a run failed: one [`RunError`] naming the stage and its [`StageFault`].

use tapeline_plugin_api::abi::PluginError;

/// What went wrong in one stage.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StageFault {
    /// The plugin returned an error (or panicked); `kind` is the plugin error's kind.
    #[error("{message}")]
    Plugin {
        kind: String,
        message: String,
        /// The config key a config error is about.
        key: Option<String>,
    },
    /// A plugin call lasted longer than `stall_timeout_ms` under `on_error = fail`.
    #[error("{0}")]
    Stalled(String),
    /// The stage could not be set up (a host-side check before any plugin call).
    #[error("{0}")]
    Setup(String),
}

impl StageFault {
    /// The config key a plugin's config error is about.
    pub fn key(&self) -> Option<&str> {
        match self {
            StageFault::Plugin { key, .. } => key.as_deref(),
            _ => None,
        }
    }

    /// The kind as the summary says it: a plugin error kind, `stalled` or `setup`.
    pub fn kind(&self) -> &str {
        match self {
            StageFault::Plugin { kind, .. } => kind,
            StageFault::Stalled(_) => "stalled",
            StageFault::Setup(_) => "setup",
        }
    }
}

impl From<&PluginError> for StageFault {
    fn from(e: &PluginError) -> Self {
        StageFault::Plugin {
            kind: e.kind().as_str().to_string(),
            message: e.message().to_string(),
            key: e.key().map(str::to_string),
        }
    }
}

/// The failure that ended a run.
#[derive(Debug, Clone, thiserror::Error)]
#[error("stage {stage} failed: {fault}")]
pub struct RunError {
    /// Index of the stage in the plan.
    pub stage: usize,
    pub fault: StageFault,
}
