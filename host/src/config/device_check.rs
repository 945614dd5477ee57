//! A `cpal-capture` stage whose `device` matches no input device on this machine. When the stage
//! gives its channels and sample rate, validation does not need the device (it may be present
//! only where the pipeline runs), so this is a warning, listing the devices that are here; `run`
//! still needs the device. (Without them the plugin itself must open the device to know its
//! format, and reports a missing one as an error.)

use super::diagnostic::Diagnostic;
use super::parse::PipelineFile;

#[cfg(feature = "devices")]
pub fn warn_absent_devices(file: &PipelineFile, diags: &mut Vec<Diagnostic>) {
    use tapeline_devices::DeviceError;
    for s in file.stages.iter().filter(|s| s.plugin == "cpal-capture") {
        let fully_given = s.config.contains_key("channels") && s.config.contains_key("sample_rate");
        let selector = s.config.get("device").and_then(|v| v.as_str());
        let (Some(selector), true) = (selector, fully_given) else {
            continue;
        };
        let backend = s.config.get("host").and_then(|v| v.as_str());
        let Ok(host) = tapeline_devices::host(backend) else {
            continue;
        };
        let Err(DeviceError::NotFound { available, .. }) = tapeline_devices::find(&host, selector)
        else {
            continue;
        };
        let span = s
            .config_spans
            .get("device")
            .cloned()
            .unwrap_or(s.header_span.clone());
        let here = if available.is_empty() {
            "none".to_string()
        } else {
            available.join("; ")
        };
        diags.push(
            Diagnostic::warning(
                format!("cpal-capture: no input device here matches `{selector}` (present: {here})"),
                span,
            )
            .help("fine if the device is on the machine that runs the pipeline; `tapeline devices` lists these")
            .stage(&s.id),
        );
    }
}

#[cfg(not(feature = "devices"))]
pub fn warn_absent_devices(_file: &PipelineFile, _diags: &mut Vec<Diagnostic>) {}
