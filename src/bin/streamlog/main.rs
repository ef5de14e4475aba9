//! `streamlog`: the command-line tool of the streamlog event store, a thin layer over the
//! library's public API.
//!
//! Machine-readable output is one JSON object per line on stdout; errors go to stderr.
//! Exit codes: 0 ok, 1 other error, 2 usage, 3 wrong expected version, 4 locked,
//! 5 corruption, 6 written by a newer streamlog, 7 stream deleted (hard delete).

mod bench;
mod crashtest;
mod output;
mod serve;
mod tail;

use std::ffi::OsString;
use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::builder::NonEmptyStringValueParser;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use streamlog::inspect::DumpItem;
use streamlog::{EventId, ExpectedVersion, NewEvent, Options, Store};

use crate::output::{Obj, line};

/// The exit codes, as `--help` lists them.
const EXIT_CODES: &str = "Exit codes: 0 ok, 1 other error, 2 usage (bad arguments, or a value the store \
refuses: an empty or reserved name, a size over a limit), 3 wrong expected version, 4 locked, \
5 corruption found, 6 written by a newer streamlog (unsupported format version), 7 stream \
deleted (reading, tailing, appending to, deleting or changing the metadata of a hard-deleted \
stream).";

/// Command-line tool for streamlog stores.
#[derive(Debug, Parser)]
#[command(name = "streamlog", version, about, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Append events to a stream (one atomic append), durably.
    Append(AppendArgs),
    /// Read one stream's events, one JSON object per line.
    Read(ReadArgs),
    /// Read every stream's events in commit order, one JSON object per line.
    ReadAll(ReadAllArgs),
    /// Delete a stream: soft (it reads as empty; a later append re-creates it, its versions
    /// going on after the old ones) or, with --hard, for good (exit 7 from then on).
    Delete(DeleteArgs),
    /// Rewrite sealed segments without deleted, expired and truncated events (the active
    /// segment is sealed first), keeping every surviving event's position; compresses
    /// what it rewrites. Prints segments rewritten, bytes before and after, events removed.
    Scavenge(ScavengeArgs),
    /// Erase a stream for good: hard delete it, then scavenge every segment, index table
    /// and snapshot, so that none of its events, metadata or name is left in any file.
    Erase(EraseArgs),
    /// Print a stream's metadata as JSON, or change it with the options (KurrentDB's
    /// $maxCount, $maxAge, $tb and user keys); reads honour it at once.
    StreamMeta(StreamMetaArgs),
    /// Summary of a store and of what recovery finds (read-only).
    Info {
        /// Store directory.
        dir: PathBuf,
    },
    /// Check every frame of every segment and of the snapshot files, and the index; exit 5
    /// on corruption (never writes).
    Verify {
        /// Store directory.
        dir: PathBuf,
    },
    /// Save or load snapshots of a stream's state.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Rebuild the index from the segments (the index is derived data; nothing is lost).
    Reindex {
        /// Store directory.
        dir: PathBuf,
    },
    /// Decode every frame of the store, damaged ones included (never writes).
    Dump {
        /// Store directory.
        dir: PathBuf,
        /// Only this segment file: a name in DIR/segments, or the path of a segment file
        /// anywhere (then DIR need not be a store).
        #[arg(long)]
        segment: Option<PathBuf>,
    },
    /// Follow events as they commit (also those another process writes), one JSON object
    /// per event with its resume token; exits after --limit events or on SIGINT/SIGTERM.
    Tail(tail::TailArgs),
    /// Serve the store to KurrentDB (EventStoreDB) gRPC clients until SIGINT/SIGTERM;
    /// connect with `esdb://127.0.0.1:2113?tls=false`.
    Serve(serve::ServeArgs),
    /// Administer a running cluster (`serve --node-id … --peer …`): status, add a
    /// learner, promote learners to voters, remove members.
    #[command(subcommand)]
    Cluster(serve::ClusterCommand),
    /// Read a password from standard input and print its argon2 hash, for a line
    /// `name:HASH` of `serve --users FILE`.
    HashPassword(serve::HashPasswordArgs),
    /// Measure append and read throughput and latency against a plain-file baseline.
    Bench(bench::BenchArgs),
    /// Kill -9 a writer process at random moments; check no acknowledged event is lost.
    Crashtest(crashtest::CrashtestArgs),
    /// The writer process of `crashtest` (appends until killed).
    #[command(hide = true)]
    CrashtestWriter(crashtest::WriterArgs),
}

#[derive(Debug, Subcommand)]
enum SnapshotCommand {
    /// Save a snapshot of STREAM's state at VERSION (the last event it includes).
    #[command(group(clap::ArgGroup::new("input").required(true).args(["data", "stdin"])))]
    Save {
        /// Store directory.
        dir: PathBuf,
        /// Stream name.
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        stream: String,
        /// The stream version the state includes.
        version: u64,
        /// Schema tag of the state's encoding.
        #[arg(long, default_value = "raw", value_parser = NonEmptyStringValueParser::new())]
        schema: String,
        /// The encoded state, stored as these bytes.
        #[arg(long, value_name = "TEXT")]
        data: Option<OsString>,
        /// Read the encoded state from stdin.
        #[arg(long)]
        stdin: bool,
    },
    /// Print STREAM's latest usable snapshot: {"stream","version","schema","data"}.
    Load {
        /// Store directory.
        dir: PathBuf,
        /// Stream name.
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        stream: String,
    },
}

