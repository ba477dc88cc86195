//! The file sink: lines appended to `<data_dir>/facts/YYYY-MM-DD.lp` (today, UTC) in order and
//! on disk when `write` resolves; a directory it cannot create keeps the write pending (retried,
//! never dropped) until the problem is fixed.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use autofact_tests::poll::wait_for;
use autofact_tests::tmp::TempDir;
use autofactory::metrics::Metrics;
use autofactory::sink::{Sink, SinkConfig};

/// Today's UTC date, computed independently of the sink: via `date -u`.
fn today_utc() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .expect("date -u");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The `.lp` files in `dir`, sorted.
fn lp_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == "lp"));
    v.sort();
    v
}

#[test]
fn lines_are_appended_to_todays_file_in_order() {
    let data = TempDir::new("sink-file").expect("temp dir");
    let metrics = Arc::new(Metrics::default());
    let before = today_utc();
    let sink =
        Sink::start(&SinkConfig::default(), data.path(), metrics.clone()).expect("file sink");
    let writes = [
        "cpu,host=a usage_user=1 1\n",
        "mem,host=a total=2i 2\nmem,host=a total=3i 3\n",
        "disk,path=/mnt/my\\ disk total=4i 4",
    ];
    smol::block_on(async {
        for w in writes {
            sink.write("c1", w.to_string(), w.lines().count())
                .await
                .expect("durable");
            // Durable means on disk when the future resolves: read it back right away.
            let content: String = lp_files(&data.join("facts"))
                .iter()
                .map(|p| std::fs::read_to_string(p).expect("read facts file"))
                .collect();
            assert!(content.contains(w.trim_end()), "{w:?} not in {content:?}");
        }
    });
    sink.shutdown();
    let after = today_utc();
    let files = lp_files(&data.join("facts"));
    // The day can only change between `before` and `after` (a run across midnight UTC).
    let names: Vec<String> = files
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    if before == after {
        assert_eq!(names, vec![format!("{before}.lp")]);
        let content = std::fs::read_to_string(&files[0]).expect("facts file");
        assert_eq!(
            content,
            "cpu,host=a usage_user=1 1\nmem,host=a total=2i 2\nmem,host=a total=3i 3\ndisk,path=/mnt/my\\ disk total=4i 4\n"
        );
    } else {
        assert!(
            names
                .iter()
                .all(|n| *n == format!("{before}.lp") || *n == format!("{after}.lp")),
            "{names:?}"
        );
    }
    assert_eq!(metrics.points_written.load(Ordering::Relaxed), 4);
}

#[test]
fn a_restarted_sink_appends_to_the_same_file() {
    let data = TempDir::new("sink-file-reopen").expect("temp dir");
    let cfg = SinkConfig {
        dir: data.join("elsewhere").display().to_string(),
        ..SinkConfig::default()
    };
    for i in 0..2 {
        let sink = Sink::start(&cfg, data.path(), Arc::new(Metrics::default())).expect("file sink");
        smol::block_on(sink.write("c1", format!("m v={i}i {i}\n"), 1)).expect("durable");
        sink.shutdown();
    }
    assert!(!data.join("facts").exists(), "the dir override was ignored");
    let files = lp_files(&data.join("elsewhere"));
    let content: String = files
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("read"))
        .collect();
    assert_eq!(content, "m v=0i 0\nm v=1i 1\n");
}

#[test]
fn an_unwritable_directory_keeps_the_write_pending_until_fixed() {
    let data = TempDir::new("sink-file-blocked").expect("temp dir");
    // A regular file where the facts directory should be: create_dir_all fails.
    let blocker = data.join("facts");
    std::fs::write(&blocker, b"not a directory").expect("blocker");
    let metrics = Arc::new(Metrics::default());
    let sink =
        Sink::start(&SinkConfig::default(), data.path(), metrics.clone()).expect("file sink");
    let pending = {
        let sink = sink.clone();
        std::thread::spawn(move || smol::block_on(sink.write("c1", "m v=1i 1\n".into(), 1)))
    };
    wait_for("failed attempts", Duration::from_secs(30), || {
        (metrics.sink_errors.load(Ordering::Relaxed) >= 2).then_some(())
    })
    .expect("the sink retries");
    assert!(
        !pending.is_finished(),
        "the write completed although nothing was written"
    );
    assert_eq!(metrics.points_written.load(Ordering::Relaxed), 0);
    std::fs::remove_file(&blocker).expect("remove blocker");
    pending
        .join()
        .expect("writer")
        .expect("durable once the directory can be made");
    sink.shutdown();
    let content: String = lp_files(&blocker)
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("read"))
        .collect();
    assert_eq!(content, "m v=1i 1\n");
    assert!(metrics.sink_retries.load(Ordering::Relaxed) >= 2);
}
