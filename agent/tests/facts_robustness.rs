//! No parser panics, whatever it is fed: random bytes, random mutations of real files, and
//! every truncation of every fixture (issue 3, "nothing in any parser can panic").

use autofact::facts::{
    cpuinfo, diskstats, loadavg, meminfo, mounts, netdev, osrelease, stat, thermal, uptime,
};
use std::path::{Path, PathBuf};

/// xorshift64*: small, deterministic, good enough to shake parsers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Runs every parser on `s`; the results do not matter, only that each returns.
fn all_parsers(s: &str) {
    let _ = stat::parse(s);
    let _ = meminfo::parse(s);
    let _ = loadavg::parse(s);
    let _ = uptime::parse(s);
    let _ = netdev::parse(s);
    let _ = diskstats::parse(s);
    let _ = mounts::parse(s).map(|m| mounts::select(&m).len());
    let _ = cpuinfo::parse(s).map(|c| c.description());
    let _ = osrelease::parse(s);
    let _ = thermal::parse_temp(s);
    let _ = thermal::parse_type(s);
}

fn fixtures_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Every fixture file whose name a parser reads (SOURCE.md and READMEs excluded).
fn fixture_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            fixture_files(&path, out)?;
        } else if path.extension().is_none_or(|e| e != "md") {
            out.push(path);
        }
    }
    Ok(())
}

/// The parser that reads a file of this name, for the (quadratic) truncation test.
fn parser_for(path: &Path) -> Option<fn(&str)> {
    let name = path.file_name()?.to_str()?;
    let f: fn(&str) = match name {
        "stat" => |s| drop(stat::parse(s)),
        "meminfo" => |s| drop(meminfo::parse(s)),
        "loadavg" => |s| drop(loadavg::parse(s)),
        "uptime" => |s| drop(uptime::parse(s)),
        "dev" => |s| drop(netdev::parse(s)),
        "diskstats" => |s| drop(diskstats::parse(s)),
        "mounts" => |s| drop(mounts::parse(s).map(|m| mounts::select(&m).len())),
        "cpuinfo" => |s| drop(cpuinfo::parse(s).map(|c| c.description())),
        "os-release" => |s| drop(osrelease::parse(s)),
        "temp" => |s| drop(thermal::parse_temp(s)),
        "type" => |s| drop(thermal::parse_type(s)),
        _ => return None,
    };
    Some(f)
}

#[test]
fn random_bytes() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    // Bytes drawn mostly from the characters these files are made of, so that parsers get past
    // their first line now and then.
    let alphabet = b"0123456789 \n\t:|-.cpuintrMemTotalkB\\/abcxyz\xff\xc3";
    for _ in 0..5000 {
        let len = rng.below(300);
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                if rng.below(4) == 0 {
                    rng.next() as u8
                } else {
                    alphabet[rng.below(alphabet.len())]
                }
            })
            .collect();
        all_parsers(&String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn random_mutations_of_fixtures() -> std::io::Result<()> {
    let mut files = Vec::new();
    fixture_files(&fixtures_root(), &mut files)?;
    assert!(files.len() > 30, "fixtures not found: {files:?}");
    let mut rng = Rng(42);
    for path in &files {
        let original = std::fs::read(path)?;
        for _ in 0..50 {
            let mut b = original.clone();
            for _ in 0..1 + rng.below(4) {
                if b.is_empty() {
                    break;
                }
                let i = rng.below(b.len());
                match rng.below(3) {
                    0 => b[i] = rng.next() as u8,
                    1 => {
                        b.remove(i);
                    }
                    _ => b.insert(i, b"0 :\n9"[rng.below(5)]),
                }
            }
            all_parsers(&String::from_utf8_lossy(&b));
        }
    }
    Ok(())
}

#[test]
fn every_truncation_of_every_fixture() -> std::io::Result<()> {
    let mut files = Vec::new();
    fixture_files(&fixtures_root(), &mut files)?;
    let mut checked = 0;
    for path in &files {
        let Some(parse) = parser_for(path) else {
            continue;
        };
        let text = std::fs::read(path)?;
        for cut in 0..=text.len() {
            parse(&String::from_utf8_lossy(&text[..cut]));
        }
        checked += 1;
    }
    assert!(checked > 25, "only {checked} fixture files had a parser");
    Ok(())
}

#[test]
fn truncated_files_are_errors_not_wrong_values() -> std::io::Result<()> {
    // A few cuts whose outcome is certain: a cpu line cut short, a value cut off.
    let dir = fixtures_root().join("pi4-aarch64-bookworm-nsynet/proc");
    let st = std::fs::read_to_string(dir.join("stat"))?;
    let cut = st.find("cpu1").map_or(0, |i| i + 8); // "cpu1 131" of "cpu1 13102 ..."
    assert!(stat::parse(&st[..cut]).is_err());
    assert!(meminfo::parse("MemTotal:  ").is_err());
    assert!(loadavg::parse("0.74 2.").is_err());
    Ok(())
}

/// `Procfs` (what the tests read captured trees with) reads through the collector's own
/// reader: the same bound on a file that is no kernel text file, the path in the error, and a
/// missing file reported as not found (issue 19.2, one read path).
#[test]
fn procfs_reads_through_the_collectors_reader() {
    let root = std::env::temp_dir().join(format!("autofact-readpath-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("temp dir");
    // 17 MiB: above the collector's 16 MiB bound for a kernel file.
    std::fs::write(root.join("meminfo"), vec![b'x'; 17 << 20]).expect("write");
    let procfs = autofact::facts::Procfs::new(&root);
    let e = procfs.meminfo().expect_err("a 17 MiB meminfo is refused");
    let text = e.to_string();
    assert!(
        matches!(e, autofact::facts::FactsError::Io { .. }) && text.contains("larger than 16 MiB"),
        "{text}"
    );
    assert!(
        text.contains(&root.join("meminfo").display().to_string()),
        "{text}"
    );
    let missing = procfs.loadavg().expect_err("no loadavg");
    assert!(missing.is_not_found(), "{missing}");
    assert_eq!(missing.path(), root.join("loadavg"));
    let _ = std::fs::remove_dir_all(&root);
}