/// The type of an event appended without `--type` (and of a `--stdin` line without
/// `"type"`).
const DEFAULT_EVENT_TYPE: &str = "event";

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["data", "stdin"])))]
struct AppendArgs {
    /// Store directory (created if needed).
    dir: PathBuf,
    /// Stream name.
    #[arg(value_parser = NonEmptyStringValueParser::new())]
    stream: String,
    /// Expected state of the stream: any, no-stream, exists or a version number.
    #[arg(long, default_value = "any", value_parser = parse_expected)]
    expected: ExpectedVersion,
    /// Event type (with --stdin: the type of lines without "type").
    #[arg(
        long = "type",
        value_name = "T",
        default_value = DEFAULT_EVENT_TYPE,
        value_parser = NonEmptyStringValueParser::new()
    )]
    event_type: String,
    /// Event data, stored as these bytes.
    #[arg(long, value_name = "TEXT")]
    data: Option<OsString>,
    /// Read NDJSON events from stdin ({"type","data","metadata","id"} per line) and append
    /// them all as one atomic batch.
    #[arg(long, conflicts_with_all = ["metadata", "id"])]
    stdin: bool,
    /// Event metadata, stored as these bytes.
    #[arg(long, value_name = "TEXT")]
    metadata: Option<OsString>,
    /// Event id (a UUID), to make a retry idempotent.
    #[arg(long, value_name = "UUID", value_parser = parse_id)]
    id: Option<EventId>,
}

#[derive(Debug, Args)]
struct ReadArgs {
    /// Store directory.
    dir: PathBuf,
    /// Stream name.
    #[arg(value_parser = NonEmptyStringValueParser::new())]
    stream: String,
    /// First version to read (default: the first, or the last with --backward).
    #[arg(long, value_name = "V")]
    from: Option<u64>,
    /// Read from newest to oldest.
    #[arg(long, conflicts_with_all = ["until_version", "as_of"])]
    backward: bool,
    /// Read up to and including version V (the stream as it was then).
    #[arg(long, value_name = "V", conflicts_with = "as_of")]
    until_version: Option<u64>,
    /// Read the events committed at or before TIME (RFC 3339, e.g.
    /// 2026-11-30T12:00:00Z): the stream as it was then.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    as_of: Option<std::time::SystemTime>,
    /// Only events of this type (repeat for several).
    #[arg(long = "type", value_name = "T")]
    types: Vec<String>,
    /// Read at most N events (after the type filter).
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
}

#[derive(Debug, Args)]
struct DeleteArgs {
    /// Store directory.
    dir: PathBuf,
    /// Stream name.
    #[arg(value_parser = NonEmptyStringValueParser::new())]
    stream: String,
    /// Expected state of the stream: any, no-stream, exists or a version number.
    #[arg(long, default_value = "any", value_parser = parse_expected)]
    expected: ExpectedVersion,
    /// Hard delete (tombstone): the stream can never be read or appended to again.
    #[arg(long)]
    hard: bool,
}

#[derive(Debug, Args)]
struct ScavengeArgs {
    /// Store directory.
    dir: PathBuf,
    /// Read the log no faster than this many bytes per second (e.g. 50000000; suffixes
    /// K, M, G for 2^10, 2^20, 2^30).
    #[arg(long, value_parser = parse_rate)]
    max_bytes_per_s: Option<u64>,
    /// Store rewritten blocks uncompressed.
    #[arg(long)]
    no_compress: bool,
    /// Also compress sealed segments that hold nothing to remove, and the active segment
    /// (sealed first, when it holds any event): everything written so far is compressed.
    #[arg(long)]
    compress_all: bool,
}

#[derive(Debug, Args)]
struct EraseArgs {
    /// Store directory.
    dir: PathBuf,
    /// Stream name.
    #[arg(value_parser = NonEmptyStringValueParser::new())]
    stream: String,
    /// Expected state of the stream: any, no-stream, exists or a version number.
    #[arg(long, default_value = "any", value_parser = parse_expected)]
    expected: ExpectedVersion,
}

/// A rate in bytes per second: digits with an optional K, M or G (powers of 1024).
fn parse_rate(s: &str) -> Result<u64, String> {
    let (digits, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c.to_ascii_uppercase()),
        _ => (s, ' '),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("not a rate in bytes per second: {s:?}"))?;
    let scale: u64 = match unit {
        ' ' => 1,
        'K' => 1 << 10,
        'M' => 1 << 20,
        'G' => 1 << 30,
        _ => return Err(format!("unknown unit in {s:?} (K, M or G)")),
    };
    let rate = n
        .checked_mul(scale)
        .ok_or_else(|| format!("rate too large: {s:?}"))?;
    if rate == 0 {
        return Err("the rate must be above 0".into());
    }
    Ok(rate)
}

/// A metadata option's value: a new value, or `none` to remove the rule.
#[derive(Debug, Clone, Copy)]
enum Setting<T> {
    Set(T),
    Clear,
}

impl<T> Setting<T> {
    fn apply(self, field: &mut Option<T>) {
        *field = match self {
            Setting::Set(v) => Some(v),
            Setting::Clear => None,
        };
    }
}

#[derive(Debug, Args)]
struct StreamMetaArgs {
    /// Store directory.
    dir: PathBuf,
    /// Stream name.
    #[arg(value_parser = NonEmptyStringValueParser::new())]
    stream: String,
    /// Keep only the newest N events (`none` removes the rule).
    #[arg(long, value_name = "N", value_parser = parse_count)]
    max_count: Option<Setting<u64>>,
    /// Hide events older than DURATION: a number of seconds, or a number with a unit
    /// s, m, h, d or w (`90m`, `7d`); `none` removes the rule.
    #[arg(long, value_name = "DURATION", value_parser = parse_age)]
    max_age: Option<Setting<std::time::Duration>>,
    /// Hide the events below version V (`none` removes the rule; a soft delete sets it).
    #[arg(long, value_name = "V", value_parser = parse_version)]
    truncate_before: Option<Setting<u64>>,
    /// User metadata: a JSON object (replaces the stored one; `{}` removes it).
    #[arg(long, value_name = "JSON")]
    user: Option<String>,
}

