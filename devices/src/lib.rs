//! Audio input devices through cpal: the one place that enumerates them and resolves a
//! `device = "..."` setting, used by both `tapeline devices` and the `cpal-capture` plugin, so
//! the index and names the command prints are exactly what the plugin accepts.
//!
//! A device setting is, in order of precedence:
//! - `"default"`: the backend's default input device;
//! - a number: the index `tapeline devices` prints;
//! - a device's exact id (the ALSA PCM name, e.g. `hw:CARD=PCH,DEV=0`) or exact description;
//! - a part of one id or description (case-insensitive), if exactly one device matches.

use std::fmt;

pub use cpal;
use cpal::traits::{DeviceTrait, HostTrait};
use cpal::{Device, Host, HostId, SampleFormat, SupportedStreamConfigRange};

/// The setting that selects the backend's default input device.
pub const DEFAULT_DEVICE: &str = "default";

/// Why a device could not be listed or opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceError {
    /// The audio backend itself is unavailable (no ALSA, no PulseAudio server, ...).
    HostUnavailable { backend: String, message: String },
    /// No device matches the setting. `available` lists the input devices there are.
    NotFound {
        selector: String,
        available: Vec<String>,
    },
    /// More than one device matches a partial name.
    Ambiguous {
        selector: String,
        matches: Vec<String>,
    },
    /// The backend failed while listing devices.
    Enumerate(String),
}

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceError::HostUnavailable { backend, message } => {
                write!(f, "the {backend} audio backend is unavailable: {message}")
            }
            DeviceError::NotFound {
                selector,
                available,
            } => {
                write!(f, "no input device matches \"{selector}\"")?;
                if available.is_empty() {
                    write!(f, " (there are no input devices)")
                } else {
                    write!(f, " (input devices: {})", available.join(", "))
                }
            }
            DeviceError::Ambiguous { selector, matches } => write!(
                f,
                "\"{selector}\" matches {} input devices: {}; name one exactly or by index",
                matches.len(),
                matches.join(", ")
            ),
            DeviceError::Enumerate(m) => write!(f, "cannot list audio devices: {m}"),
        }
    }
}

impl std::error::Error for DeviceError {}

/// alsa-lib prints its own complaints (`ALSA lib confmisc.c:855:(parse_card) cannot find card
/// '0'`, a dozen lines per probe) on stderr; route them, for this thread, into a buffer nobody
/// reads: every failure that matters comes back as an error value and is reported once.
fn quiet_alsa() {
    #[cfg(target_os = "linux")]
    {
        if alsa::Output::local_error_handler().is_err() {
            // Not routed: alsa-lib's lines still reach stderr; every error is reported anyway.
        }
    }
}

/// The audio backends a setting `host = "..."` can name, as cpal was built here.
pub fn backends() -> Vec<&'static str> {
    cpal::available_hosts().iter().map(|h| h.name()).collect()
}

