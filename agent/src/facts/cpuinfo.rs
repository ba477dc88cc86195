//! `/proc/cpuinfo`: the cpu model or board description sent in `Hello`.
//!
//! x86 prints `model name` per processor. ARM boards differ by kernel: 32-bit and older 64-bit
//! Raspberry Pi kernels print `Hardware` (the SoC, e.g. BCM2835), and all print `Revision`
//! (the board code) and, since about 4.x, `Model` (e.g. "Raspberry Pi 4 Model B Rev 1.1").
//! Captures with TABs expanded to spaces are accepted: the key is everything before the first
//! `:`, trimmed.

use super::ParseError;

/// The descriptive lines of `/proc/cpuinfo` (the first occurrence of each).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CpuInfo {
    /// `model name` (x86, 32-bit ARM).
    pub model_name: Option<String>,
    /// `Hardware` (ARM SoC).
    pub hardware: Option<String>,
    /// `Revision` (ARM board code).
    pub revision: Option<String>,
    /// `Model` (ARM board name).
    pub model: Option<String>,
    /// Number of `processor` entries.
    pub processors: u32,
}

impl CpuInfo {
    /// One line for humans: the board `Model` if any, else `Hardware`, else `model name`; then in
    /// parentheses the SoC and board revision when they add something, e.g.
    /// "Raspberry Pi 4 Model B Rev 1.1 (BCM2835, rev c03111)" or "AMD EPYC".
    pub fn description(&self) -> String {
        let (head, used_hw) = match (&self.model, &self.hardware, &self.model_name) {
            (Some(m), _, _) => (m.clone(), false),
            (None, Some(h), _) => (h.clone(), true),
            (None, None, Some(n)) => (n.clone(), false),
            (None, None, None) => (String::new(), false),
        };
        let mut extra: Vec<String> = Vec::new();
        if let (false, Some(h)) = (used_hw, &self.hardware) {
            extra.push(h.clone());
        }
        if let Some(r) = &self.revision {
            extra.push(format!("rev {r}"));
        }
        if extra.is_empty() || head.is_empty() {
            if head.is_empty() {
                return extra.join(", ");
            }
            return head;
        }
        format!("{head} ({})", extra.join(", "))
    }
}

/// Parses the text of `/proc/cpuinfo`. Lines without `:` (blank separators) are skipped; an
/// empty file is an error.
pub fn parse(s: &str) -> Result<CpuInfo, ParseError> {
    let mut c = CpuInfo::default();
    let mut any = false;
    for line in s.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        any = true;
        let value = value.trim();
        let slot = match key.trim() {
            "processor" => {
                c.processors = c.processors.saturating_add(1);
                continue;
            }
            "model name" => &mut c.model_name,
            "Hardware" => &mut c.hardware,
            "Revision" => &mut c.revision,
            "Model" => &mut c.model,
            _ => continue,
        };
        if slot.is_none() && !value.is_empty() {
            *slot = Some(value.to_string());
        }
    }
    if !any {
        return Err(ParseError::new(0, "no 'key : value' lines"));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions() {
        let x86 = parse(
            "processor\t: 0\nmodel name\t: AMD EPYC\n\nprocessor\t: 1\nmodel name\t: AMD EPYC\n",
        )
        .expect("parses");
        assert_eq!(x86.description(), "AMD EPYC");
        assert_eq!(x86.processors, 2);
        let pi3 = parse("processor : 0\nmodel name : ARMv7 Processor rev 4 (v7l)\nHardware : BCM2709\nRevision : a22082\n")
            .expect("parses");
        assert_eq!(pi3.description(), "BCM2709 (rev a22082)");
        assert!(parse("").is_err());
    }
}