fn parse_setting<T>(
    s: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Setting<T>, String> {
    if s == "none" {
        return Ok(Setting::Clear);
    }
    parse(s).map(Setting::Set)
}

fn parse_count(s: &str) -> Result<Setting<u64>, String> {
    parse_setting(s, |s| match s.parse::<u64>() {
        Ok(0) => Err("must be at least 1 (to hide every event, delete the stream)".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("expected a whole number or none, not {s:?}")),
    })
}

fn parse_version(s: &str) -> Result<Setting<u64>, String> {
    parse_setting(s, |s| {
        s.parse::<u64>()
            .map_err(|_| format!("expected a version number or none, not {s:?}"))
    })
}

/// A whole number followed by one of `units` (its name, and how many of the smallest unit
/// it counts): the total in the smallest unit. `Err(None)` for no number or another unit,
/// `Err(Some(()))` when the total does not fit.
pub(crate) fn parse_with_unit(s: &str, units: &[(&str, u64)]) -> Result<u64, Option<()>> {
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(digits);
    let per = units.iter().find(|(u, _)| *u == unit).ok_or(None)?.1;
    let n: u64 = number.parse().map_err(|_| None)?;
    n.checked_mul(per).ok_or(Some(()))
}

/// `90`, `90s`, `15m`, `2h`, `7d`, `1w`.
fn parse_age(s: &str) -> Result<Setting<std::time::Duration>, String> {
    parse_setting(s, |s| {
        const UNITS: [(&str, u64); 6] = [
            ("", 1),
            ("s", 1),
            ("m", 60),
            ("h", 3600),
            ("d", 86_400),
            ("w", 604_800),
        ];
        let secs = parse_with_unit(s, &UNITS).map_err(|e| match e {
            Some(()) => format!("{s:?} is too long"),
            None => {
                format!("expected a duration such as 3600, 90m, 24h or 7d, or none, not {s:?}")
            }
        })?;
        if secs == 0 {
            return Err("must be at least one second".into());
        }
        Ok(std::time::Duration::from_secs(secs))
    })
}

#[derive(Debug, Args)]
struct ReadAllArgs {
    /// Store directory.
    dir: PathBuf,
    /// Where to start: the position of an append, or a resume token (`POSITION:SKIP`)
    /// printed by `tail` (default: the start of the log).
    #[arg(long, value_name = "POSITION|TOKEN")]
    from: Option<String>,
    /// Only events of this type (repeat for several).
    #[arg(long = "type", value_name = "T")]
    types: Vec<String>,
    /// Only events of streams whose name starts with P.
    #[arg(long, value_name = "P")]
    stream_prefix: Option<String>,
    /// Start at the first append committed at or after TIME (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = parse_time, conflicts_with = "from")]
    since: Option<std::time::SystemTime>,
    /// Stop before the first append committed at or after TIME (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    until: Option<std::time::SystemTime>,
    /// Read at most N events (after the filters).
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
}

fn parse_expected(s: &str) -> Result<ExpectedVersion, String> {
    s.parse::<ExpectedVersion>().map_err(|e| e.to_string())
}

/// An RFC 3339 time (`2026-11-30T12:00:00Z`, `2026-11-30T13:00:00.5+01:00`).
fn parse_time(s: &str) -> Result<std::time::SystemTime, String> {
    let t: jiff::Timestamp = s
        .parse()
        .map_err(|e| format!("{s:?} is not an RFC 3339 time such as 2026-11-30T12:00:00Z: {e}"))?;
    Ok(std::time::SystemTime::from(t))
}

fn parse_id(s: &str) -> Result<EventId, String> {
    s.parse::<EventId>().map_err(|e| e.to_string())
}

/// Why a command failed; decides the exit code.
#[derive(Debug)]
pub enum CliError {
    /// An error of the library.
    Store(streamlog::Error),
    /// Bad command-line arguments (exit 2).
    Usage(String),
    /// Anything else (exit 1).
    Other(String),
    /// `verify` found corruption (exit 5); the details are already on stdout.
    CorruptionFound(usize),
    /// Files of a newer format were left unchecked (exit 6).
    NewerFormat(String),
    /// Writing to stdout failed.
    Output(std::io::Error),
}

impl From<streamlog::Error> for CliError {
    fn from(e: streamlog::Error) -> Self {
        CliError::Store(e)
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::Output(e)
    }
}

/// The error of an operation on values given on the command line: what the store refuses
/// as out of bounds (an empty or reserved name, a size over a limit, a version or position
/// that is not there) is a usage error, exit 2.
fn refused(e: streamlog::Error) -> CliError {
    match e {
        streamlog::Error::InvalidArgument(_) | streamlog::Error::TooLarge { .. } => {
            CliError::Usage(e.to_string())
        }
        e => CliError::Store(e),
    }
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            CliError::Store(streamlog::Error::WrongExpectedVersion { .. }) => 3,
            CliError::Store(streamlog::Error::Locked { .. }) => 4,
            CliError::Store(streamlog::Error::Corrupted { .. }) | CliError::CorruptionFound(_) => 5,
            CliError::Store(streamlog::Error::UnsupportedFormat { .. })
            | CliError::NewerFormat(_) => 6,
            CliError::Store(streamlog::Error::StreamDeleted { .. }) => 7,
            CliError::Usage(_) => 2,
            CliError::Store(_) | CliError::Other(_) | CliError::Output(_) => 1,
        }
    }

    fn message(&self) -> String {
        match self {
            CliError::Store(e) => e.to_string(),
            CliError::Usage(m) | CliError::Other(m) | CliError::NewerFormat(m) => m.clone(),
            CliError::CorruptionFound(n) => format!("verify found {n} corrupted place(s)"),
            CliError::Output(e) => format!("cannot write output: {e}"),
        }
    }
}

