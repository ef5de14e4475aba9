//! The generated report: docs/benchmarks-compare.md and docs/compare.svg.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use plotters::prelude::*;

use crate::Args;

/// One engine's figure in one table.
pub struct Cell {
    pub peer: String,
    /// What the engine's setting really gives, or how the workload was done.
    pub label: String,
    /// Whether the engine's durable mode really syncs before acknowledging.
    pub durable: bool,
    /// The figure, or why there is none.
    pub value: Result<f64, String>,
}

/// One workload.
pub struct Table {
    pub id: &'static str,
    pub title: &'static str,
    pub what: String,
    pub unit: &'static str,
    pub higher_is_better: bool,
    pub raw_label: &'static str,
    pub raw: Result<f64, String>,
    pub cells: Vec<Cell>,
}

impl Table {
    pub fn new(
        id: &'static str,
        title: &'static str,
        what: String,
        unit: &'static str,
        higher_is_better: bool,
        raw: (&'static str, Result<f64, String>),
    ) -> Table {
        Table {
            id,
            title,
            what,
            unit,
            higher_is_better,
            raw_label: raw.0,
            raw: raw.1,
            cells: Vec::new(),
        }
    }

    /// How many times as fast as `other` a figure is (> 1 is faster).
    fn speedup(&self, value: f64, other: f64) -> f64 {
        if self.higher_is_better {
            value / other
        } else {
            other / value
        }
    }

    fn best(&self) -> Option<f64> {
        let values = self
            .cells
            .iter()
            .filter_map(|c| c.value.as_ref().ok().copied());
        if self.higher_is_better {
            values.reduce(f64::max)
        } else {
            values.reduce(f64::min)
        }
    }

    /// Speed relative to the raw baseline, per cell.
    fn vs_raw(&self, cell: &Cell) -> Option<f64> {
        match (&cell.value, &self.raw) {
            (Ok(v), Ok(raw)) if *v > 0.0 && *raw > 0.0 => Some(self.speedup(*v, *raw)),
            _ => None,
        }
    }

    fn value_of(&self, peer: &str) -> Option<f64> {
        self.cells
            .iter()
            .find(|c| c.peer == peer)
            .and_then(|c| c.value.as_ref().ok().copied())
    }
}

/// One engine's bytes on disk: the W1 store and the JSON events store, as written and
/// after the engine's compaction.
pub struct Sizes {
    pub peer: String,
    pub w1: Result<u64, String>,
    pub w1_compacted: Result<u64, String>,
    pub json: Result<u64, String>,
    pub json_compacted: Result<u64, String>,
    /// What the engine's compaction ran, or why none ran.
    pub compaction: Result<&'static str, String>,
}

impl Sizes {
    /// The smaller of the figures as written and after compaction, of one store.
    fn smallest(written: &Result<u64, String>, compacted: &Result<u64, String>) -> Option<u64> {
        match (written, compacted) {
            (Ok(w), Ok(c)) => Some((*w).min(*c)),
            (Ok(w), Err(_)) => Some(*w),
            (Err(_), Ok(c)) => Some(*c),
            (Err(_), Err(_)) => None,
        }
    }
}

pub struct Report {
    pub command: String,
    pub machine: Vec<(String, String)>,
    /// `Err`: why cold reads were not measured.
    pub cold: Result<(), String>,
    /// Bytes of data per event in this run.
    pub event_size: usize,
    /// Notes on peers, by name; printed for the peers that have figures in the tables.
    pub notes: Vec<(String, &'static str)>,
    /// Peers this binary was built without, and why.
    pub left_out: Vec<(&'static str, &'static str)>,
    pub tables: Vec<Table>,
    pub sizes: Vec<Sizes>,
    /// What the JSON events store holds, one phrase.
    pub json_what: String,
    pub elapsed: Duration,
}

impl Report {
    pub fn new(args: &Args, scratch: &Path, cold: Result<(), String>) -> Report {
        let argv = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
        // The script that links Debian's RocksDB says it started the run.
        let command = match std::env::var("STREAMLOG_COMPARE_VIA") {
            Ok(script) => format!("{script} {argv}"),
            Err(_) if cfg!(feature = "rocksdb") => {
                format!("cargo run --release -p streamlog-compare --features rocksdb -- {argv}")
            }
            Err(_) => format!("cargo run --release -p streamlog-compare -- {argv}"),
        };
        Report {
            command: command.trim_end().to_string(),
            machine: machine(scratch),
            cold,
            event_size: args.event_size,
            notes: Vec::new(),
            left_out: Vec::new(),
            tables: Vec::new(),
            sizes: Vec::new(),
            json_what: String::new(),
            elapsed: Duration::ZERO,
        }
    }

