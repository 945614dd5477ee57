//! Builds instances of one stage's plugin through the ABI: at start, and again on restart.

use std::sync::Arc;

use abi_stable::std_types::{RSlice, RStr};
use tapeline_plugin_api::abi::{
    CaptureBox, ContextFields, ContextRef, PluginError, PluginLibraryRef, PortFormat, ProcessorBox,
    StorageBox,
};

use crate::isolation::protocol::Init;
use crate::isolation::proxy::{ChildStage, Isolation};

/// An isolated stage's instances are built in a child process.
pub struct Isolated {
    pub iso: Arc<Isolation>,
    pub init: Init,
}

pub struct Factory {
    pub module: PluginLibraryRef,
    pub plugin: String,
    pub config: String,
    pub id: String,
    pub base_dir: String,
    pub inputs: Vec<PortFormat>,
    pub sample_rate: u32,
    pub block_frames: u32,
    pub isolated: Option<Isolated>,
}

impl Factory {
    fn ctx(&self) -> ContextFields<'_> {
        ContextFields {
            stage_id: RStr::from_str(&self.id),
            sample_rate: self.sample_rate,
            block_frames: self.block_frames,
            base_dir: RStr::from_str(&self.base_dir),
            inputs: RSlice::from_slice(&self.inputs),
        }
    }
    pub fn capture(&self) -> Result<CaptureBox, PluginError> {
        if let Some(i) = &self.isolated {
            return ChildStage::new(i.init.clone(), i.iso.clone()).map(ChildStage::into_capture);
        }
        (self.module.new_capture())(self.name(), self.config(), ContextRef::new(&self.ctx()))
            .into_result()
    }
    pub fn processor(&self) -> Result<ProcessorBox, PluginError> {
        if let Some(i) = &self.isolated {
            return ChildStage::new(i.init.clone(), i.iso.clone()).map(ChildStage::into_processor);
        }
        (self.module.new_processor())(self.name(), self.config(), ContextRef::new(&self.ctx()))
            .into_result()
    }
    pub fn storage(&self) -> Result<StorageBox, PluginError> {
        if let Some(i) = &self.isolated {
            return ChildStage::new(i.init.clone(), i.iso.clone()).map(ChildStage::into_storage);
        }
        (self.module.new_storage())(self.name(), self.config(), ContextRef::new(&self.ctx()))
            .into_result()
    }
    fn name(&self) -> RStr<'_> {
        RStr::from_str(&self.plugin)
    }
    fn config(&self) -> RStr<'_> {
        RStr::from_str(&self.config)
    }
}