type CliResult<T = ()> = Result<T, CliError>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (e.g. `| head`): stop quietly.
        Err(CliError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("streamlog: error: {}", e.message());
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(command: Command) -> CliResult {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match command {
        Command::Append(a) => append(a, &mut out)?,
        Command::Read(a) => read(a, &mut out)?,
        Command::ReadAll(a) => read_all(a, &mut out)?,
        Command::Delete(a) => delete(a, &mut out)?,
        Command::StreamMeta(a) => stream_meta(a, &mut out)?,
        Command::Scavenge(a) => scavenge(a, &mut out)?,
        Command::Erase(a) => erase(a, &mut out)?,
        Command::Info { dir } => info(&dir, &mut out)?,
        Command::Verify { dir } => verify(&dir, &mut out)?,
        Command::Reindex { dir } => reindex(&dir, &mut out)?,
        Command::Snapshot(c) => snapshot(c, &mut out)?,
        Command::Dump { dir, segment } => dump(&dir, segment.as_deref(), &mut out)?,
        Command::Tail(a) => tail::run(a, &mut out)?,
        Command::Serve(a) => serve::run(a)?,
        Command::Cluster(c) => serve::cluster(c, &mut out)?,
        Command::HashPassword(a) => serve::hash_password(a)?,
        Command::Bench(a) => bench::run(a, &mut out)?,
        Command::Crashtest(a) => crashtest::run(a, &mut out)?,
        Command::CrashtestWriter(a) => crashtest::writer(a, &mut out)?,
    }
    out.flush()?;
    Ok(())
}

/// Refuses a `dir` that holds no store, so that no command but `append` and `snapshot save`
/// ever creates one (exit 1, naming the path).
/// Refuses a cluster node's directory (`raft/` and `sm/`, no store of its own): a command
/// would otherwise create a second, unrelated store in it, or only say it holds none.
/// Names the node's own store, which commands may read.
pub(crate) fn refuse_cluster_node(dir: &Path) -> CliResult {
    if dir.join(streamlog::SEGMENTS_DIR).is_dir()
        || !dir.join("raft").is_dir()
        || !dir.join("sm").is_dir()
    {
        return Ok(());
    }
    let store = std::fs::read_dir(dir.join("sm"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join(streamlog::SEGMENTS_DIR).is_dir())
        .unwrap_or_else(|| dir.join("sm").join("store…"));
    Err(CliError::Other(format!(
        "{}: a cluster node's directory, not a store; the node's store is {} (read it \
         there; write through the node's server)",
        dir.display(),
        store.display()
    )))
}

/// Refuses the store of a cluster node (`NODE/sm/store…/`) to a command that writes:
/// the node's raft log is what the store follows, and an event written beside it would
/// make this replica differ from the others for good. Read-only commands work there.
pub(crate) fn refuse_node_store(dir: &Path) -> CliResult {
    // The real path: `..` and symbolic links lead to the node's store too.
    let real = std::fs::canonicalize(dir)
        .or_else(|_| std::path::absolute(dir))
        .unwrap_or_else(|_| dir.to_path_buf());
    let Some(sm) = real.parent() else {
        return Ok(());
    };
    let Some(node) = sm.parent() else {
        return Ok(());
    };
    let is_node = sm.file_name().is_some_and(|n| n == "sm")
        && sm.join("sm-state").is_file()
        && node.join("raft").is_dir();
    if is_node {
        return Err(CliError::Other(format!(
            "{}: the store of the cluster node in {}; write through the node's server (read-only \
             commands work here)",
            dir.display(),
            node.display()
        )));
    }
    Ok(())
}

/// Opens the store in `dir` for a command that writes (not a cluster node's store).
fn open_writable(dir: &Path) -> CliResult<Store> {
    refuse_node_store(dir)?;
    Ok(Store::open(dir)?)
}

fn require_store(dir: &Path) -> CliResult {
    refuse_cluster_node(dir)?;
    let segments = dir.join(streamlog::SEGMENTS_DIR);
    let missing = |why: &str| Err(CliError::Other(format!("{}: {why}", dir.display())));
    match std::fs::metadata(&segments) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => missing("not a streamlog store (segments is not a directory)"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => missing("not a streamlog store (no segments directory)"),
            Ok(_) => missing("not a directory, so not a streamlog store"),
            Err(_) => missing("no such directory, so no streamlog store"),
        },
        Err(e) => Err(CliError::Other(format!(
            "cannot look at {}: {e}",
            segments.display()
        ))),
    }
}

fn open_read_only(dir: &Path) -> CliResult<Store> {
    require_store(dir)?;
    Ok(Store::open_with(
        dir,
        Options::default().with_read_only(true),
    )?)
}

/// A payload given in NDJSON: a JSON string is its UTF-8 text, anything else its compact
/// JSON serialization.
fn json_payload(v: &Value) -> Vec<u8> {
    match v {
        Value::String(s) => s.as_bytes().to_vec(),
        other => other.to_string().into_bytes(),
    }
}

/// Parses NDJSON events from `input`; blank lines are skipped, and a line without `"type"`
/// gets `default_type`.
fn parse_ndjson(input: impl BufRead, default_type: &str) -> CliResult<Vec<NewEvent>> {
    let mut events = Vec::new();
    for (i, raw) in input.split(b'\n').enumerate() {
        let n = i + 1;
        let raw = raw.map_err(|e| CliError::Other(format!("cannot read stdin: {e}")))?;
        let raw = raw.strip_suffix(b"\r").unwrap_or(&raw);
        if raw.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        // Malformed input is a usage error (exit 2), as a bad --data or --id is.
        let bad = |why: String| CliError::Usage(format!("stdin line {n}: {why}; nothing appended"));
        let value: Value =
            serde_json::from_slice(raw).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(bad("expected a JSON object".into()));
        };
        if let Some(k) = map
            .keys()
            .find(|k| !matches!(k.as_str(), "type" | "data" | "metadata" | "id"))
        {
            return Err(bad(format!(
                "unknown field {k:?} (expected type, data, metadata, id)"
            )));
        }
        let event_type = match map.get("type") {
            Some(Value::String(t)) => t.clone(),
            Some(_) => return Err(bad("\"type\" must be a string".into())),
            None => default_type.to_string(),
        };
        let data = map
            .get("data")
            .ok_or_else(|| bad("missing \"data\"".into()))?;
        let mut event = NewEvent::new(event_type, json_payload(data));
        if let Some(m) = map.get("metadata") {
            event = event.with_metadata(json_payload(m));
        }
        match map.get("id") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => {
                event = event.with_id(s.parse::<EventId>().map_err(|e| bad(e.to_string()))?);
            }
            Some(_) => return Err(bad("\"id\" must be a UUID string".into())),
        }
        events.push(event);
    }
    if events.is_empty() {
        return Err(CliError::Usage(
            "no events on stdin; nothing appended".into(),
        ));
    }
    Ok(events)
}