    pub fn write(&self, out: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(out)?;
        std::fs::write(out.join("benchmarks-compare.md"), self.markdown())?;
        self.chart(&out.join("compare.svg"))?;
        Ok(())
    }

    fn markdown(&self) -> String {
        let mut m = String::new();
        let _ = writeln!(m, "# streamlog against peer stores and the raw baseline\n");
        let _ = writeln!(
            m,
            "Generated by `benches/compare` (crate `streamlog-compare`); do not edit by hand. \
             Regenerate everything (this page and `compare.svg`) with:\n\n```sh\n\
             cargo run --release -p streamlog-compare -- --out docs\n```\n\n\
             and with RocksDB among the peers (it installs and links Debian's RocksDB) with \
             `benches/compare/rocksdb.sh`.\n"
        );
        let _ = writeln!(
            m,
            "This run: `{}` ({:.0} s).\n",
            self.command,
            self.elapsed.as_secs_f64()
        );
        let _ = writeln!(m, "## Machine\n");
        for (k, v) in &self.machine {
            let _ = writeln!(m, "- {k}: {v}");
        }
        let _ = writeln!(m);
        self.in_this_run(&mut m);
        let _ = writeln!(
            m,
            "## How to read the tables\n\n\
             - Every engine stores the same logical events (stream, version, global position, \
             type, {} B of data in this run). Key-value engines keep each event under \
             (stream, version) and a commit-order key (position → stream key); see \
             `benches/compare/src/engine.rs`. streamlog also stores a 16-byte id and a timestamp \
             per event that the peers do not.\n\
             - **vs best**: speed relative to the fastest engine in the table (1.00 = fastest). \
             **vs raw**: speed relative to the raw baseline measured in the same run (plain \
             `write`, `write`+`fdatasync`, `read` on a plain file); above 1.00 is possible where \
             the baseline does not batch (group commit) or reads more bytes.\n\
             - **Durability** is what the engine's setting really gives. Engines marked \
             **not durable** can lose acknowledged appends in a machine crash however they are \
             called; they are listed but do not count as durable peers in the targets below.\n\
             - Cold reads: {}.",
            self.event_size,
            match &self.cold {
                Ok(()) => "the page cache is dropped with `echo 3 > /proc/sys/vm/drop_caches` \
                           after reopening"
                    .to_string(),
                Err(why) => why.clone(),
            }
        );
        let engines = self.engines();
        for (peer, note) in &self.notes {
            if engines.contains(&peer.as_str()) {
                let _ = writeln!(m, "- {note}");
            }
        }
        let _ = writeln!(m);
        let _ = writeln!(m, "![speed relative to the raw baseline](compare.svg)\n");
        self.targets(&mut m);
        for t in &self.tables {
            let _ = writeln!(m, "## {} — {}\n\n{}.\n", t.id, t.title, t.what);
            let _ = writeln!(
                m,
                "| engine | {} | vs best | vs raw | durability / how |",
                t.unit
            );
            let _ = writeln!(m, "|---|---:|---:|---:|---|");
            let best = t.best();
            for c in &t.cells {
                let (value, vs_best, vs_raw) = match &c.value {
                    Ok(v) => (
                        fmt_value(*v),
                        best.map_or("–".into(), |b| format!("{:.2}", t.speedup(*v, b))),
                        t.vs_raw(c).map_or("–".into(), |r| format!("{r:.3}")),
                    ),
                    Err(why) => (format!("— ({why})"), "–".into(), "–".into()),
                };
                let durability = if c.durable { "" } else { "**not durable** " };
                let label = if durability.is_empty() || c.label.starts_with("not durable") {
                    c.label.replace("not durable", "**not durable**")
                } else {
                    format!("{durability}{}", c.label)
                };
                let _ = writeln!(
                    m,
                    "| {} | {value} | {vs_best} | {vs_raw} | {label} |",
                    c.peer
                );
            }
            let raw = match &t.raw {
                Ok(v) => fmt_value(*v),
                Err(why) => format!("— ({why})"),
            };
            let _ = writeln!(
                m,
                "| *raw baseline* | {raw} | | 1.000 | {} |\n",
                t.raw_label
            );
        }
        self.sizes_table(&mut m);
        // Said only when this run has no W6 table (the text follows the data).
        if !self.tables.iter().any(|t| t.id == "W6") {
            let _ = writeln!(
                m,
                "\nW6 (aggregate load: snapshot + tail replay) is not in this run; \
                 streamlog's own figures for it are in benchmarks.md (`cargo bench --bench \
                 snapshots`).\n"
            );
        }
        m
    }

