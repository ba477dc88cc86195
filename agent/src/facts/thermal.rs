//! Temperatures, as Telegraf's `temp` input finds them on Linux: the hwmon devices' temperature
//! inputs (`/sys/class/hwmon/hwmonN/tempM_input`) when there are any, else the thermal zones
//! (`/sys/class/thermal/thermal_zoneN/{type,temp}`); millidegrees Celsius in both
//! (Documentation/hwmon/sysfs-interface.rst, Documentation/driver-api/thermal/sysfs-api.rst).
//!
//! Sensor names follow Telegraf's (its `metric_format = "v2"`, the default since 1.22.4):
//! - hwmon: `<name>_<label>_input`, `name` from the device's `name` file (else the basename of
//!   its `device` link), `label` from `tempM_label` lowercased with spaces as `_`, left out
//!   when there is none. A Raspberry Pi's SoC sensor is `cpu_thermal_input`.
//! - thermal zones: the zone's `type`. Telegraf gives two zones of one type (x86 machines often
//!   have several `acpitz`) the same name, so InfluxDB kept one series for both; here a name
//!   shared by several sensors is suffixed with the zone (or hwmon) number (`acpitz_0`,
//!   `acpitz_1`), and a name no other sensor has keeps Telegraf's.
//!
//! Telegraf also writes each hwmon input's thresholds (`_crit`, `_max`, `_min`, alarms) as
//! series of their own; the agent does not (see the README's Telegraf table).

use super::{FactsError, ParseError};
use std::path::{Path, PathBuf};

/// Parses a zone's `temp`: a signed integer in millidegrees Celsius (`"44388\n"` -> 44.388).
pub fn parse_temp(s: &str) -> Result<f64, ParseError> {
    let t = s.trim();
    match t.parse::<i64>() {
        Ok(milli) => Ok(milli as f64 / 1000.0),
        Err(_) => Err(ParseError::new(1, format!("{t:?} is not millidegrees"))),
    }
}

/// Parses a zone's `type` (`"cpu-thermal\n"`): one non-empty line.
pub fn parse_type(s: &str) -> Result<String, ParseError> {
    let t = s.trim();
    if t.is_empty() || t.contains('\n') {
        return Err(ParseError::new(1, "expected one non-empty line"));
    }
    Ok(t.to_string())
}

/// The `thermal_zoneN` directories under `dir`, by zone number. A missing `dir` is an empty list.
pub fn zone_dirs(dir: &Path) -> Result<Vec<PathBuf>, FactsError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(FactsError::Io {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut zones: Vec<(u32, PathBuf)> = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|source| FactsError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let name = entry.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|s| s.strip_prefix("thermal_zone"))
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        zones.push((n, entry.path()));
    }
    zones.sort();
    Ok(zones.into_iter().map(|(_, p)| p).collect())
}

/// One hwmon temperature input and Telegraf's name for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HwmonInput {
    /// The N of its `hwmonN` directory.
    pub hwmon: u32,
    /// Telegraf's sensor name.
    pub sensor: String,
    /// Its `tempM_input` file.
    pub input: PathBuf,
}

/// The number in `hwmonN`, if `name` is one.
pub fn hwmon_number(name: &[u8]) -> Option<u32> {
    std::str::from_utf8(name.strip_prefix(b"hwmon")?)
        .ok()?
        .parse()
        .ok()
}

/// Telegraf's sensor name for a hwmon input: `<name>[_<label>]_input`.
pub fn hwmon_sensor(name: &str, label: &str) -> String {
    let label = label.trim().to_lowercase().replace(' ', "_");
    if label.is_empty() {
        format!("{}_input", name.trim())
    } else {
        format!("{}_{label}_input", name.trim())
    }
}

/// Every `hwmonN/tempM_input` under `dir` (or `hwmonN/device/tempM_input`, where some kernels
/// put them), by N then M, with Telegraf's names. A missing `dir` is an empty list. Runs only
/// when the sensors are (re)discovered, so it may allocate.
pub fn hwmon_inputs(dir: &Path) -> Result<Vec<HwmonInput>, FactsError> {
    let io = |source| FactsError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(e)),
    };
    let mut devices: Vec<(u32, PathBuf)> = Vec::new();
    for entry in rd {
        let entry = entry.map_err(io)?;
        if let Some(n) = hwmon_number(entry.file_name().as_encoded_bytes()) {
            devices.push((n, entry.path()));
        }
    }
    devices.sort();
    let mut out = Vec::new();
    for (n, dev) in devices {
        let mut inputs = temp_inputs(&dev);
        let mut base = dev.clone();
        if inputs.is_empty() {
            base = dev.join("device");
            inputs = temp_inputs(&base);
        }
        if inputs.is_empty() {
            continue;
        }
        let name = match std::fs::read_to_string(dev.join("name")) {
            Ok(s) => s.trim().to_string(),
            Err(_) => std::fs::read_link(dev.join("device"))
                .ok()
                .and_then(|l| l.file_name().map(|f| f.to_string_lossy().into_owned()))
                .unwrap_or_default(),
        };
        for m in inputs {
            let label =
                std::fs::read_to_string(base.join(format!("temp{m}_label"))).unwrap_or_default();
            out.push(HwmonInput {
                hwmon: n,
                sensor: hwmon_sensor(&name, &label),
                input: base.join(format!("temp{m}_input")),
            });
        }
    }
    Ok(out)
}

/// The M of every `tempM_input` in `dir`, sorted.
fn temp_inputs(dir: &Path) -> Vec<u32> {
    let mut v: Vec<u32> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let name = e.file_name();
                    let s = name.to_str()?;
                    s.strip_prefix("temp")?.strip_suffix("_input")?.parse().ok()
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    v
}

/// Makes `names` (the zones' types, zone `numbers[i]` named `names[i]`) distinct: a name shared
/// by several zones becomes `<type>_<zone number>`; a unique one is left as it is.
pub fn distinct_names(numbers: &[u32], names: &mut [String]) {
    let shared: Vec<bool> = names
        .iter()
        .map(|n| names.iter().filter(|m| *m == n).count() > 1)
        .collect();
    for ((name, shared), number) in names.iter_mut().zip(shared).zip(numbers) {
        if shared {
            name.push('_');
            name.push_str(&number.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hwmon_names_as_telegraf_v2() {
        // Telegraf's docs: "v2 -- use v1.22.4+ sensor naming, e.g. coretemp_core_0_input".
        assert_eq!(
            hwmon_sensor("coretemp", "Core 0\n"),
            "coretemp_core_0_input"
        );
        assert_eq!(hwmon_sensor("cpu_thermal\n", ""), "cpu_thermal_input");
        assert_eq!(hwmon_number(b"hwmon12"), Some(12));
        assert_eq!(hwmon_number(b"hwmonx"), None);
    }

    #[test]
    fn shared_types_get_the_zone_number_unique_ones_keep_their_type() {
        let mut names = ["acpitz", "x86_pkg_temp", "acpitz"].map(String::from);
        distinct_names(&[0, 1, 3], &mut names);
        assert_eq!(names, ["acpitz_0", "x86_pkg_temp", "acpitz_3"]);
    }

    #[test]
    fn millidegrees() {
        assert_eq!(parse_temp("44388\n").expect("parses"), 44.388);
        assert_eq!(parse_temp("-5000\n").expect("parses"), -5.0);
        assert!(parse_temp("\n").is_err());
        assert!(parse_type("\n").is_err());
    }
}