fn append(a: AppendArgs, out: &mut impl Write) -> CliResult {
    // Read and check all input before opening the store, so that bad input appends
    // nothing and the lock is not held while waiting for stdin.
    let events = if a.stdin {
        parse_ndjson(std::io::stdin().lock(), &a.event_type)?
    } else {
        let data = a
            .data
            .ok_or_else(|| CliError::Usage("--data or --stdin is required".into()))?;
        let mut e = NewEvent::new(a.event_type, data.into_encoded_bytes());
        if let Some(m) = a.metadata {
            e = e.with_metadata(m.into_encoded_bytes());
        }
        if let Some(id) = a.id {
            e = e.with_id(id);
        }
        vec![e]
    };
    refuse_cluster_node(&a.dir)?;
    let store = open_writable(&a.dir)?;
    let r = store
        .append(&a.stream, a.expected, events)
        .map_err(refused)?;
    // Under `Durability::Sync` the append is on disk now; a failure of the clean close
    // (its checkpoint) does not undo it, so it is only a warning.
    if let Err(e) = store.close() {
        eprintln!("streamlog: warning: the append is durable, but closing the store failed: {e}");
    }
    line(
        out,
        Obj::new()
            .field("stream", a.stream.as_str())
            .field("first_version", r.first_version)
            .field("last_version", r.last_version)
            .field("position", r.position.0)
            .field("deduplicated", r.deduplicated),
    )?;
    Ok(())
}

fn emit_events(
    events: impl Iterator<Item = streamlog::Result<streamlog::RecordedEvent>>,
    limit: Option<u64>,
    out: &mut impl Write,
) -> CliResult {
    let limit = limit.unwrap_or(u64::MAX);
    for e in events.take(usize::try_from(limit).unwrap_or(usize::MAX)) {
        line(out, output::event(&e?))?;
    }
    Ok(())
}

fn read(a: ReadArgs, out: &mut impl Write) -> CliResult {
    let store = open_read_only(&a.dir)?;
    if let Some(v) = a.until_version {
        // The stream as it was at a version it never had is a version that is not there.
        let last = store.stream_version(&a.stream).map_err(refused)?;
        if last.is_none_or(|last| v > last) {
            let has = last.map_or("has no events".to_string(), |l| {
                format!("ends at version {l}")
            });
            return Err(CliError::Usage(format!(
                "--until-version {v}: stream {:?} {has}",
                a.stream
            )));
        }
    }
    let as_of = match (a.until_version, a.as_of) {
        (Some(v), _) => Some(streamlog::AsOf::Version(v)),
        (None, Some(t)) => Some(streamlog::AsOf::Time(t)),
        (None, None) => None,
    };
    let events = match (a.backward, as_of) {
        (true, _) => store.read_stream_backward(&a.stream, a.from),
        (false, Some(bound)) => store.read_stream_as_of(&a.stream, a.from.unwrap_or(0), bound),
        (false, None) => store.read_stream(&a.stream, a.from.unwrap_or(0)),
    }
    .map_err(refused)?;
    let filter = (!a.types.is_empty()).then(|| streamlog::Filter::event_types(a.types.clone()));
    emit_events(filtered(events, filter), a.limit, out)
}