    /// Bytes on disk of the W1 store and the JSON events store, as written and after each
    /// engine's compaction.
    fn sizes_table(&self, m: &mut String) {
        if self.sizes.is_empty() {
            return;
        }
        let _ = writeln!(
            m,
            "## Bytes on disk\n\n\
             Bytes allocated to each engine's directory (sparse files count what they use), \
             in MB, for the W1 store and for a store of {}. **As written**: after the \
             appends, one sync and a clean close, with whatever the engine's own background \
             work (flushes, compactions) did by then. **Compacted**: after the engine's \
             compaction, run as its users would (last column), on the closed store reopened; \
             an engine whose driver runs none has only its figure as written.\n",
            self.json_what
        );
        let _ = writeln!(
            m,
            "| engine | W1 as written | W1 compacted | JSON as written | JSON compacted | compaction |\n\
             |---|---:|---:|---:|---:|---|"
        );
        let mb = |v: &Result<u64, String>| match v {
            Ok(b) => format!("{:.1}", *b as f64 / 1e6),
            Err(why) if why.starts_with("n/a") => "–".to_string(),
            Err(why) => format!("— ({why})"),
        };
        for s in &self.sizes {
            let how = match &s.compaction {
                Ok(how) => how.to_string(),
                Err(why) => why.clone(),
            };
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} | {how} |",
                s.peer,
                mb(&s.w1),
                mb(&s.w1_compacted),
                mb(&s.json),
                mb(&s.json_compacted)
            );
        }
        let _ = writeln!(m);
    }

    /// "At most the best peer's bytes", for one store: streamlog compacted (as written when
    /// it has no compacted figure) against each peer's smallest figure.
    fn bytes_target(
        &self,
        store: &str,
        written: fn(&Sizes) -> &Result<u64, String>,
        compacted: fn(&Sizes) -> &Result<u64, String>,
    ) -> Option<String> {
        let ours = self.sizes.iter().find(|s| s.peer == "streamlog")?;
        let goal = format!("Bytes on disk of the {store} store at most the best peer's");
        let (ours_bytes, state) = match (compacted(ours), written(ours)) {
            (Ok(c), _) => (*c, "compacted"),
            (Err(_), Ok(w)) => (*w, "as written"),
            _ => return Some(format!("- {goal}: **not measured**")),
        };
        let best = self
            .sizes
            .iter()
            .filter(|s| s.peer != "streamlog")
            .filter_map(|s| Some((s.peer.as_str(), Sizes::smallest(written(s), compacted(s))?)))
            .min_by_key(|(_, b)| *b);
        Some(match best {
            Some((peer, b)) => format!(
                "- {goal}: **{}** (streamlog {state} {:.1} MB; best peer {peer} {:.1} MB, its smaller figure; {:.2}×)",
                if ours_bytes <= b { "met" } else { "missed" },
                ours_bytes as f64 / 1e6,
                b as f64 / 1e6,
                ours_bytes as f64 / b.max(1) as f64
            ),
            None => format!("- {goal}: **not measured** (no peer's figure)"),
        })
    }

