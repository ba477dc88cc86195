//! `/sys/class/thermal/thermal_zone*/{type,temp}`: one `temp` fact per zone, the value converted
//! from millidegrees to degrees Celsius.
//!
//! The sensor is named by the zone's `type`, as Telegraf names thermal zones. Telegraf gives two
//! zones of one type (x86 machines often have several `acpitz`) the same name, so InfluxDB
//! keeps one series for both; here a type shared by several zones is suffixed with the zone
//! number (`acpitz_0`, `acpitz_1`), and a type no other zone has keeps Telegraf's name.

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
