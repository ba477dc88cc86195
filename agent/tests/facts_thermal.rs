//! Temperatures (issue 13 item 8, issue 19): every zone is its own series, zones that appear
//! after the agent started are read, and hwmon sensors come first with Telegraf's names. The
//! trees are made here in a temp dir, laid out as the kernel documents them
//! (Documentation/driver-api/thermal/sysfs-api.rst: `thermal_zoneN/{type,temp}`;
//! Documentation/hwmon/sysfs-interface.rst: `hwmonN/{name,tempM_input,tempM_label}`;
//! millidegrees Celsius in both).

use autofact::facts::{Collector, Kinds, Procfs, Sysfs};
use autofact_fbs::Snapshot;
use std::path::{Path, PathBuf};

struct Tree(PathBuf);

impl Tree {
    fn new(name: &str) -> Tree {
        let dir = std::env::temp_dir().join(format!("autofact-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sys/class/thermal")).expect("temp dir");
        Tree(dir)
    }

    fn zone(&self, n: u32, kind: &str, millideg: i64) {
        let z = self.0.join(format!("sys/class/thermal/thermal_zone{n}"));
        std::fs::create_dir_all(&z).expect("zone dir");
        std::fs::write(z.join("type"), format!("{kind}\n")).expect("type");
        std::fs::write(z.join("temp"), format!("{millideg}\n")).expect("temp");
    }

    fn hwmon(&self, n: u32, name: &str, inputs: &[(u32, Option<&str>, i64)]) {
        let d = self.0.join(format!("sys/class/hwmon/hwmon{n}"));
        std::fs::create_dir_all(&d).expect("hwmon dir");
        std::fs::write(d.join("name"), format!("{name}\n")).expect("name");
        for (m, label, millideg) in inputs {
            std::fs::write(d.join(format!("temp{m}_input")), format!("{millideg}\n"))
                .expect("input");
            // A threshold: Telegraf makes a series of it, we do not.
            std::fs::write(d.join(format!("temp{m}_crit")), "110000\n").expect("crit");
            if let Some(l) = label {
                std::fs::write(d.join(format!("temp{m}_label")), format!("{l}\n")).expect("label");
            }
        }
    }

    fn collector(&self) -> Collector {
        Collector::new(
            &Procfs::new(self.0.join("proc")),
            &Sysfs::new(self.0.join("sys")),
        )
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temps(c: &mut Collector, snap: &mut Snapshot) -> Vec<(String, f64)> {
    c.collect(Kinds::TEMP, 1, snap);
    snap.temp
        .iter()
        .map(|t| (t.sensor.clone(), t.temp))
        .collect()
}

#[test]
fn zones_of_one_type_are_distinct_series() {
    // x86 laptops have several `acpitz` zones; Telegraf names each by its type, so InfluxDB
    // kept one series for all of them.
    let tree = Tree::new("thermal-dup");
    tree.zone(0, "acpitz", 40_000);
    tree.zone(1, "x86_pkg_temp", 50_000);
    tree.zone(2, "acpitz", 45_500);
    let mut snap = Snapshot::default();
    let got = temps(&mut tree.collector(), &mut snap);
    assert_eq!(
        got,
        [
            ("acpitz_0".to_string(), 40.0),
            ("x86_pkg_temp".to_string(), 50.0),
            ("acpitz_2".to_string(), 45.5),
        ],
        "tree {}",
        tree.path().display()
    );
}

#[test]
fn a_zone_that_appears_after_start_is_read() {
    // A thermal driver loaded (or a USB sensor plugged in) after the agent started.
    let tree = Tree::new("thermal-late");
    tree.zone(0, "cpu-thermal", 47_000);
    let mut c = tree.collector();
    let mut snap = Snapshot::default();
    assert_eq!(
        temps(&mut c, &mut snap),
        [("cpu-thermal".to_string(), 47.0)]
    );
    tree.zone(1, "gpu-thermal", 45_000);
    assert_eq!(
        temps(&mut c, &mut snap),
        [
            ("cpu-thermal".to_string(), 47.0),
            ("gpu-thermal".to_string(), 45.0)
        ]
    );
    // And one that turns into a second zone of the same type renames both, no duplicates.
    tree.zone(2, "cpu-thermal", 48_000);
    let got = temps(&mut c, &mut snap);
    let names: Vec<&str> = got.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(names, ["cpu-thermal_0", "gpu-thermal", "cpu-thermal_2"]);
}

#[test]
fn hwmon_sensors_come_first_with_telegrafs_names() {
    // A Pi: the SoC's thermal zone is also a hwmon device named cpu_thermal; Telegraf reads the
    // hwmon one and calls it cpu_thermal_input.
    let tree = Tree::new("hwmon-pi");
    tree.zone(0, "cpu-thermal", 47_686);
    tree.hwmon(0, "cpu_thermal", &[(1, None, 47_686)]);
    let mut snap = Snapshot::default();
    let mut c = tree.collector();
    assert_eq!(
        temps(&mut c, &mut snap),
        [("cpu_thermal_input".to_string(), 47.686)]
    );
    // A device added later (a coretemp driver loaded) is found; labels become part of the
    // name as Telegraf's docs show ("coretemp_core_0_input").
    tree.hwmon(
        1,
        "coretemp",
        &[
            (1, Some("Package id 0"), 50_000),
            (2, Some("Core 0"), 48_000),
        ],
    );
    assert_eq!(
        temps(&mut c, &mut snap),
        [
            ("cpu_thermal_input".to_string(), 47.686),
            ("coretemp_package_id_0_input".to_string(), 50.0),
            ("coretemp_core_0_input".to_string(), 48.0),
        ]
    );
}