    /// The engines with a row in any table, in the order of the tables' rows.
    fn engines(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for c in self.tables.iter().flat_map(|t| &t.cells) {
            if !out.contains(&c.peer.as_str()) {
                out.push(&c.peer);
            }
        }
        out
    }

    /// Which workloads and engines this run holds, and which figures it lacks, all read
    /// from the tables (so the text cannot disagree with them).
    fn in_this_run(&self, m: &mut String) {
        let ids: Vec<&str> = self.tables.iter().map(|t| t.id).collect();
        let engines = self.engines();
        let _ = writeln!(m, "## In this run\n");
        let _ = writeln!(
            m,
            "- Workloads ({}): {}.",
            ids.len(),
            if ids.is_empty() {
                "none".to_string()
            } else {
                ids.join(", ")
            }
        );
        let _ = writeln!(
            m,
            "- Engines ({}): {}; each table also has the raw baseline.",
            engines.len(),
            if engines.is_empty() {
                "none".to_string()
            } else {
                engines.join(", ")
            }
        );
        for (peer, why) in &self.left_out {
            let _ = writeln!(m, "- Not in this run: {peer}, {why}.");
        }
        // Missing figures, grouped by engine and reason.
        for peer in &engines {
            let mut reasons: Vec<(String, Vec<&str>)> = Vec::new();
            for t in &self.tables {
                for c in t.cells.iter().filter(|c| c.peer == *peer) {
                    if let Err(why) = &c.value {
                        match reasons.iter_mut().find(|(w, _)| w == why) {
                            Some((_, tables)) => tables.push(t.id),
                            None => reasons.push((why.clone(), vec![t.id])),
                        }
                    }
                }
            }
            for (why, tables) in reasons {
                let _ = writeln!(m, "- No figure for {peer} in {}: {why}.", tables.join(", "));
            }
        }
        let _ = writeln!(m);
    }