fn read_all(a: ReadAllArgs, out: &mut impl Write) -> CliResult {
    let store = open_read_only(&a.dir)?;
    let from: streamlog::ResumeToken = match &a.from {
        Some(t) => t
            .parse()
            .map_err(|e| CliError::Usage(format!("--from: {e}")))?,
        None => streamlog::ResumeToken::START,
    };
    // The library reads nothing from past the end (a subscriber's position may be ahead
    // of a follower); here it is a position that is not there.
    let head = store.head();
    if from.position > head {
        return Err(CliError::Usage(format!(
            "--from: position {} is past the end of the log ({})",
            from.position.0, head.0
        )));
    }
    let events = match (a.since, a.until) {
        (None, None) => store.read_all(from),
        // `--since` and `--from` exclude each other: `--until` goes with either.
        (None, Some(until)) => store.read_all(from).map(|e| e.until(until)),
        (since, until) => store.read_all_between(since, until),
    }
    .map_err(refused)?;
    let mut filters = Vec::new();
    if !a.types.is_empty() {
        filters.push(streamlog::Filter::event_types(a.types.clone()));
    }
    if let Some(p) = &a.stream_prefix {
        filters.push(streamlog::Filter::stream_prefix(p.clone()));
    }
    let filter = (!filters.is_empty()).then(|| streamlog::Filter::all_of(filters));
    emit_events(filtered(events, filter), a.limit, out)
}

/// The events `filter` passes (all without one); errors pass.
fn filtered(
    events: impl Iterator<Item = streamlog::Result<streamlog::RecordedEvent>>,
    filter: Option<streamlog::Filter>,
) -> impl Iterator<Item = streamlog::Result<streamlog::RecordedEvent>> {
    events.filter(move |e| match (e, &filter) {
        (Ok(e), Some(f)) => f.matches(&e.stream, &e.event_type),
        _ => true,
    })
}

fn delete(a: DeleteArgs, out: &mut impl Write) -> CliResult {
    require_store(&a.dir)?;
    let store = open_writable(&a.dir)?;
    let r = if a.hard {
        store.tombstone_stream(&a.stream, a.expected)
    } else {
        store.delete_stream(&a.stream, a.expected)
    }
    .map_err(refused)?;
    if let Err(e) = store.close() {
        eprintln!("streamlog: warning: the delete is durable, but closing the store failed: {e}");
    }
    line(
        out,
        Obj::new()
            .field("stream", a.stream.as_str())
            .field("deleted", if a.hard { "hard" } else { "soft" })
            .field("position", r.position.0),
    )?;
    Ok(())
}

fn scavenge_obj(r: &streamlog::ScavengeReport, seconds: f64) -> Obj {
    Obj::new()
        .field("segments_scanned", r.segments_scanned)
        .field("segments_rewritten", r.segments_rewritten)
        .field("bytes_before", r.bytes_before)
        .field("bytes_after", r.bytes_after)
        .field("events_removed", r.events_removed)
        .field("frames_removed", r.frames_removed)
        .field("index_entries_removed", r.index_entries_removed)
        .field("snapshots_dropped", r.snapshots_dropped)
        .field("seconds", seconds)
}

