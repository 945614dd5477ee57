//! `tapeline devices`: every audio input device, with what it can record and the index and name
//! `cpal-capture`'s `device = "..."` accepts. The listing and the matching both come from
//! `tapeline-devices`, the crate the plugin uses, so the two always agree.
//!
//! Only in builds with the host's `devices` feature (`bash scripts/build-devices.sh`): ALSA's
//! binding needs system packages to build. Without it the command exists and says how to get it.

#[cfg(feature = "devices")]
use std::process::ExitCode;

use clap::{Args, ValueEnum};
#[cfg(feature = "devices")]
use serde_json::json;
#[cfg(feature = "devices")]
use tapeline_devices::{Capabilities, DeviceError, Listed};

use super::{CliError, CliResult, GlobalArgs};

#[derive(Args, Debug)]
pub struct DevicesArgs {
    /// Audio backend to list: "alsa" (the default, and what cpal-capture uses unless its `host`
    /// says otherwise); an unknown name is an error that lists the backends of this build.
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = DevicesFormat::Text)]
    pub format: DevicesFormat,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevicesFormat {
    /// One entry per device for people.
    Text,
    /// A JSON array, one object per device.
    Json,
}

/// A build without the `devices` feature: exit 2, naming the script that builds it.
#[cfg(not(feature = "devices"))]
pub fn devices(_global: &GlobalArgs, _args: DevicesArgs) -> CliResult {
    Err(CliError::input(
        "this tapeline was built without audio-device support",
        format!(
            "build it with `{}` in the Tapeline checkout (it needs \
             `sudo apt-get install pkg-config libasound2-dev`); see docs/devices.md",
            crate::plugins::BUILD_DEVICE_SUPPORT
        ),
    ))
}

/// List the input devices. Exit 0; 2 if the backend is unavailable or there is no input device.
#[cfg(feature = "devices")]
pub fn devices(_global: &GlobalArgs, args: DevicesArgs) -> CliResult {
    if let Some(name) = &args.host {
        check_backend(name)?;
    }
    let host = tapeline_devices::host(args.host.as_deref()).map_err(no_backend)?;
    let list = tapeline_devices::input_devices(&host).map_err(no_backend)?;
    if list.is_empty() {
        return Err(CliError::input(
            "no audio input devices found",
            "connect or enable one (on Linux `arecord -L` lists what ALSA sees); \
             ALSA_CONFIG_PATH can add a virtual one, see docs/devices.md",
        ));
    }
    let caps: Vec<Result<Capabilities, String>> = list
        .iter()
        .map(|d| tapeline_devices::capabilities(&d.device))
        .collect();
    if let Some(e) = caps.iter().find_map(|c| c.as_ref().err()) {
        if caps.iter().all(|c| c.is_err()) {
            return Err(CliError::input(
                format!(
                    "no audio input device can be opened ({} listed; the first says: {e})",
                    list.len()
                ),
                "connect or enable one (on Linux `arecord -L` lists what ALSA sees); \
                 ALSA_CONFIG_PATH can add a virtual one, see docs/devices.md",
            ));
        }
    }
    let text = match args.format {
        DevicesFormat::Json => {
            let items: Vec<_> = list.iter().zip(&caps).map(|(d, c)| to_json(d, c)).collect();
            serde_json::to_string_pretty(&items).unwrap_or_default() + "\n"
        }
        DevicesFormat::Text => {
            let mut text = String::new();
            for (d, c) in list.iter().zip(&caps) {
                text += &entry_text(d, c);
            }
            let example = list.iter().find(|d| d.is_default).unwrap_or(&list[0]);
            text += &format!(
                "\n* = default input. In a pipeline: device = \"{}\" (index) or device = \"{}\" \
                 (name, or a unique part of it).\n",
                example.index, example.id
            );
            text
        }
    };
    super::print_out(&text);
    Ok(ExitCode::SUCCESS)
}

/// The backends this build knows (whether or not they are usable on this machine), as `--host`
/// takes them.
#[cfg(feature = "devices")]
fn known_backends() -> Vec<String> {
    tapeline_devices::cpal::ALL_HOSTS
        .iter()
        .map(|h| h.name().to_lowercase())
        .collect()
}

/// `--host NAME` names a backend of this build (any case).
#[cfg(feature = "devices")]
fn check_backend(name: &str) -> Result<(), CliError> {
    let known = known_backends();
    if known.iter().any(|k| k.eq_ignore_ascii_case(name)) {
        return Ok(());
    }
    let list = known
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let suggestion =
        crate::plugins::closest(&name.to_lowercase(), known.iter().map(String::as_str));
    let help = match suggestion.first() {
        Some(s) => {
            format!("did you mean `{s}`? Known backends: {list} (leave out --host for alsa)")
        }
        None => format!("known backends: {list} (leave out --host for alsa)"),
    };
    Err(CliError::input(format!("unknown backend `{name}`"), help))
}

#[cfg(feature = "devices")]
fn no_backend(e: DeviceError) -> CliError {
    let help = match &e {
        DeviceError::HostUnavailable { backend, .. } if backend.eq_ignore_ascii_case("alsa") => {
            "install ALSA (Debian/Ubuntu: `apt-get install libasound2`)".to_string()
        }
        DeviceError::HostUnavailable { .. } => format!(
            "leave out --host to list ALSA's devices; backends in this build: {}",
            tapeline_devices::backends().join(", ")
        ),
        _ => "check that ALSA works: `arecord -L` lists the devices it sees".to_string(),
    };
    CliError::input(e.to_string(), help)
}

#[cfg(feature = "devices")]
fn formats_text(c: &Capabilities) -> String {
    c.formats
        .iter()
        .map(|f| f.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(feature = "devices")]
fn rates_text(c: &Capabilities) -> String {
    c.rates
        .iter()
        .map(|(lo, hi)| tapeline_devices::range_text(*lo, *hi))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(feature = "devices")]
fn entry_text(d: &Listed, caps: &Result<Capabilities, String>) -> String {
    let mark = if d.is_default { "*" } else { " " };
    let mut t = if d.name.is_empty() || d.name == d.id {
        format!("{:>3}{mark} {}\n", d.index, d.id)
    } else {
        format!("{:>3}{mark} {}  ({})\n", d.index, d.id, d.name)
    };
    match caps {
        Ok(c) => {
            t += &format!(
                "      channels {}; rates {} Hz; formats {}\n",
                tapeline_devices::channels_text(&c.channels),
                rates_text(c),
                formats_text(c)
            );
            if let Some((ch, rate, format)) = c.default {
                t += &format!("      default: {ch} channel(s), {rate} Hz, {format}\n");
            }
        }
        Err(e) => t += &format!("      cannot open it now: {e}\n"),
    }
    t
}

#[cfg(feature = "devices")]
fn to_json(d: &Listed, caps: &Result<Capabilities, String>) -> serde_json::Value {
    let mut v = json!({
        "index": d.index,
        "id": d.id,
        "name": d.name,
        "default": d.is_default,
    });
    match caps {
        Ok(c) => {
            v["channels"] = json!(c.channels);
            v["rates"] = json!(c.rates);
            v["formats"] = json!(c.formats.iter().map(|f| f.to_string()).collect::<Vec<_>>());
            v["default_config"] = match c.default {
                Some((ch, rate, f)) => {
                    json!({ "channels": ch, "sample_rate": rate, "sample_format": f.to_string() })
                }
                None => serde_json::Value::Null,
            };
        }
        Err(e) => v["error"] = json!(e),
    }
    v
}