    /// The targets streamlog is held to, each checked against this run's figures.
    fn targets(&self, m: &mut String) {
        let table = |id: &str| self.tables.iter().find(|t| t.id == id);
        let mut lines = Vec::new();
        // "Ahead of every peer that counts": the peers streamlog is behind, if any.
        let ahead = |id: &str, goal: &str, counts: &dyn Fn(&Cell) -> bool| -> Option<String> {
            let t = table(id)?;
            let Some(ours) = t.value_of("streamlog") else {
                return Some(format!("- {goal}: **not measured**"));
            };
            let behind: Vec<String> = t
                .cells
                .iter()
                .filter(|c| c.peer != "streamlog" && counts(c))
                .filter_map(|c| {
                    let v = c.value.as_ref().ok()?;
                    (t.speedup(ours, *v) < 1.0)
                        .then(|| format!("{} ({:.2}×)", c.peer, t.speedup(*v, ours)))
                })
                .collect();
            Some(if behind.is_empty() {
                format!("- {goal}: **met**")
            } else {
                format!("- {goal}: **missed**, behind {}", behind.join(", "))
            })
        };
        for id in ["W1", "W2×1", "W2×64"] {
            let goal = format!("{id} ahead of every durable peer");
            lines.extend(ahead(id, &goal, &|c| c.durable));
        }
        if let Some(t) = table("W2×1")
            && let Some(c) = t.cells.iter().find(|c| c.peer == "streamlog")
        {
            lines.push(match t.vs_raw(c) {
                Some(r) => format!(
                    "- W2 (1 writer) within 80% of raw write+fdatasync: **{}** ({:.1}% of raw)",
                    if r >= 0.8 { "met" } else { "missed" },
                    r * 100.0
                ),
                None => "- W2 within 80% of raw: **not measured**".into(),
            });
        }
        if let Some(t) = table("W3 warm") {
            lines.push(match (t.value_of("streamlog"), t.value_of("LMDB (heed)")) {
                (Some(ours), Some(lmdb)) => format!(
                    "- W3 warm within 1.5× of LMDB: **{}** ({ours:.0} µs vs {lmdb:.0} µs, {:.2}×)",
                    if ours <= 1.5 * lmdb { "met" } else { "missed" },
                    ours / lmdb
                ),
                _ => "- W3 warm within 1.5× of LMDB: **not measured**".into(),
            });
        }
        if let Some(t) = table("W3 warm") {
            lines.push(match (t.value_of("streamlog"), t.value_of("LMDB (heed)")) {
                (Some(ours), Some(lmdb)) => format!(
                    "- W3 warm at or ahead of LMDB: **{}** ({:.2}× LMDB's speed)",
                    if ours <= lmdb { "met" } else { "missed" },
                    lmdb / ours
                ),
                _ => "- W3 warm at or ahead of LMDB: **not measured**".into(),
            });
        }
        lines.extend(ahead(
            "W3 cold",
            "W3 cold ahead of every durable peer",
            &|c| c.durable,
        ));
        if let Some(t) = table("W2×64") {
            let ours = t.value_of("streamlog");
            let best_peer = t
                .cells
                .iter()
                .filter(|c| c.peer != "streamlog" && c.durable)
                .filter_map(|c| Some((c.peer.as_str(), *c.value.as_ref().ok()?)))
                .reduce(|a, b| if b.1 > a.1 { b } else { a });
            lines.push(match (ours, best_peer) {
                (Some(ours), Some((peer, v))) if v > 0.0 => format!(
                    "- W2×64 at least 2× the best durable peer: **{}** ({:.2}× {peer})",
                    if ours >= 2.0 * v { "met" } else { "missed" },
                    ours / v
                ),
                _ => "- W2×64 at least 2× the best durable peer: **not measured**".into(),
            });
        }
        if let Some(t) = table("W5 crash") {
            let ours = t.value_of("streamlog");
            let sqlite = t.value_of("SQLite");
            let lmdb = t.value_of("LMDB (heed)");
            lines.push(match (ours, sqlite, lmdb) {
                (Some(ours), Some(sqlite), Some(lmdb)) => format!(
                    "- W5 crash at least as fast as SQLite and within 10× of LMDB: **{}** \
                     ({ours:.2} ms; SQLite {sqlite:.2} ms, LMDB {lmdb:.2} ms: {:.2}× SQLite's \
                     time, {:.1}× LMDB's)",
                    if ours <= sqlite && ours <= 10.0 * lmdb {
                        "met"
                    } else {
                        "missed"
                    },
                    ours / sqlite,
                    ours / lmdb
                ),
                _ => "- W5 crash against SQLite and LMDB: **not measured**".into(),
            });
        }
        // Reads: ahead of every peer (durable or not), LMDB aside for W3.
        lines.extend(ahead(
            "W3 warm",
            "W3 warm ahead of every peer but LMDB",
            &|c| c.peer != "LMDB (heed)",
        ));
        lines.extend(ahead(
            "W6",
            "W6 ahead of every peer (the issue sets no figure)",
            &|_| true,
        ));
        if let Some(t) = table("W4")
            && let Some(c) = t.cells.iter().find(|c| c.peer == "streamlog")
        {
            lines.push(match t.vs_raw(c) {
                Some(r) => format!(
                    "- W4 at least 50% of raw sequential read: **{}** ({:.1}% of raw)",
                    if r >= 0.5 { "met" } else { "missed" },
                    r * 100.0
                ),
                None => "- W4 ≥ 50% of raw: **not measured**".into(),
            });
        }
        lines.extend(self.bytes_target("W1", |s| &s.w1, |s| &s.w1_compacted));
        lines.extend(self.bytes_target("JSON events", |s| &s.json, |s| &s.json_compacted));
        let _ = writeln!(
            m,
            "## streamlog's targets in this run\n\n{}\n",
            lines.join("\n")
        );
    }