fn scavenge(a: ScavengeArgs, out: &mut impl Write) -> CliResult {
    require_store(&a.dir)?;
    let store = open_writable(&a.dir)?;
    let mut options = streamlog::ScavengeOptions::default().with_compress_all(a.compress_all);
    if a.no_compress {
        options = options.with_compression(None);
    }
    if let Some(rate) = a.max_bytes_per_s {
        options = options.with_max_bytes_per_s(rate);
    }
    let bar = progress_bar(segment_bytes(&a.dir), "scavenge");
    let start = std::time::Instant::now();
    let result = store.scavenge_with(&options, |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    let report = result?;
    store.close()?;
    line(out, scavenge_obj(&report, start.elapsed().as_secs_f64()))?;
    Ok(())
}

fn erase(a: EraseArgs, out: &mut impl Write) -> CliResult {
    require_store(&a.dir)?;
    let store = open_writable(&a.dir)?;
    let start = std::time::Instant::now();
    let report = store.erase_stream(&a.stream, a.expected).map_err(refused)?;
    store.close()?;
    line(
        out,
        scavenge_obj(&report, start.elapsed().as_secs_f64()).field("erased", a.stream.as_str()),
    )?;
    Ok(())
}

/// A stream's metadata as one JSON object: its state, and the metadata as KurrentDB
/// stores it.
fn metadata_obj(stream: &str, m: &streamlog::StreamMetadata) -> Obj {
    Obj::new()
        .field("stream", stream)
        .field("metadata_version", m.metadata_version)
        .field("deleted", m.deleted)
        .field("tombstoned", m.tombstoned)
        .raw("metadata", &String::from_utf8_lossy(&m.to_json()))
}

fn stream_meta(a: StreamMetaArgs, out: &mut impl Write) -> CliResult {
    let changes = a.max_count.is_some()
        || a.max_age.is_some()
        || a.truncate_before.is_some()
        || a.user.is_some();
    if !changes {
        let store = open_read_only(&a.dir)?;
        let m = store.stream_metadata(&a.stream).map_err(refused)?;
        line(out, metadata_obj(&a.stream, &m))?;
        return Ok(());
    }
    // Checked before the store is opened: bad input changes nothing.
    let user = match a.user.as_deref() {
        None => None,
        Some(json) => {
            let value: Value = serde_json::from_str(json)
                .map_err(|e| CliError::Usage(format!("--user: not JSON: {e}")))?;
            match value {
                Value::Object(map) if map.is_empty() => Some(None),
                Value::Object(_) => Some(Some(value.to_string().into_bytes())),
                _ => return Err(CliError::Usage("--user: expected a JSON object".into())),
            }
        }
    };
    require_store(&a.dir)?;
    let store = open_writable(&a.dir)?;
    let mut m = store.stream_metadata(&a.stream).map_err(refused)?;
    if m.tombstoned {
        return Err(CliError::Store(streamlog::Error::StreamDeleted {
            stream: a.stream,
        }));
    }
    let expected = m
        .metadata_version
        .map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
    if let Some(s) = a.max_count {
        s.apply(&mut m.max_count);
    }
    if let Some(s) = a.max_age {
        s.apply(&mut m.max_age);
    }
    if let Some(s) = a.truncate_before {
        s.apply(&mut m.truncate_before);
    }
    if let Some(custom) = user {
        m.custom = custom;
    }
    store
        .set_stream_metadata(&a.stream, expected, &m)
        .map_err(refused)?;
    let m = store.stream_metadata(&a.stream)?;
    if let Err(e) = store.close() {
        eprintln!("streamlog: warning: the change is durable, but closing the store failed: {e}");
    }
    line(out, metadata_obj(&a.stream, &m))?;
    Ok(())
}

fn info(dir: &Path, out: &mut impl Write) -> CliResult {
    let store = open_read_only(dir)?;
    let i = store.info()?;
    // (Opened by `info` above: what that found.)
    let snapshots = store.snapshot_report()?;
    // Finding what a scavenge would remove reads every frame: damage met there is
    // reported after the summary (exit 5; `verify` finds all of it), not instead of it.
    let (reclaimable_bytes, reclaimable_events, damage) = match store.reclaimable() {
        Ok(r) => (Some(r.dead_bytes), Some(r.events_removed), None),
        Err(e @ streamlog::Error::Corrupted { .. }) => (None, None, Some(e)),
        Err(e) => return Err(e.into()),
    };
    line(
        out,
        Obj::new()
            .field("dir", dir.display().to_string())
            .field("segments", i.segments)
            .field("bytes", i.bytes)
            .field("logical_bytes", i.bytes)
            .field("physical_bytes", i.physical_bytes)
            .field("reclaimable_bytes", reclaimable_bytes)
            .field("reclaimable_events", reclaimable_events)
            .field("damage", damage.as_ref().map(ToString::to_string))
            .field("events", i.events)
            .field("streams", i.streams)
            .field("appends", i.appends)
            .field("head", i.head.0)
            .field("durable", i.durable.0)
            .field("durability", i.durability.to_string())
            .field("snapshots", i.snapshots)
            .field("snapshot_bytes", i.snapshot_bytes)
            .field("index_tables", i.index_tables)
            .field("index_covered", i.index_covered.0)
            .field("read_only", true)
            .obj("recovery", output::recovery(store.recovery_report()))
            .obj("snapshot_recovery", output::snapshot_recovery(&snapshots)),
    )?;
    match damage {
        Some(e) => Err(CliError::Store(e)),
        None => Ok(()),
    }
}

/// Total size of the segment files of the store at `dir` (0 when unknown).
/// Bytes of the snapshot files' segments (of every generation present).
fn snapshot_bytes(dir: &Path) -> u64 {
    let Ok(generations) = std::fs::read_dir(dir.join(streamlog::SNAPSHOTS_DIR)) else {
        return 0;
    };
    generations
        .filter_map(|g| g.ok())
        .map(|g| g.path())
        .filter(|p| p.is_dir())
        .map(|p| segment_bytes(&p))
        .sum()
}

fn segment_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir.join(streamlog::SEGMENTS_DIR)) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| streamlog::inspect::parse_segment_file_name(n).is_some())
        })
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// A progress bar on stderr counting bytes, or a hidden one when stderr is not a terminal.
pub fn progress_bar(total: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    let template = format!("{what} [{{bar:40}}] {{percent:>3}}% {{msg}} eta {{eta}}");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// A damaged place as `verify` prints it.
fn damage_line(d: &streamlog::Damage) -> Obj {
    Obj::new()
        .field("file", d.file.display().to_string())
        .field("offset", d.offset)
        .field("reason", d.reason.as_str())
        .field("torn_tail", d.torn_tail)
}

fn verify(dir: &Path, out: &mut impl Write) -> CliResult {
    require_store(dir)?;
    let bar = progress_bar(
        segment_bytes(dir).saturating_add(snapshot_bytes(dir)),
        "verify",
    );
    let result = streamlog::inspect::verify_dir(dir, |n| bar.inc(n));
    bar.finish_and_clear();
    let report = result?;
    for d in &report.damage {
        line(out, damage_line(d))?;
    }
    for problem in &report.index_problems {
        line(
            out,
            Obj::new()
                .field("index_problem", problem.as_str())
                .field("fix", "streamlog reindex"),
        )?;
    }
    for problem in &report.version_problems {
        line(out, Obj::new().field("version_problem", problem.as_str()))?;
    }
    // The snapshot files: a cache (no event is lost), which a scavenge rewrites without
    // their damaged frames.
    let snapshots = &report.snapshots;
    for d in &snapshots.damage {
        let obj = damage_line(d);
        let obj = if d.torn_tail {
            obj
        } else {
            obj.field("fix", "streamlog scavenge")
        };
        line(out, obj)?;
    }
    for problem in &snapshots.index_problems {
        line(
            out,
            Obj::new()
                .field("snapshot_index_problem", problem.as_str())
                .field("fix", "streamlog scavenge"),
        )?;
    }
    if let Some(why) = &snapshots.discarded {
        line(
            out,
            Obj::new()
                .field("snapshot_problem", why.as_str())
                .field("fix", "streamlog scavenge"),
        )?;
    }
    if let Some(why) = &snapshots.not_checked {
        line(out, Obj::new().field("snapshots_not_checked", why.as_str()))?;
    }
    let snapshot_corrupted = snapshots.corruption().count()
        + snapshots.index_problems.len()
        + usize::from(snapshots.discarded.is_some());
    let corrupted = report.corruption().count()
        + report.index_problems.len()
        + report.version_problems.len()
        + snapshot_corrupted;
    let torn = report
        .damage
        .len()
        .saturating_sub(report.corruption().count())
        + snapshots
            .damage
            .len()
            .saturating_sub(snapshots.corruption().count());
    line(
        out,
        Obj::new()
            .field("segments", report.segments)
            .field("frames", report.frames)
            .field("events", report.events)
            .field("bytes", report.bytes)
            .field("snapshot_frames", snapshots.frames)
            .field("snapshot_corrupted", snapshot_corrupted)
            .field("corrupted", corrupted)
            .field("torn_tail", torn)
            .field("ok", corrupted == 0),
    )?;
    if corrupted > 0 {
        out.flush()?;
        return Err(CliError::CorruptionFound(corrupted));
    }
    if let Some(why) = &snapshots.not_checked {
        out.flush()?;
        return Err(CliError::NewerFormat(why.clone()));
    }
    Ok(())
}

fn snapshot(command: SnapshotCommand, out: &mut impl Write) -> CliResult {
    match command {
        SnapshotCommand::Save {
            dir,
            stream,
            version,
            schema,
            data,
            stdin,
        } => {
            let data = if stdin {
                let mut buf = Vec::new();
                std::io::stdin().lock().read_to_end(&mut buf)?;
                buf
            } else {
                data.map(OsString::into_encoded_bytes).unwrap_or_default()
            };
            refuse_cluster_node(&dir)?;
            let store = open_writable(&dir)?;
            store
                .save_snapshot(&stream, version, &schema, &data)
                .map_err(refused)?;
            store.close()?;
            line(
                out,
                Obj::new()
                    .field("stream", stream.as_str())
                    .field("version", version)
                    .field("schema", schema.as_str())
                    .field("bytes", data.len()),
            )?;
        }
        SnapshotCommand::Load { dir, stream } => {
            let store = open_read_only(&dir)?;
            match store.latest_snapshot(&stream).map_err(refused)? {
                Some(s) => {
                    let obj = Obj::new()
                        .field("stream", s.stream.as_str())
                        .field("version", s.version)
                        .field("schema", s.schema.as_str());
                    line(out, output::payload(obj, "data", &s.data))?;
                }
                None => {
                    return Err(CliError::Other(format!("no snapshot of stream {stream:?}")));
                }
            }
        }
    }
    Ok(())
}

fn reindex(dir: &Path, out: &mut impl Write) -> CliResult {
    // Also on a node's store (stopped): the index is derived from the segments alone.
    require_store(dir)?;
    let bar = progress_bar(segment_bytes(dir), "reindex");
    let start = std::time::Instant::now();
    let result = Store::reindex(dir, Options::default(), |n| bar.inc(n));
    bar.finish_and_clear();
    let report = result?;
    let info = open_read_only(dir)?.info()?;
    line(
        out,
        Obj::new()
            .field("frames_replayed", report.index.replayed_frames)
            .field("appends", info.appends)
            .field("events", info.events)
            .field("streams", info.streams)
            .field("index_tables", info.index_tables)
            .field("index_covered", info.index_covered.0)
            .field("seconds", start.elapsed().as_secs_f64()),
    )?;
    Ok(())
}

fn dump_item(item: &DumpItem) -> Obj {
    match item {
        DumpItem::Segment { file, len, header } => {
            let obj = Obj::new()
                .field("item", "segment")
                .field("file", file.display().to_string())
                .field("len", *len);
            match header {
                Ok(base) => obj.field("base_position", *base),
                Err(why) => obj.field("header_error", why.as_str()),
            }
        }
        DumpItem::Frame {
            file,
            offset,
            header,
            events,
        } => Obj::new()
            .field("item", "frame")
            .field("file", file.display().to_string())
            .field("offset", *offset)
            .obj("header", output::frame_header(header))
            .raw(
                "events",
                &output::array(events.iter().map(|e| output::event(e).finish())),
            ),
        DumpItem::Damaged {
            file,
            offset,
            reason,
            header,
            skipped,
        } => Obj::new()
            .field("item", "damaged")
            .field("file", file.display().to_string())
            .field("offset", *offset)
            .field("reason", reason.as_str())
            .opt_obj("header", header.as_ref().map(output::frame_header))
            .field("skipped", *skipped),
        DumpItem::ZeroTail {
            file,
            offset,
            bytes,
        } => Obj::new()
            .field("item", "zero_tail")
            .field("file", file.display().to_string())
            .field("offset", *offset)
            .field("bytes", *bytes),
        other => Obj::new()
            .field("item", "unknown")
            .field("debug", format!("{other:?}")),
    }
}

fn dump(dir: &Path, segment: Option<&Path>, out: &mut impl Write) -> CliResult {
    // A segment file named by its path is dumped wherever it lives (a copy, a backup).
    if !segment.is_some_and(Path::is_file) {
        require_store(dir)?;
    }
    let mut write_error = None;
    let result = streamlog::inspect::dump(dir, segment, |item| {
        line(out, dump_item(&item)).map_err(|e| {
            let kind = e.kind();
            write_error = Some(e);
            streamlog::Error::Io {
                context: "write to stdout".into(),
                source: kind.into(),
            }
        })
    });
    if let Some(e) = write_error {
        return Err(CliError::Output(e));
    }
    Ok(result?)
}
