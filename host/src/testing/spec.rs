//! The test file format (`*.test.toml`): which pipeline, which stages to replace, how to run
//! it, and what must hold afterwards.
//!
//! ```toml
//! pipeline = "../mock-restart.toml"          # relative to this file
//! name = "a panic at block 50 is restarted"  # default: the file's name
//! for = "2s"                                  # optional: stop after this long
//!
//! [replace.source]                            # a stage's plugin and config, keeping its id,
//! plugin = "tone"                             # inputs, buffer and on_error
//! seconds = 1.0
//!
//! [expect]
//! exit = 0
//! end = "sources-ended"
//! [expect.stages.flaky]                       # any field of the stage's summary
//! restarts = 1
//! [expect.edges."flaky.out -> check"]         # any field of the edge's counters
//! dropped_stage_error_frames = 480
//! [expect.storage.check]
//! frames_written = 47520
//! [expect.files."../recordings/x.wav"]        # a WAV written by the run, read back
//! frames = 48000
//! peak_db = [-6.0, -6.0]                      # per channel, within tolerance_db (default 0.1)
//! reference = "ref.wav"                       # sample by sample, within max_lsb (default 0)
//! [expect.json]                               # any summary field by its dotted path
//! "lost_frames.stage-error" = 480
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    pub pipeline: String,
    pub name: Option<String>,
    #[serde(rename = "for")]
    pub duration: Option<String>,
    #[serde(default)]
    pub replace: BTreeMap<String, toml::Table>,
    #[serde(default)]
    pub expect: Expect,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub exit: Option<i32>,
    pub end: Option<String>,
    #[serde(default)]
    pub stages: BTreeMap<String, toml::Table>,
    #[serde(default)]
    pub edges: BTreeMap<String, toml::Table>,
    #[serde(default)]
    pub storage: BTreeMap<String, toml::Table>,
    #[serde(default)]
    pub files: BTreeMap<String, FileExpect>,
    #[serde(default)]
    pub json: toml::Table,
}

/// What a WAV file the run wrote must hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileExpect {
    pub frames: Option<u64>,
    pub channels: Option<u16>,
    pub peak_db: Option<Vec<f64>>,
    pub rms_db: Option<Vec<f64>>,
    pub tolerance_db: Option<f64>,
    pub reference: Option<String>,
    pub max_lsb: Option<u64>,
}
