//! What the agent says about its machine in `Hello`: hostname, kernel release, architecture,
//! OS name, cpu model, total memory and boot time.
//!
//! On the live system hostname, release and architecture come from `uname(2)`. Under a captured
//! `/proc` tree they come from its `sys/kernel/{hostname,osrelease,arch}` files, so that a fixture
//! describes its own machine; a value missing from the tree falls back to `uname`.

use super::{osrelease, FactsError, Procfs};
use autofact_fbs::Hello;
use std::path::{Path, PathBuf};

/// The machine's description.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostInfo {
    /// Hostname (uname nodename).
    pub hostname: String,
    /// Kernel release (uname -r).
    pub kernel: String,
    /// Architecture (uname -m).
    pub arch: String,
    /// `PRETTY_NAME` of os-release.
    pub os: String,
    /// See [`super::cpuinfo::CpuInfo::description`].
    pub cpu_model: String,
    /// MemTotal in bytes.
    pub mem_total: u64,
    /// Boot time, unix seconds (`btime`).
    pub boot_time: u64,
}

impl HostInfo {
    /// Reads everything it can; each part that fails is left empty (or 0) and its error
    /// returned alongside, so one unreadable file does not hide the rest.
    pub fn read(procfs: &Procfs, etc_root: &Path) -> (HostInfo, Vec<FactsError>) {
        let mut errors = Vec::new();
        let mut h = HostInfo::default();
        let uts = nix::sys::utsname::uname().ok();
        let from_uname = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| -> String {
            uts.as_ref()
                .map(|u| f(u).to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let kernel_file = |name: &str, errors: &mut Vec<FactsError>| -> Option<String> {
            if procfs.is_live() {
                return None;
            }
            match procfs.kernel_string(name) {
                Ok(v) if !v.is_empty() => Some(v),
                Ok(_) => None,
                Err(e) => {
                    if !e.is_not_found() {
                        errors.push(e);
                    }
                    None
                }
            }
        };
        h.hostname = kernel_file("hostname", &mut errors)
            .unwrap_or_else(|| from_uname(nix::sys::utsname::UtsName::nodename));
        h.kernel = kernel_file("osrelease", &mut errors)
            .unwrap_or_else(|| from_uname(nix::sys::utsname::UtsName::release));
        h.arch = kernel_file("arch", &mut errors)
            .unwrap_or_else(|| from_uname(nix::sys::utsname::UtsName::machine));
        let os_path = etc_root.join("os-release");
        match super::read_parse(os_path, osrelease::parse) {
            Ok(os) => h.os = os,
            Err(e) => errors.push(e),
        }
        match procfs.cpuinfo() {
            Ok(c) => h.cpu_model = c.description(),
            Err(e) => errors.push(e),
        }
        match procfs.meminfo() {
            Ok(m) => h.mem_total = m.mem_total,
            Err(e) => errors.push(e),
        }
        match procfs.stat() {
            Ok(s) => h.boot_time = s.btime.unwrap_or(0),
            Err(e) => errors.push(e),
        }
        (h, errors)
    }

    /// Copies the description into a `Hello`.
    pub fn fill_hello(&self, hello: &mut Hello) {
        hello.hostname.clone_from(&self.hostname);
        hello.kernel.clone_from(&self.kernel);
        hello.arch.clone_from(&self.arch);
        hello.os.clone_from(&self.os);
        hello.cpu_model.clone_from(&self.cpu_model);
        hello.mem_total = self.mem_total;
        hello.boot_time = self.boot_time;
    }
}

/// Just the hostname, the same way [`HostInfo::read`] finds it (the `host` tag of every point).
pub fn hostname(procfs: &Procfs) -> String {
    if !procfs.is_live() {
        if let Ok(h) = procfs.kernel_string("hostname") {
            if !h.is_empty() {
                return h;
            }
        }
    }
    nix::sys::utsname::uname()
        .map(|u| u.nodename().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Where os-release lives for a given `/proc` tree: `/etc` for the live system, else the `etc`
/// directory next to the tree's `proc` (fixture trees are laid out as `<origin>/{proc,sys,etc}`).
pub fn default_etc_root(procfs: &Procfs) -> PathBuf {
    if procfs.is_live() {
        return PathBuf::from("/etc");
    }
    match procfs.root.parent() {
        Some(p) => p.join("etc"),
        None => PathBuf::from("/etc"),
    }
}