    fn chart(&self, path: &Path) -> anyhow::Result<()> {
        let tables: Vec<&Table> = self.tables.iter().collect();
        let peers: Vec<String> = tables
            .first()
            .map(|t| t.cells.iter().map(|c| c.peer.clone()).collect())
            .unwrap_or_default();
        let mut lo = f64::MAX;
        let mut hi = f64::MIN;
        for t in &tables {
            for c in &t.cells {
                if let Some(r) = t.vs_raw(c) {
                    lo = lo.min(r);
                    hi = hi.max(r);
                }
            }
        }
        if lo > hi {
            (lo, hi) = (0.1, 1.0);
        }
        let lo = 10f64.powf(lo.log10().floor()).min(0.1);
        let hi = 10f64.powf(hi.log10().ceil()).max(10.0);
        let root = SVGBackend::new(path, (1200, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let n = tables.len() as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Speed relative to the raw file baseline (log scale; 1 = raw)",
                ("sans-serif", 22),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .right_y_label_area_size(0)
            .build_cartesian_2d(0f64..n, (lo..hi).log_scale())
            .map_err(plot_err)?;
        let labels: Vec<&str> = tables.iter().map(|t| t.id).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(tables.len() * 2 + 1)
            .x_label_formatter(&|x| {
                let i = x.floor() as usize;
                if (x - x.floor() - 0.5).abs() < 0.01 {
                    labels.get(i).map(|s| s.to_string()).unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_desc("× raw speed")
            .y_label_formatter(&|y| format!("{y}"))
            .draw()
            .map_err(plot_err)?;
        let width = 0.8 / peers.len().max(1) as f64;
        for (pi, peer) in peers.iter().enumerate() {
            let color = Palette99::pick(pi).to_rgba();
            let bars: Vec<Rectangle<(f64, f64)>> = tables
                .iter()
                .enumerate()
                .filter_map(|(ti, t)| {
                    let c = t.cells.iter().find(|c| &c.peer == peer)?;
                    let r = t.vs_raw(c)?;
                    let x0 = ti as f64 + 0.1 + pi as f64 * width;
                    Some(Rectangle::new(
                        [(x0, lo), (x0 + width * 0.9, r)],
                        color.filled(),
                    ))
                })
                .collect();
            chart
                .draw_series(bars)
                .map_err(plot_err)?
                .label(peer.as_str())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled())
                });
        }
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(0.0, 1.0), (n, 1.0)],
                BLACK.stroke_width(1),
            )))
            .map_err(plot_err)?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
        Ok(())
    }
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("chart: {e:?}")
}

