//! Builds instances of one stage's plugin through the ABI: at start, and again on restart.

use abi_stable::std_types::{RSlice, RStr};
use tapeline_plugin_api::abi::{
    CaptureBox, PluginError, PluginLibraryRef, PortFormat, ProcessorBox, StageContext, StorageBox,
};

pub struct Factory {
    pub module: PluginLibraryRef,
    pub plugin: String,
    pub config: String,
    pub id: String,
    pub base_dir: String,
    pub inputs: Vec<PortFormat>,
    pub sample_rate: u32,
    pub block_frames: u32,
}

impl Factory {
    fn ctx(&self) -> StageContext<'_> {
        StageContext {
            stage_id: RStr::from_str(&self.id),
            sample_rate: self.sample_rate,
            block_frames: self.block_frames,
            base_dir: RStr::from_str(&self.base_dir),
            inputs: RSlice::from_slice(&self.inputs),
        }
    }
    pub fn capture(&self) -> Result<CaptureBox, PluginError> {
        (self.module.new_capture())(self.name(), self.config(), &self.ctx()).into_result()
    }
    pub fn processor(&self) -> Result<ProcessorBox, PluginError> {
        (self.module.new_processor())(self.name(), self.config(), &self.ctx()).into_result()
    }
    pub fn storage(&self) -> Result<StorageBox, PluginError> {
        (self.module.new_storage())(self.name(), self.config(), &self.ctx()).into_result()
    }
    fn name(&self) -> RStr<'_> {
        RStr::from_str(&self.plugin)
    }
    fn config(&self) -> RStr<'_> {
        RStr::from_str(&self.config)
    }
}
