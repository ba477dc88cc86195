//! `/sys/class/thermal/thermal_zone*/{type,temp}`: one `temp` fact per zone, the sensor named
//! by the zone's `type`, the value converted from millidegrees to degrees Celsius.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millidegrees() {
        assert_eq!(parse_temp("44388\n").expect("parses"), 44.388);
        assert_eq!(parse_temp("-5000\n").expect("parses"), -5.0);
        assert!(parse_temp("\n").is_err());
        assert!(parse_type("\n").is_err());
    }
}