fn fmt_value(v: f64) -> String {
    if v >= 100.0 {
        let s = format!("{v:.0}");
        // Thousands separators.
        let mut out = String::new();
        for (i, ch) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(ch);
        }
        out
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn machine(scratch: &Path) -> Vec<(String, String)> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or("unknown".into(), |kb| format!("{:.1} GiB", kb / 1048576.0));
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_string();
    // The mount holding the scratch directory: the longest mount point that prefixes it.
    let scratch_abs = std::fs::canonicalize(scratch).unwrap_or_else(|_| scratch.to_path_buf());
    let mounts = read("/proc/mounts");
    let fs = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((*f.first()?, *f.get(1)?, *f.get(2)?))
        })
        .filter(|(_, mp, _)| scratch_abs.starts_with(mp))
        .max_by_key(|(_, mp, _)| mp.len())
        .map_or("unknown".into(), |(dev, mp, ty)| {
            format!("{ty} on {dev} (mounted at {mp})")
        });
    let rustc = std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    vec![
        (
            "CPU".into(),
            format!("{cpu}, {cores} cores available (shared with other work)"),
        ),
        ("memory".into(), mem),
        ("kernel".into(), format!("Linux {kernel}")),
        (
            "scratch file system".into(),
            format!("{fs}; `{}`", scratch.display()),
        ),
        ("compiler".into(), rustc),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(ids: &[&'static str]) -> Report {
        Report {
            command: "cargo run --release -p streamlog-compare".into(),
            machine: Vec::new(),
            cold: Err("skipped (--no-cold)".into()),
            event_size: 150,
            notes: vec![("okaywal".into(), "okaywal is a write-ahead log.")],
            left_out: Vec::new(),
            tables: ids
                .iter()
                .map(|id| {
                    let mut t = Table::new(id, "t", "w".into(), "µs", false, ("raw", Ok(1.0)));
                    t.cells.push(Cell {
                        peer: "streamlog".into(),
                        label: String::new(),
                        durable: true,
                        value: Ok(2.0),
                    });
                    t
                })
                .collect(),
            sizes: Vec::new(),
            json_what: "JSON events".into(),
            elapsed: Duration::ZERO,
        }
    }

    #[test]
    fn bytes_on_disk_and_their_targets_are_read_from_the_sizes() {
        let mut r = report(&["W1"]);
        r.sizes.push(Sizes {
            peer: "streamlog".into(),
            w1: Ok(98_000_000),
            w1_compacted: Ok(15_000_000),
            json: Ok(40_000_000),
            json_compacted: Ok(20_000_000),
            compaction: Ok("scavenge"),
        });
        r.sizes.push(Sizes {
            peer: "fjall".into(),
            w1: Ok(18_000_000),
            w1_compacted: Ok(17_000_000),
            json: Ok(30_000_000),
            json_compacted: Ok(19_000_000),
            compaction: Ok("major compaction"),
        });
        r.sizes.push(Sizes {
            peer: "LMDB (heed)".into(),
            w1: Ok(150_000_000),
            w1_compacted: Err("n/a: the driver runs no compaction".into()),
            json: Ok(50_000_000),
            json_compacted: Err("n/a: the driver runs no compaction".into()),
            compaction: Err("n/a: the driver runs no compaction".into()),
        });
        let text = r.markdown();
        assert!(
            text.contains("| streamlog | 98.0 | 15.0 | 40.0 | 20.0 | scavenge |"),
            "{text}"
        );
        assert!(
            text.contains(
                "| LMDB (heed) | 150.0 | – | 50.0 | – | n/a: the driver runs no compaction |"
            ),
            "{text}"
        );
        assert!(
            text.contains("- Bytes on disk of the W1 store at most the best peer's: **met** (streamlog compacted 15.0 MB; best peer fjall 17.0 MB"),
            "{text}"
        );
        assert!(
            text.contains("- Bytes on disk of the JSON events store at most the best peer's: **missed** (streamlog compacted 20.0 MB; best peer fjall 19.0 MB"),
            "{text}"
        );
        // Without sizes, neither the table nor the targets are said.
        let none = report(&["W1"]).markdown();
        assert!(!none.contains("## Bytes on disk"), "{none}");
        assert!(!none.contains("Bytes on disk of the"), "{none}");
    }

    #[test]
    fn the_text_says_w6_is_missing_only_when_its_table_is() {
        let missing = "W6 (aggregate load: snapshot + tail replay) is not in this run";
        let with = report(&["W1", "W6"]).markdown();
        assert!(with.contains("## W6"), "{with}");
        assert!(!with.contains(missing), "{with}");
        let without = report(&["W1"]).markdown();
        assert!(without.contains(missing), "{without}");
    }

    #[test]
    fn workloads_engines_and_missing_figures_are_read_from_the_tables() {
        let mut r = report(&["W1", "W3 warm"]);
        r.tables[1].cells.push(Cell {
            peer: "okaywal".into(),
            label: String::new(),
            durable: true,
            value: Err("n/a: no index".into()),
        });
        r.left_out.push(("RocksDB", "built without it"));
        let text = r.markdown();
        assert!(text.contains("- Workloads (2): W1, W3 warm."), "{text}");
        assert!(
            text.contains("- Engines (2): streamlog, okaywal;"),
            "{text}"
        );
        assert!(
            text.contains("- Not in this run: RocksDB, built without it."),
            "{text}"
        );
        assert!(
            text.contains("- No figure for okaywal in W3 warm: n/a: no index."),
            "{text}"
        );
        assert!(text.contains("- okaywal is a write-ahead log."), "{text}");
        assert!(text.contains("150 B of data in this run"), "{text}");
        // A peer's note is printed only when the peer is in the run.
        let alone = report(&["W1"]).markdown();
        assert!(!alone.contains("write-ahead log"), "{alone}");
        assert!(alone.contains("- Engines (1): streamlog;"), "{alone}");
    }
}
