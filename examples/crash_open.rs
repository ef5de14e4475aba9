//! How long an open after a crash takes, by the length of the log: builds a store of N
//! events (150 B, appends of 100, 1,000 streams, `Buffered`, then one sync), copies its
//! files while it is open (a crash image), and opens three fresh copies of that image,
//! printing the time of each open and the frames it replayed. With `--cold` (needs root)
//! the page cache is dropped before each open, as after a machine crash.
//!
//! `cargo run --release --example crash_open -- 20000 2000000 --cold`

use std::error::Error;
use std::path::Path;
use std::time::Instant;

use streamlog::{Durability, EventRef, ExpectedVersion, Options, Store};

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &target)?;
        } else {
            std::fs::copy(e.path(), &target)?;
        }
    }
    Ok(())
}

fn drop_caches() -> Result<(), Box<dyn Error>> {
    std::process::Command::new("sync").status()?;
    std::fs::write("/proc/sys/vm/drop_caches", "3")?;
    Ok(())
}

fn run(events: u64, cold: bool) -> Result<(), Box<dyn Error>> {
    let root = tempfile::tempdir()?;
    let live = root.path().join("live");
    let image = root.path().join("image");
    let options = || Options::default().with_durability(Durability::Buffered);
    let payload = vec![b'x'; 150];
    let batch: Vec<EventRef<'_>> = (0..100)
        .map(|_| EventRef::new("BenchEvent", &payload))
        .collect();
    let store = Store::open_with(&live, options())?;
    for i in 0..events.div_ceil(100) {
        store.append_refs(
            &format!("stream-{}", i % 1000),
            ExpectedVersion::Any,
            &batch,
        )?;
    }
    store.sync()?;
    copy_dir(&live, &image)?;
    store.close()?;
    for i in 0..3 {
        let copy = root.path().join(format!("open-{i}"));
        copy_dir(&image, &copy)?;
        if cold {
            drop_caches()?;
        }
        let t = Instant::now();
        let store = Store::open_with(&copy, options())?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let report = store.recovery_report();
        println!(
            "{events} events: open after a crash {ms:.2} ms, {} frames replayed, {} bytes of log from the replay start to the end",
            report.index.replayed_frames,
            store.info()?.head.0.saturating_sub(report.replayed_from)
        );
        store.close()?;
        std::fs::remove_dir_all(&copy)?;
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cold = args.iter().any(|a| a == "--cold");
    let sizes: Vec<u64> = args
        .iter()
        .filter(|a| *a != "--cold")
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    for events in if sizes.is_empty() {
        vec![20_000, 2_000_000]
    } else {
        sizes
    } {
        run(events, cold)?;
    }
    Ok(())
}