/// The cpal host of the named backend (`"alsa"` when `None`; the name is matched ignoring case).
pub fn host(backend: Option<&str>) -> Result<Host, DeviceError> {
    quiet_alsa();
    let name = backend.unwrap_or("alsa");
    let id = cpal::available_hosts()
        .into_iter()
        .find(|h| h.name().eq_ignore_ascii_case(name))
        .or_else(|| name.parse::<HostId>().ok())
        .ok_or_else(|| DeviceError::HostUnavailable {
            backend: name.to_string(),
            message: format!(
                "this build knows the backends {}",
                backends()
                    .iter()
                    .map(|b| format!("\"{}\"", b.to_lowercase()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })?;
    cpal::host_from_id(id).map_err(|e| DeviceError::HostUnavailable {
        backend: id.name().to_string(),
        message: e.to_string(),
    })
}

/// One input device as listed: its index (usable as `device = "N"`), id, description, and
/// whether it is the backend's default input.
#[derive(Clone)]
pub struct Listed {
    pub index: usize,
    pub device: Device,
    /// The backend's id of the device (the ALSA PCM name).
    pub id: String,
    /// The first line of its description, or the id.
    pub name: String,
    pub is_default: bool,
}

impl Listed {
    /// `id` with the description when it says more: `hw:CARD=PCH,DEV=0 (HDA Intel PCH)`.
    pub fn label(&self) -> String {
        if self.name == self.id || self.name.is_empty() {
            self.id.clone()
        } else {
            format!("{} ({})", self.id, self.name)
        }
    }
}

fn device_id(d: &Device) -> String {
    d.id()
        .map(|id| id.id().to_string())
        .unwrap_or_else(|_| d.to_string())
}

fn device_name(d: &Device) -> String {
    d.description()
        .map(|desc| desc.name().to_string())
        .unwrap_or_default()
}

/// Every input device of `host`, in the order `tapeline devices` prints and indexes them. The
/// default input device is always in the list (first, when the backend does not list it).
pub fn input_devices(host: &Host) -> Result<Vec<Listed>, DeviceError> {
    let default = host.default_input_device();
    let default_id = default.as_ref().map(device_id);
    let mut devices: Vec<Device> = host
        .input_devices()
        .map_err(|e| DeviceError::Enumerate(e.to_string()))?
        .collect();
    if let (Some(d), Some(id)) = (&default, &default_id) {
        if !devices.iter().any(|x| &device_id(x) == id) {
            devices.insert(0, d.clone());
        }
    }
    Ok(devices
        .into_iter()
        .enumerate()
        .map(|(index, device)| {
            let id = device_id(&device);
            let name = device_name(&device);
            Listed {
                index,
                is_default: default_id.as_deref() == Some(id.as_str()),
                device,
                id,
                name,
            }
        })
        .collect())
}

/// The input device a `device = "..."` setting names (see the crate docs for the rules).
pub fn find(host: &Host, selector: &str) -> Result<Listed, DeviceError> {
    let selector = selector.trim();
    let list = input_devices(host)?;
    let not_found = |list: &[Listed]| DeviceError::NotFound {
        selector: selector.to_string(),
        available: list
            .iter()
            .map(|d| format!("{}: {}", d.index, d.id))
            .collect(),
    };
    if selector.eq_ignore_ascii_case(DEFAULT_DEVICE) {
        if let Some(d) = list.iter().find(|d| d.is_default) {
            return Ok(d.clone());
        }
    }
    if let Ok(i) = selector.parse::<usize>() {
        return list.get(i).cloned().ok_or_else(|| not_found(&list));
    }
    if let Some(d) = list.iter().find(|d| d.id == selector || d.name == selector) {
        return Ok(d.clone());
    }
    let needle = selector.to_lowercase();
    let matches: Vec<&Listed> = list
        .iter()
        .filter(|d| {
            d.id.to_lowercase().contains(&needle) || d.name.to_lowercase().contains(&needle)
        })
        .collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(not_found(&list)),
        many => Err(DeviceError::Ambiguous {
            selector: selector.to_string(),
            matches: many
                .iter()
                .map(|d| format!("{}: {}", d.index, d.id))
                .collect(),
        }),
    }
}

/// What one device supports for input, summarised for people.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Channel counts, ascending.
    pub channels: Vec<u16>,
    /// Inclusive sample-rate ranges, ascending and merged.
    pub rates: Vec<(u32, u32)>,
    /// Sample formats, in the order cpal ranks them (best first).
    pub formats: Vec<SampleFormat>,
    /// The device's default input configuration: channels, rate, format.
    pub default: Option<(u16, u32, SampleFormat)>,
}

/// Every input configuration the device offers.
pub fn input_configs(device: &Device) -> Result<Vec<SupportedStreamConfigRange>, String> {
    device
        .supported_input_configs()
        .map(|it| it.collect())
        .map_err(|e| e.to_string())
}

/// Query the device (this opens it briefly) and summarise what it supports for input.
pub fn capabilities(device: &Device) -> Result<Capabilities, String> {
    let configs = input_configs(device)?;
    let mut caps = Capabilities::default();
    for c in &configs {
        // Only PCM: DSD is a bitstream, not samples to record.
        if c.sample_format().is_dsd() {
            continue;
        }
        if !caps.channels.contains(&c.channels()) {
            caps.channels.push(c.channels());
        }
        caps.rates.push((c.min_sample_rate(), c.max_sample_rate()));
        if !caps.formats.contains(&c.sample_format()) {
            caps.formats.push(c.sample_format());
        }
    }
    caps.channels.sort_unstable();
    caps.rates.sort_unstable();
    let mut merged: Vec<(u32, u32)> = Vec::new();
    for (lo, hi) in caps.rates.drain(..) {
        match merged.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    caps.rates = merged;
    caps.default = device
        .default_input_config()
        .ok()
        .map(|c| (c.channels(), c.sample_rate(), c.sample_format()));
    Ok(caps)
}

/// True if some input configuration has exactly these channels, rate and format (`None` = any).
pub fn supports(
    configs: &[SupportedStreamConfigRange],
    channels: Option<u16>,
    rate: Option<u32>,
    format: Option<SampleFormat>,
) -> bool {
    configs.iter().any(|c| {
        channels.is_none_or(|ch| c.channels() == ch)
            && rate.is_none_or(|r| (c.min_sample_rate()..=c.max_sample_rate()).contains(&r))
            && format.is_none_or(|f| c.sample_format() == f)
    })
}

/// The sample formats a setting `sample_format = "..."` can name: every PCM format cpal has.
pub const PCM_FORMATS: &[SampleFormat] = &[
    SampleFormat::I8,
    SampleFormat::I16,
    SampleFormat::I24,
    SampleFormat::I32,
    SampleFormat::I64,
    SampleFormat::U8,
    SampleFormat::U16,
    SampleFormat::U24,
    SampleFormat::U32,
    SampleFormat::U64,
    SampleFormat::F32,
    SampleFormat::F64,
];

/// Parse a sample format name as `tapeline devices` prints it (`i16`, `f32`, ...).
pub fn parse_format(name: &str) -> Option<SampleFormat> {
    PCM_FORMATS
        .iter()
        .copied()
        .find(|f| f.to_string().eq_ignore_ascii_case(name.trim()))
}

/// `a-b` or `a` for a range; rates print as Hz.
pub fn range_text(lo: u32, hi: u32) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}-{hi}")
    }
}

/// Channel counts as compact ranges: `1-2, 4, 6-8`.
pub fn channels_text(channels: &[u16]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < channels.len() {
        let start = channels[i];
        let mut end = start;
        while i + 1 < channels.len() && channels[i + 1] == end + 1 {
            i += 1;
            end = channels[i];
        }
        parts.push(range_text(u32::from(start), u32::from(end)));
        i += 1;
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_names_round_trip() {
        for f in PCM_FORMATS {
            assert_eq!(parse_format(&f.to_string()), Some(*f));
        }
        assert_eq!(parse_format("F32"), Some(SampleFormat::F32));
        assert_eq!(parse_format("dsdu8"), None);
        assert_eq!(parse_format("s16le"), None);
    }

    #[test]
    fn channel_lists_collapse_into_ranges() {
        assert_eq!(channels_text(&[1, 2, 4, 6, 7, 8]), "1-2, 4, 6-8");
        assert_eq!(channels_text(&[2]), "2");
        assert_eq!(channels_text(&[]), "");
    }
}
