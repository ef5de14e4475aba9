//! End-to-end tests of the `streamlog` command-line tool: exit codes, JSON output, and that
//! it is a faithful layer over the store.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use streamlog::Store;

fn streamlog(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_streamlog"))
        .args(args)
        .output()
        .unwrap()
}

fn streamlog_with_stdin(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_streamlog"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every stdout line parsed as JSON.
fn lines(o: &Output) -> Vec<Value> {
    String::from_utf8(o.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

fn ok_lines(o: &Output) -> Vec<Value> {
    assert_eq!(code(o), 0, "stderr: {}", stderr(o));
    lines(o)
}

struct TestStore {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl TestStore {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        TestStore { _tmp: tmp, dir }
    }

    fn path(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    fn append(&self, stream: &str, ty: &str, data: &str) -> Value {
        let o = streamlog(&["append", self.path(), stream, "--type", ty, "--data", data]);
        ok_lines(&o).remove(0)
    }

    fn read(&self, stream: &str) -> Vec<Value> {
        ok_lines(&streamlog(&["read", self.path(), stream]))
    }
}

fn first_segment(dir: &Path) -> PathBuf {
    dir.join(streamlog::SEGMENTS_DIR)
        .join(streamlog::segment::segment_file_name(0))
}

#[test]
fn append_then_read_round_trips_json_data_as_json() {
    let s = TestStore::new();
    let r = s.append(
        "account-1",
        "Deposited",
        r#"{"amount": 100, "big": 123456789012345678901234567890}"#,
    );
    assert_eq!(r["stream"], "account-1");
    assert_eq!(r["first_version"], 0);
    assert_eq!(r["last_version"], 0);
    assert_eq!(r["deduplicated"], false);
    assert!(r["position"].is_u64());

    let o = streamlog(&[
        "append",
        s.path(),
        "account-1",
        "--type",
        "Noted",
        "--data",
        "plain text",
        "--metadata",
        r#"{"user":"ann"}"#,
    ]);
    ok_lines(&o);

    let events = s.read("account-1");
    assert_eq!(events.len(), 2);
    let e = &events[0];
    assert_eq!(e["stream"], "account-1");
    assert_eq!(e["version"], 0);
    assert_eq!(e["type"], "Deposited");
    assert_eq!(e["data"]["amount"], 100);
    assert_eq!(e["position"], r["position"]);
    assert!(e["id"].as_str().unwrap().len() == 36);
    assert!(e["timestamp_us"].is_i64());
    let ts = e["timestamp"].as_str().unwrap();
    assert!(
        ts.ends_with('Z') && ts.len() == "2024-01-01T00:00:00.000000Z".len(),
        "{ts}"
    );
    // Big integers are not squeezed through a float.
    let line =
        String::from_utf8(streamlog(&["read", s.path(), "account-1", "--limit", "1"]).stdout)
            .unwrap();
    assert!(line.contains("123456789012345678901234567890"), "{line}");

    assert_eq!(events[1]["data"], "plain text");
    assert_eq!(events[1]["metadata"]["user"], "ann");
    assert_eq!(events[1]["version"], 1);
}

#[cfg(unix)]
#[test]
fn non_utf8_data_reads_back_as_data_base64() {
    use std::os::unix::ffi::OsStrExt;
    let s = TestStore::new();
    let o = Command::new(env!("CARGO_BIN_EXE_streamlog"))
        .args(["append", s.path(), "bin", "--type", "Blob", "--data"])
        .arg(std::ffi::OsStr::from_bytes(&[0xff, 0xfe, 0x80, 0x01]))
        .output()
        .unwrap();
    ok_lines(&o);
    let e = &s.read("bin")[0];
    assert!(e.get("data").is_none(), "{e}");
    assert_eq!(e["data_base64"], "//6AAQ==");
    assert_eq!(e["metadata"], "");
}

#[test]
fn an_append_with_an_id_is_idempotent_when_retried() {
    let s = TestStore::new();
    let id = "0191e4b2-7c3a-7cde-8f00-000000000001";
    let args = [
        "append",
        s.path(),
        "s",
        "--type",
        "T",
        "--data",
        "x",
        "--id",
        id,
    ];
    let first = ok_lines(&streamlog(&args)).remove(0);
    let again = ok_lines(&streamlog(&args)).remove(0);
    assert_eq!(first["deduplicated"], false);
    assert_eq!(again["deduplicated"], true);
    assert_eq!(again["position"], first["position"]);
    let events = s.read("s");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["id"], id);
}

#[test]
fn stdin_batch_is_appended_as_one_atomic_append() {
    let s = TestStore::new();
    s.append("s", "First", "0");
    let input = concat!(
        r#"{"type":"A","data":{"x":1}}"#,
        "\n",
        r#"{"type":"B","data":"text","metadata":{"m":true}}"#,
        "\n\n",
        r#"{"type":"C","data":[1,2,3],"id":"0191e4b2-7c3a-7cde-8f00-0000000000aa"}"#,
        "\n",
    );
    let o = streamlog_with_stdin(
        &["append", s.path(), "s", "--stdin", "--expected", "0"],
        input.as_bytes(),
    );
    let r = ok_lines(&o).remove(0);
    assert_eq!(
        (r["first_version"].as_u64(), r["last_version"].as_u64()),
        (Some(1), Some(3))
    );

    let events = s.read("s");
    assert_eq!(events.len(), 4);
    // One append: every event of the batch shares its position.
    for e in &events[1..] {
        assert_eq!(e["position"], r["position"]);
    }
    assert_ne!(events[0]["position"], r["position"]);
    assert_eq!(events[1]["type"], "A");
    assert_eq!(events[1]["data"]["x"], 1);
    assert_eq!(events[2]["data"], "text");
    assert_eq!(events[2]["metadata"]["m"], true);
    assert_eq!(events[3]["data"], serde_json::json!([1, 2, 3]));
    assert_eq!(events[3]["id"], "0191e4b2-7c3a-7cde-8f00-0000000000aa");
}

#[test]
fn stdin_batch_with_a_bad_line_appends_nothing_and_names_the_line() {
    let s = TestStore::new();
    s.append("s", "First", "0");
    let input =
        b"{\"type\":\"A\",\"data\":1}\n{\"type\":\"B\",\"data\":\n{\"type\":\"C\",\"data\":3}\n";
    let o = streamlog_with_stdin(&["append", s.path(), "s", "--stdin"], input);
    assert_eq!(
        code(&o),
        2,
        "malformed input is a usage error: {}",
        stderr(&o)
    );
    assert!(o.stdout.is_empty());
    assert!(stderr(&o).contains("line 2"), "{}", stderr(&o));
    assert_eq!(s.read("s").len(), 1);

    // A line that is JSON but not an event is refused as well.
    let o = streamlog_with_stdin(&["append", s.path(), "s", "--stdin"], b"{\"type\":\"A\"}\n");
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("line 1"), "{}", stderr(&o));
    assert_eq!(s.read("s").len(), 1);
}

#[test]
fn append_without_type_stores_the_default_type_event() {
    let s = TestStore::new();
    ok_lines(&streamlog(&["append", s.path(), "s", "--data", "x"]));
    let events = s.read("s");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "event");
    assert_eq!(events[0]["data"], "x");
}

#[test]
fn stdin_lines_without_type_take_the_type_option_or_the_default() {
    let s = TestStore::new();
    let input = b"{\"data\":1}\n{\"type\":\"Own\",\"data\":2}\n";
    ok_lines(&streamlog_with_stdin(
        &["append", s.path(), "s", "--stdin"],
        input,
    ));
    ok_lines(&streamlog_with_stdin(
        &["append", s.path(), "s", "--stdin", "--type", "Given"],
        input,
    ));
    let types: Vec<Value> = s.read("s").iter().map(|e| e["type"].clone()).collect();
    assert_eq!(types, ["event", "Own", "Given", "Own"]);
}

#[test]
fn append_with_wrong_expected_version_exits_3() {
    let s = TestStore::new();
    s.append("s", "T", "a");
    for expected in ["no-stream", "5"] {
        let o = streamlog(&[
            "append",
            s.path(),
            "s",
            "--expected",
            expected,
            "--type",
            "T",
            "--data",
            "b",
        ]);
        assert_eq!(code(&o), 3, "{}", stderr(&o));
        assert!(o.stdout.is_empty());
        assert!(
            stderr(&o).contains("wrong expected version"),
            "{}",
            stderr(&o)
        );
    }
    let o = streamlog(&[
        "append",
        s.path(),
        "other",
        "--expected",
        "exists",
        "--type",
        "T",
        "--data",
        "b",
    ]);
    assert_eq!(code(&o), 3);
    let o = streamlog(&[
        "append",
        s.path(),
        "s",
        "--expected",
        "0",
        "--type",
        "T",
        "--data",
        "b",
    ]);
    assert_eq!(ok_lines(&o)[0]["first_version"], 1);
}

#[test]
fn appends_to_a_store_held_open_by_a_writer_exit_4_and_reads_work_beside_it() {
    let s = TestStore::new();
    s.append("s", "T", "a");
    let store = Store::open(&s.dir).unwrap();
    store
        .append(
            "s",
            streamlog::ExpectedVersion::Any,
            [streamlog::NewEvent::new("T", "live")],
        )
        .unwrap();
    let o = streamlog(&["append", s.path(), "s", "--type", "T", "--data", "b"]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(stderr(&o).contains("locked"), "{}", stderr(&o));
    // Reading commands follow the live writer: they see its acknowledged appends.
    for args in [
        vec!["read", s.path(), "s"],
        vec!["read-all", s.path()],
        vec!["info", s.path()],
        vec!["verify", s.path()],
        vec!["dump", s.path()],
    ] {
        let o = streamlog(&args);
        assert_eq!(code(&o), 0, "{args:?}: {}", stderr(&o));
    }
    assert_eq!(s.read("s").len(), 2);
    store.close().unwrap();
    assert_eq!(s.read("s").len(), 2);
}

#[test]
fn verify_on_a_clean_store_exits_0() {
    let s = TestStore::new();
    for i in 0..5 {
        s.append(&format!("s-{}", i % 2), "T", &format!("{{\"i\":{i}}}"));
    }
    let out = ok_lines(&streamlog(&["verify", s.path()]));
    assert_eq!(out.len(), 1);
    let summary = &out[0];
    assert_eq!(summary["ok"], true);
    assert_eq!(summary["corrupted"], 0);
    assert_eq!(summary["torn_tail"], 0);
    assert_eq!(summary["events"], 5);
    assert_eq!(summary["segments"], 1);
}

#[test]
fn verify_with_a_flipped_byte_in_an_attested_frame_exits_5() {
    let s = TestStore::new();
    for i in 0..6 {
        s.append("s", "T", &format!("{{\"payload\":\"event number {i}\"}}"));
    }
    // Every CLI append closes the store cleanly: the final checkpoint attests everything.
    let seg = first_segment(&s.dir);
    let mut bytes = std::fs::read(&seg).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(&seg, &bytes).unwrap();

    let o = streamlog(&["verify", s.path()]);
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    let out = lines(&o);
    let summary = out.last().unwrap();
    assert_eq!(summary["ok"], false);
    assert_eq!(summary["corrupted"], 1);
    let damage = &out[0];
    assert_eq!(damage["torn_tail"], false);
    assert!(damage["file"].as_str().unwrap().ends_with(".seg"));
    assert!(damage["offset"].as_u64().unwrap() <= mid as u64);
    assert!(!damage["reason"].as_str().unwrap().is_empty());
    // Reading the damaged frame is corruption too, exit 5. (Open does not scan the part
    // of the log the index covers, so this is found by reads and by verify.)
    assert_eq!(code(&streamlog(&["read-all", s.path()])), 5);
    // `info` reads every frame to tell what a scavenge would remove: it prints its
    // summary with the damage, then exits 5.
    let o = streamlog(&["info", s.path()]);
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    let info = lines(&o).remove(0);
    assert_eq!(info["events"], 6);
    assert!(info["reclaimable_bytes"].is_null(), "{info}");
    assert!(info["damage"].as_str().unwrap().contains(".seg"), "{info}");
}

#[test]
fn verify_with_only_a_torn_tail_exits_0_and_reports_it() {
    let s = TestStore::new();
    s.append("s", "T", "a");
    let seg = first_segment(&s.dir);
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(b"half a frame, then the power went out")
        .unwrap();
    drop(f);

    let out = ok_lines(&streamlog(&["verify", s.path()]));
    assert_eq!(out.len(), 2);
    assert_eq!(out[0]["torn_tail"], true);
    assert_eq!(out[1]["torn_tail"], 1);
    assert_eq!(out[1]["corrupted"], 0);
    assert_eq!(out[1]["ok"], true);

    // info (read-only) says what recovery would cut, and cuts nothing.
    let len = std::fs::metadata(&seg).unwrap().len();
    let info = ok_lines(&streamlog(&["info", s.path()])).remove(0);
    let t = &info["recovery"]["truncated"];
    assert!(t.is_object(), "{info}");
    assert!(t["bytes_dropped"].as_u64().unwrap() > 0);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len);
}

#[test]
fn info_reports_counts_and_the_recovery_of_this_open() {
    let s = TestStore::new();
    s.append("a", "T", "1");
    s.append("b", "T", "2");
    s.append("a", "T", "3");
    let info = ok_lines(&streamlog(&["info", s.path()])).remove(0);
    assert_eq!(info["events"], 3);
    assert_eq!(info["streams"], 2);
    assert_eq!(info["appends"], 3);
    assert_eq!(info["segments"], 1);
    assert_eq!(info["durability"], "sync");
    assert!(info["bytes"].as_u64().unwrap() > 0);
    assert_eq!(info["head"], info["durable"]);
    let r = &info["recovery"];
    assert_eq!(r["clean_shutdown"], true);
    assert!(r["truncated"].is_null());
    assert_eq!(r["removed_segments"], serde_json::json!([]));
}

#[test]
fn dump_prints_the_segment_header_and_every_frame_with_its_events() {
    let s = TestStore::new();
    s.append("s", "Created", r#"{"n":1}"#);
    s.append("s", "Renamed", r#"{"n":2}"#);
    let out = ok_lines(&streamlog(&["dump", s.path()]));
    assert_eq!(out[0]["item"], "segment");
    assert_eq!(out[0]["base_position"], 0);
    let frames: Vec<&Value> = out.iter().filter(|v| v["item"] == "frame").collect();
    let with_events: Vec<&Value> = frames
        .iter()
        .copied()
        .filter(|f| f["header"]["kind"] == "events")
        .collect();
    assert_eq!(with_events.len(), 2);
    assert!(frames.iter().any(|f| f["header"]["kind"] == "checkpoint"));
    let f = with_events[1];
    assert!(f["header"]["frame_len"].as_u64().unwrap() > 32);
    assert_eq!(f["events"][0]["type"], "Renamed");
    assert_eq!(f["events"][0]["data"]["n"], 2);
    assert_eq!(f["events"][0]["version"], 1);

    // One segment by name gives the same.
    let name = streamlog::segment::segment_file_name(0);
    let one = ok_lines(&streamlog(&["dump", s.path(), "--segment", &name]));
    assert_eq!(one, out);
}

#[test]
fn read_all_with_limit_stops_after_n_events_in_commit_order() {
    let s = TestStore::new();
    for (stream, data) in [("a", "1"), ("b", "2"), ("a", "3"), ("c", "4")] {
        s.append(stream, "T", data);
    }
    let all = ok_lines(&streamlog(&["read-all", s.path()]));
    let data: Vec<i64> = all.iter().map(|e| e["data"].as_i64().unwrap()).collect();
    assert_eq!(data, [1, 2, 3, 4]);
    let two = ok_lines(&streamlog(&["read-all", s.path(), "--limit", "2"]));
    assert_eq!(two, all[..2]);
    // From the position of the third append.
    let pos = all[2]["position"].as_u64().unwrap().to_string();
    let rest = ok_lines(&streamlog(&["read-all", s.path(), "--from", &pos]));
    assert_eq!(rest, all[2..]);
}

#[test]
fn read_backward_starts_from_the_last_event() {
    let s = TestStore::new();
    for i in 0..4 {
        s.append("s", "T", &i.to_string());
    }
    let back = ok_lines(&streamlog(&["read", s.path(), "s", "--backward"]));
    let versions: Vec<u64> = back
        .iter()
        .map(|e| e["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [3, 2, 1, 0]);
    let some = ok_lines(&streamlog(&[
        "read",
        s.path(),
        "s",
        "--backward",
        "--from",
        "2",
        "--limit",
        "2",
    ]));
    let versions: Vec<u64> = some
        .iter()
        .map(|e| e["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [2, 1]);
    let fwd = ok_lines(&streamlog(&["read", s.path(), "s", "--from", "3"]));
    assert_eq!(fwd.len(), 1);
    assert!(ok_lines(&streamlog(&["read", s.path(), "missing"])).is_empty());
}

#[test]
fn reading_never_creates_a_store() {
    let s = TestStore::new();
    let o = streamlog(&["read", s.path(), "s"]);
    assert_eq!(code(&o), 1);
    assert!(!s.dir.exists());
    assert_eq!(code(&streamlog(&["verify", s.path()])), 1);
    assert!(!s.dir.exists());
}

/// Every file and directory under `root` (relative path, kind, size, mtime, contents):
/// equal listings mean nothing was created, removed or written.
fn listing(root: &Path) -> Vec<(PathBuf, bool, u64, std::time::SystemTime, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        let rel = p.strip_prefix(root).unwrap().to_path_buf();
        let contents = if m.is_file() {
            std::fs::read(&p).unwrap()
        } else {
            Vec::new()
        };
        out.push((rel, m.is_dir(), m.len(), m.modified().unwrap(), contents));
        if m.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn commands_on_a_path_that_is_not_a_store_exit_1_name_it_and_create_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing");
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let file = tmp.path().join("file");
    std::fs::write(&file, b"not a store").unwrap();
    let before = listing(tmp.path());
    for dir in [&missing, &empty, &file] {
        let d = dir.to_str().unwrap();
        for args in [
            vec!["info", d],
            vec!["verify", d],
            vec!["dump", d],
            vec!["read", d, "s"],
            vec!["read-all", d],
            vec!["snapshot", "load", d, "s"],
            vec!["reindex", d],
        ] {
            let o = streamlog(&args);
            assert_eq!(code(&o), 1, "{args:?}: {}", stderr(&o));
            assert!(stderr(&o).contains(d), "{args:?}: {}", stderr(&o));
            assert!(o.stdout.is_empty(), "{args:?}");
            assert_eq!(
                listing(tmp.path()),
                before,
                "{args:?} changed {}",
                tmp.path().display()
            );
        }
    }
}

/// A store with two streams, a snapshot and index tables (written by the CLI).
fn store_with_every_kind_of_file() -> TestStore {
    let s = TestStore::new();
    s.append("a", "T", r#"{"n":1}"#);
    s.append("b", "T", r#"{"n":2}"#);
    ok_lines(&streamlog(&[
        "snapshot",
        "save",
        s.path(),
        "a",
        "0",
        "--data",
        "state",
    ]));
    s
}

/// A command line and a check of what it printed.
type CheckedCommand<'a> = (Vec<&'a str>, fn(&[Value]) -> bool);

/// The commands that only read, each with a check of what it printed.
fn read_only_commands(dir: &str) -> Vec<CheckedCommand<'_>> {
    vec![
        (vec!["read", dir, "a"], |l| {
            l.len() == 1 && l[0]["data"]["n"] == 1
        }),
        (vec!["read-all", dir], |l| l.len() == 2),
        (vec!["info", dir], |l| {
            l[0]["events"] == 2 && l[0]["snapshots"] == 1
        }),
        (vec!["verify", dir], |l| l.last().unwrap()["ok"] == true),
        (vec!["dump", dir], |l| {
            l[0]["item"] == "segment"
                && l.iter()
                    .filter(|i| i["events"].as_array().is_some_and(|e| e.len() == 1))
                    .count()
                    == 2
        }),
        (vec!["snapshot", "load", dir, "a"], |l| {
            l[0]["data"] == "state"
        }),
    ]
}

/// The effective user id, from /proc (0: root, whom file modes do not stop).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Makes every directory under `root` 0555 and every file 0444 (or gives write access
/// back to the owner).
#[cfg(unix)]
fn set_read_only(root: &Path, read_only: bool) {
    use std::os::unix::fs::PermissionsExt;
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let mode = match (m.is_dir(), read_only) {
            (true, true) => 0o555,
            (true, false) => 0o755,
            (false, true) => 0o444,
            (false, false) => 0o644,
        };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        if m.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
        }
    }
}

#[cfg(unix)]
#[test]
fn read_only_commands_work_on_a_store_the_user_cannot_write() {
    let s = store_with_every_kind_of_file();
    let root = s._tmp.path();
    set_read_only(root, true);
    struct Writable<'a>(&'a Path);
    impl Drop for Writable<'_> {
        fn drop(&mut self) {
            set_read_only(self.0, false);
        }
    }
    let _restore = Writable(root);
    // File modes do not stop root: as root, run the tool as `nobody` (setpriv, from
    // util-linux); without setpriv, only "changes nothing" is checked.
    let as_root = effective_uid() == Some(0);
    let setpriv = as_root
        && Command::new("setpriv")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if as_root && !setpriv {
        eprintln!("running as root without setpriv: write permission is not taken away");
    }
    let run = |args: &[&str]| -> Output {
        let mut c = if setpriv {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(env!("CARGO_BIN_EXE_streamlog"));
            c
        } else {
            Command::new(env!("CARGO_BIN_EXE_streamlog"))
        };
        c.args(args).output().unwrap()
    };
    let before = listing(&s.dir);
    if !as_root || setpriv {
        // The set-up denies writes: an append fails for lack of permission.
        let o = run(&["append", s.path(), "a", "--type", "T", "--data", "x"]);
        assert_eq!(code(&o), 1, "append: {}", stderr(&o));
        assert!(
            stderr(&o).contains("Permission denied"),
            "append: {}",
            stderr(&o)
        );
    }
    for (args, check) in read_only_commands(s.path()) {
        let o = run(&args);
        let l = ok_lines(&o);
        assert!(check(&l), "{args:?}: {l:?}");
    }
    assert_eq!(listing(&s.dir), before);
}

#[test]
fn read_only_commands_create_and_change_nothing_even_without_a_lock_file() {
    let s = store_with_every_kind_of_file();
    std::fs::remove_file(s.dir.join(streamlog::LOCK_FILE)).unwrap();
    let before = listing(&s.dir);
    for (args, check) in read_only_commands(s.path()) {
        let l = ok_lines(&streamlog(&args));
        assert!(check(&l), "{args:?}: {l:?}");
        assert_eq!(listing(&s.dir), before, "{args:?}");
    }
}

/// Sets the u32 format version at offset 8 of `path` to `version` and recomputes the
/// CRC-32 stored after the bytes it covers (`..crc_end`; the last 4 bytes when `None`).
fn set_format_version(path: &Path, version: u32, crc_end: Option<usize>) {
    let mut b = std::fs::read(path).unwrap();
    b[8..12].copy_from_slice(&version.to_le_bytes());
    let n = crc_end.unwrap_or(b.len() - 4);
    let crc = crc32fast::hash(&b[..n]);
    b[n..n + 4].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(path, b).unwrap();
}

/// Makes one file of the store at `dir` declare format version 2 (CRC recomputed), as a
/// newer streamlog would have written it; returns its path.
fn make_newer(what: &str, dir: &Path) -> PathBuf {
    // One past the version this build writes for that kind of file.
    let (file, crc_end, newer) = match what {
        "segment" => (
            first_segment(dir),
            Some(28),
            streamlog::format::FORMAT_VERSION + 1,
        ),
        "index manifest" => (dir.join(streamlog::INDEX_DIR).join("MANIFEST"), None, 2),
        "snapshot segment" => {
            let generation = std::fs::read_dir(dir.join(streamlog::SNAPSHOTS_DIR))
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.is_dir())
                .unwrap();
            (
                generation
                    .join("segments")
                    .join(streamlog::segment::segment_file_name(0)),
                Some(28),
                streamlog::format::FORMAT_VERSION + 1,
            )
        }
        _ => unreachable!("{what}"),
    };
    set_format_version(&file, newer, crc_end);
    file
}

#[test]
fn a_store_written_by_a_newer_format_exits_6_and_is_left_as_it_is() {
    for what in ["segment", "index manifest", "snapshot segment"] {
        let s = store_with_every_kind_of_file();
        let file = make_newer(what, &s.dir);
        // A newer snapshot file leaves the rest of the store usable (a writer's open
        // rewrites its LIVE file): what must stay as it is are the snapshot files.
        let kept = if what == "snapshot segment" {
            s.dir.join(streamlog::SNAPSHOTS_DIR)
        } else {
            s.dir.clone()
        };
        let before = listing(&kept);
        let mut commands = vec![
            vec!["info", s.path()],
            vec!["snapshot", "load", s.path(), "a"],
            vec!["snapshot", "save", s.path(), "a", "0", "--data", "x"],
            // (Of a newer snapshot file: it rebuilds the event index, then its summary,
            // `info`'s, refuses.)
            vec!["reindex", s.path()],
            // (Of a newer snapshot file: it checks the events, says it left the snapshot
            // files unchecked, and exits 6.)
            vec!["verify", s.path()],
        ];
        // The snapshot files are opened at their first use: commands of events alone do
        // not read them (tried below), nor does dump.
        if what != "snapshot segment" {
            commands.extend([
                vec!["read", s.path(), "a"],
                vec!["read-all", s.path()],
                vec!["append", s.path(), "a", "--type", "T", "--data", "x"],
            ]);
        }
        if what == "segment" {
            commands.push(vec!["dump", s.path()]);
        }
        for args in commands {
            let o = streamlog(&args);
            let err = stderr(&o);
            assert_eq!(code(&o), 6, "{what}: {args:?}: {err}");
            assert!(
                err.contains("newer streamlog") && err.contains(file.to_str().unwrap()),
                "{what}: {args:?}: {err}"
            );
        }
        assert_eq!(listing(&kept), before, "{what}");
        if what == "snapshot segment" {
            for args in [
                vec!["read", s.path(), "a"],
                vec!["read-all", s.path()],
                vec!["append", s.path(), "a", "--type", "T", "--data", "x"],
            ] {
                let o = streamlog(&args);
                assert_eq!(code(&o), 0, "{what}: {args:?}: {}", stderr(&o));
            }
            assert_eq!(listing(&kept), before, "{what}");
        }
    }
}

#[test]
fn bench_json_reports_every_field_with_a_positive_ratio() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bench");
    let o = streamlog(&[
        "bench",
        "--events",
        "2000",
        "--json",
        "--dir",
        dir.to_str().unwrap(),
        "--writers",
        "2",
    ]);
    let out = ok_lines(&o);
    // The default run: durable (what the library does by default) first, then buffered,
    // each against its own baseline, in a store of its own under --dir.
    assert_eq!(out.len(), 2, "{out:?}");
    for (b, durability, baseline) in [
        (&out[0], "sync", "write + fdatasync"),
        (&out[1], "buffered", "page cache write"),
    ] {
        for field in [
            "workload",
            "durability",
            "events",
            "bytes",
            "seconds",
            "events_per_s",
            "mb_per_s",
            "latency_p50_us",
            "latency_p99_us",
            "latency_p999_us",
            "baseline",
            "baseline_mb_per_s",
            "ratio",
            "read_stream_events",
            "read_stream_us",
            "read_all_events_per_s",
            "read_all_mb_per_s",
        ] {
            assert!(b.get(field).is_some(), "missing {field}: {b}");
        }
        assert_eq!(b["events"], 2000);
        assert_eq!(b["durability"], durability);
        assert_eq!(b["baseline"], baseline);
        assert!(b["ratio"].as_f64().unwrap() > 0.0, "{b}");
        assert!(b["bytes"].as_u64().unwrap() > 2000 * 150);
        assert!(b["latency_p50_us"].as_f64().unwrap() > 0.0);
        // 2000 events, batch 100, 1000 streams: 20 appends to streams bench-0..bench-19.
        assert_eq!(b["read_stream_events"], 100);
        assert_eq!(b["read_all_events"], 2000);
        // The store it wrote is a valid store holding exactly those events.
        let store = dir.join(durability);
        assert_eq!(b["dir"], store.to_str().unwrap());
        let info = ok_lines(&streamlog(&["info", store.to_str().unwrap()])).remove(0);
        assert_eq!(info["events"], 2000);
    }
}

#[test]
fn bench_with_one_durability_runs_once_in_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bench");
    let o = streamlog(&[
        "bench",
        "--events",
        "500",
        "--durability",
        "buffered",
        "--json",
        "--dir",
        dir.to_str().unwrap(),
    ]);
    let out = ok_lines(&o);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0]["durability"], "buffered");
    assert_eq!(out[0]["baseline"], "page cache write");
    let info = ok_lines(&streamlog(&["info", dir.to_str().unwrap()])).remove(0);
    assert_eq!(info["events"], 500);
}

#[test]
fn bench_sync_reports_baseline_syncs() {
    let o = streamlog(&[
        "bench",
        "--events",
        "40",
        "--batch",
        "1",
        "--writers",
        "4",
        "--durability",
        "sync",
        "--json",
    ]);
    let b = ok_lines(&o).remove(0);
    assert_eq!(b["durability"], "sync");
    assert_eq!(b["baseline"], "write + fdatasync");
    assert!(b["baseline_syncs_per_s"].as_f64().unwrap() > 0.0, "{b}");
    assert_eq!(b["baseline_writes"], 40);
}

#[test]
fn bench_human_output_is_a_few_aligned_lines() {
    let o = streamlog(&["bench", "--events", "500", "--batch", "50"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = String::from_utf8(o.stdout.clone()).unwrap();
    // Durable first (the library's default), each with its own plainly named baseline.
    assert!(
        text.starts_with("workload     append_refs sync, 150 B events, batch 50"),
        "{text}"
    );
    let buffered = text
        .find("workload     append_refs buffered, 150 B events, batch 50")
        .expect(&text);
    assert!(
        text[..buffered].contains("baseline     write + fdatasync: "),
        "{text}"
    );
    assert!(
        text[buffered..].contains("baseline     page cache write: "),
        "{text}"
    );
    assert!(text.contains("summary      sync "), "{text}");
    assert!(text.contains("× write + fdatasync"), "{text}");
    assert!(text.contains("× page cache write"), "{text}");
    // No progress bar in a pipe.
    assert!(o.stderr.is_empty(), "{}", stderr(&o));
}

#[test]
fn zero_sized_bench_arguments_are_usage_errors_exit_2() {
    for arg in ["--events", "--batch", "--writers", "--streams"] {
        let o = streamlog(&["bench", arg, "0"]);
        assert_eq!(code(&o), 2, "{arg}: {}", stderr(&o));
        assert!(stderr(&o).contains(arg), "{}", stderr(&o));
    }
}

#[test]
fn usage_errors_exit_2() {
    let s = TestStore::new();
    for args in [
        vec![],
        vec!["frobnicate"],
        vec!["append", s.path(), "s", "--type", "T"],
        vec!["append", s.path(), "s"],
        vec![
            "append",
            s.path(),
            "s",
            "--type",
            "T",
            "--data",
            "x",
            "--stdin",
        ],
        vec![
            "append",
            s.path(),
            "s",
            "--type",
            "T",
            "--data",
            "x",
            "--expected",
            "latest",
        ],
        vec![
            "append",
            s.path(),
            "s",
            "--type",
            "T",
            "--data",
            "x",
            "--id",
            "not-a-uuid",
        ],
        vec!["read", s.path()],
        vec!["read-all", s.path(), "--limit", "-1"],
        vec!["bench", "--durability", "sometimes"],
    ] {
        let o = streamlog(&args);
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
    }
    assert!(!s.dir.exists());
}

#[test]
fn values_the_store_refuses_are_usage_errors_exit_2() {
    let s = TestStore::new();
    let long = "x".repeat(300);
    // Refused before anything is opened: nothing is created.
    for args in [
        vec!["append", s.path(), "", "--data", "x"],
        vec!["append", s.path(), "s", "--type", "", "--data", "x"],
        vec!["read", s.path(), ""],
        vec!["snapshot", "save", s.path(), "", "0", "--data", "x"],
        vec![
            "snapshot",
            "save",
            s.path(),
            "s",
            "0",
            "--schema",
            "",
            "--data",
            "x",
        ],
        vec!["snapshot", "load", s.path(), ""],
        vec!["bench", "--event-size", "20000000"],
        vec!["bench", "--batch", "10000", "--event-size", "10000"],
        vec!["bench", "--event-size", "0"],
    ] {
        let o = streamlog(&args);
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
        assert!(!s.dir.exists(), "{args:?}");
    }
    s.append("s", "T", "x");
    // Refused by the store.
    for (args, says) in [
        (vec!["append", s.path(), "$s", "--data", "x"], "reserved"),
        (
            vec!["append", s.path(), &long, "--data", "x"],
            "max_stream_name_bytes",
        ),
        (
            vec!["append", s.path(), "s", "--type", &long, "--data", "x"],
            "max_event_type_bytes",
        ),
        (vec!["read-all", s.path(), "--from", "33"], "33"),
        (
            vec!["read-all", s.path(), "--from", "32:2"],
            "holds 1 event",
        ),
        (
            vec![
                "append",
                s.path(),
                "s",
                "--expected",
                "99999999999999999999999",
                "--data",
                "x",
            ],
            "a version is at most 18446744073709551615",
        ),
        (
            vec!["read-all", s.path(), "--from", "999999"],
            "past the end of the log",
        ),
        // A mistyped resume token would make `tail` wait past every event before it.
        (
            vec!["tail", s.path(), "--from", "999999"],
            "past the end of the log",
        ),
        (vec!["tail", s.path(), "--stream", ""], "not empty"),
        (
            vec!["snapshot", "save", s.path(), "s", "9", "--data", "x"],
            "its last version is 0",
        ),
        (
            vec!["read", s.path(), "s", "--until-version", "10"],
            "stream \"s\" ends at version 0",
        ),
        (
            vec!["snapshot", "save", s.path(), "t", "0", "--data", "x"],
            "has no events",
        ),
    ] {
        let o = streamlog(&args);
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
    }
    assert_eq!(s.read("s").len(), 1);
}

#[test]
fn error_messages_show_no_rust_debug_formatting() {
    let s = TestStore::new();
    s.append("s", "T", "x");
    s.append("s", "T", "y");
    for args in [
        vec!["snapshot", "save", s.path(), "s", "9", "--data", "x"],
        vec!["snapshot", "save", s.path(), "none", "0", "--data", "x"],
        vec!["append", s.path(), "s", "--expected", "0", "--data", "z"],
        vec!["append", s.path(), "none", "--expected", "0", "--data", "z"],
        vec![
            "append",
            s.path(),
            "s",
            "--expected",
            "no-stream",
            "--data",
            "z",
        ],
    ] {
        let o = streamlog(&args);
        let err = stderr(&o);
        assert!(!err.is_empty() && code(&o) != 0, "{args:?}");
        for debug in ["Some(", "None", "Exact(", "NoStream"] {
            assert!(!err.contains(debug), "{args:?}: {err}");
        }
    }
}

#[test]
fn snapshot_save_then_load_prints_the_latest_snapshot_and_info_counts_it() {
    let s = TestStore::new();
    s.append("acct", "Deposited", r#"{"amount":5}"#);
    s.append("acct", "Deposited", r#"{"amount":7}"#);
    ok_lines(&streamlog(&[
        "snapshot",
        "save",
        s.path(),
        "acct",
        "0",
        "--schema",
        "balance-v1",
        "--data",
        r#"{"balance":5}"#,
    ]));
    ok_lines(&streamlog(&[
        "snapshot",
        "save",
        s.path(),
        "acct",
        "1",
        "--schema",
        "balance-v1",
        "--data",
        r#"{"balance":12}"#,
    ]));
    let snap = ok_lines(&streamlog(&["snapshot", "load", s.path(), "acct"])).remove(0);
    assert_eq!(snap["stream"], "acct");
    assert_eq!(snap["version"], 1);
    assert_eq!(snap["schema"], "balance-v1");
    assert_eq!(snap["data"]["balance"], 12);
    let info = ok_lines(&streamlog(&["info", s.path()])).remove(0);
    assert_eq!(info["snapshots"], 2);
    assert!(info["snapshot_bytes"].as_u64().unwrap() > 0);
    assert_eq!(
        info["snapshot_recovery"],
        serde_json::json!({"generation": 1, "truncated_bytes": 0, "discarded": null})
    );
    // A torn snapshot tail: what a writer's open would cut is shown, nothing is cut.
    let seg = std::fs::read_dir(
        s.dir
            .join("snapshots")
            .join("00000000000000000001")
            .join("segments"),
    )
    .unwrap()
    .next()
    .unwrap()
    .unwrap()
    .path();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.extend_from_slice(b"torn tail");
    std::fs::write(&seg, &bytes).unwrap();
    let info = ok_lines(&streamlog(&["info", s.path()])).remove(0);
    assert_eq!(info["snapshot_recovery"]["truncated_bytes"], 9, "{info}");
    assert_eq!(std::fs::read(&seg).unwrap(), bytes);
    // A version the stream does not have (a bad argument), and a stream without
    // snapshots: errors.
    assert_eq!(
        code(&streamlog(&[
            "snapshot",
            "save",
            s.path(),
            "acct",
            "9",
            "--data",
            "x"
        ])),
        2
    );
    assert_eq!(code(&streamlog(&["snapshot", "load", s.path(), "nope"])), 1);
}

/// Reads lines from a running `tail` until `n` came (or 20 s passed).
fn tail_lines(reader: &mut impl std::io::BufRead, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while out.len() < n && std::time::Instant::now() < deadline {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        out.push(serde_json::from_str(&line).unwrap());
    }
    out
}

#[test]
fn tail_prints_events_another_process_appends_as_they_commit_and_stops_on_sigterm() {
    let s = TestStore::new();
    s.append("s", "Old", "0");
    let mut child = Command::new(env!("CARGO_BIN_EXE_streamlog"))
        .args(["tail", s.path(), "--from", "start", "--checkpoint", "t"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let first = tail_lines(&mut reader, 1);
    assert_eq!(first[0]["type"], "Old");
    // Appends by other processes (each opens the store, appends and closes).
    for i in 0..3 {
        s.append("s", "New", &i.to_string());
    }
    let live = tail_lines(&mut reader, 3);
    assert_eq!(
        live.iter()
            .map(|e| e["version"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert!(live.iter().all(|e| e["resume"].is_string()));
    // SIGTERM: it saves its checkpoint and exits 0.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    // Resuming from the checkpoint prints what came after, once.
    s.append("s", "Later", "4");
    let o = streamlog(&["tail", s.path(), "--checkpoint", "t", "--limit", "1"]);
    let lines = ok_lines(&o);
    assert_eq!(lines[0]["type"], "Later");
    assert_eq!(lines[0]["version"], 4);
}

#[test]
fn tail_and_read_all_filter_by_stream_and_type_and_resume_inside_an_append() {
    let s = TestStore::new();
    let batch = "{\"type\":\"A\",\"data\":\"1\"}\n{\"type\":\"B\",\"data\":\"2\"}\n{\"type\":\"A\",\"data\":\"3\"}\n";
    let o = streamlog_with_stdin(
        &["append", s.path(), "orders-1", "--stdin"],
        batch.as_bytes(),
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    s.append("users-1", "A", "4");
    let all = ok_lines(&streamlog(&[
        "tail",
        s.path(),
        "--from",
        "start",
        "--limit",
        "4",
    ]));
    assert_eq!(all.len(), 4);
    // Resume from inside the 3-event append.
    let token = all[0]["resume"].as_str().unwrap();
    let rest = ok_lines(&streamlog(&["read-all", s.path(), "--from", token]));
    assert_eq!(
        rest,
        all[1..]
            .iter()
            .map(|e| {
                let mut e = e.clone();
                e.as_object_mut().unwrap().remove("resume");
                e
            })
            .collect::<Vec<_>>()
    );
    let a_in_orders = ok_lines(&streamlog(&[
        "tail",
        s.path(),
        "--from",
        "start",
        "--stream-prefix",
        "orders",
        "--type",
        "A",
        "--limit",
        "2",
    ]));
    assert_eq!(
        a_in_orders
            .iter()
            .map(|e| e["data"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![1, 3]
    );
    let not_b = ok_lines(&streamlog(&[
        "tail",
        s.path(),
        "--from",
        "start",
        "--type-regex",
        "^(?!B)",
        "--limit",
        "3",
    ]));
    assert!(not_b.iter().all(|e| e["type"] == "A"));
    let read_b = ok_lines(&streamlog(&["read-all", s.path(), "--type", "B"]));
    assert_eq!(read_b.len(), 1);
    let read_users = ok_lines(&streamlog(&[
        "read-all",
        s.path(),
        "--stream-prefix",
        "users",
    ]));
    assert_eq!(read_users.len(), 1);
    let read_a = ok_lines(&streamlog(&["read", s.path(), "orders-1", "--type", "A"]));
    assert_eq!(read_a.len(), 2);
    // Bad input: usage errors.
    for args in [
        vec!["tail", s.path(), "--from", "x:y"],
        vec!["tail", s.path(), "--type-regex", "("],
        vec!["read-all", s.path(), "--from", "nope"],
    ] {
        assert_eq!(code(&streamlog(&args)), 2, "{args:?}");
    }
}

#[test]
fn a_tail_killed_with_sigkill_resumes_from_its_checkpoint_with_no_gap() {
    let s = TestStore::new();
    let lines: String = (0..40)
        .map(|i| format!("{{\"type\":\"T\",\"data\":\"{i}\"}}\n"))
        .collect();
    for _ in 0..3 {
        let o = streamlog_with_stdin(&["append", s.path(), "s", "--stdin"], lines.as_bytes());
        assert_eq!(code(&o), 0, "{}", stderr(&o));
    }
    let spawn_tail = || {
        Command::new(env!("CARGO_BIN_EXE_streamlog"))
            .args(["tail", s.path(), "--checkpoint", "k"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut first = spawn_tail();
    let mut reader = std::io::BufReader::new(first.stdout.take().unwrap());
    let mut printed = tail_lines(&mut reader, 60);
    // Let it print more and pause (a pause saves the checkpoint), then kill it hard.
    std::thread::sleep(std::time::Duration::from_millis(300));
    s.append("s", "T", "120");
    std::thread::sleep(std::time::Duration::from_millis(50));
    first.kill().unwrap();
    first.wait().unwrap();
    // What it printed before it died (still in the pipe) counts as printed.
    printed.extend(tail_lines(&mut reader, usize::MAX));
    s.append("s", "Marker", "121");
    let mut second = spawn_tail();
    let mut reader = std::io::BufReader::new(second.stdout.take().unwrap());
    let mut resumed = Vec::new();
    while !resumed
        .last()
        .is_some_and(|e: &Value| e["type"] == "Marker")
    {
        let got = tail_lines(&mut reader, 1);
        assert_eq!(got.len(), 1, "the resumed tail stopped before the marker");
        resumed.extend(got);
    }
    second.kill().unwrap();
    second.wait().unwrap();
    let versions =
        |v: &[Value]| -> Vec<u64> { v.iter().map(|e| e["version"].as_u64().unwrap()).collect() };
    let (a, b) = (versions(&printed), versions(&resumed));
    // At least once: the second run starts at or before the first event the first did not
    // print, and together they hold every event, in order within each run.
    assert!(
        b[0] <= a.last().unwrap() + 1,
        "gap: {:?} then {:?}",
        a.last(),
        b.first()
    );
    assert!(a.windows(2).all(|w| w[1] == w[0] + 1) && b.windows(2).all(|w| w[1] == w[0] + 1));
    let mut all: Vec<u64> = a.iter().chain(b.iter()).copied().collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all, (0..=121).collect::<Vec<_>>());
}

#[test]
fn bench_refuses_a_directory_that_is_not_new_or_empty() {
    let s = TestStore::new();
    s.append("s", "T", "mine");
    let o = streamlog(&["bench", "--dir", s.path(), "--events", "100"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert_eq!(s.read("s").len(), 1, "the user's store is left as it was");
}

#[test]
fn reads_as_of_a_version_or_a_time_and_between_times() {
    let s = TestStore::new();
    for i in 0..3 {
        s.append("a", "T", &format!("{i}"));
    }
    let events = s.read("a");
    assert_eq!(events.len(), 3);
    for e in &events {
        // Both times are printed: the event's own, and when the store committed it.
        assert!(e["timestamp"].is_string(), "{e}");
        assert!(e["committed_at"].as_str().unwrap().ends_with('Z'), "{e}");
        assert_eq!(e["schema_version"], 0);
    }
    let upto = ok_lines(&streamlog(&["read", s.path(), "a", "--until-version", "1"]));
    assert_eq!(upto.len(), 2);

    // As of the second event's commit time: the first two (commit times are distinct here:
    // each append is its own process, and the clock moves between them).
    let t1 = events[1]["committed_at"].as_str().unwrap();
    let as_of = ok_lines(&streamlog(&["read", s.path(), "a", "--as-of", t1]));
    assert_eq!(as_of.len(), 2, "{as_of:?}");
    let since = ok_lines(&streamlog(&["read-all", s.path(), "--since", t1]));
    assert_eq!(since.len(), 2, "{since:?}");
    let between = ok_lines(&streamlog(&[
        "read-all",
        s.path(),
        "--since",
        events[0]["committed_at"].as_str().unwrap(),
        "--until",
        t1,
    ]));
    assert_eq!(between.len(), 1, "{between:?}");
    let until_only = ok_lines(&streamlog(&["read-all", s.path(), "--until", t1]));
    assert_eq!(until_only.len(), 1, "{until_only:?}");
    // From a position (the second event's) until a time (the third's commit): the second.
    let from = events[1]["position"].to_string();
    let from = from.as_str();
    let t2 = events[2]["committed_at"].as_str().unwrap();
    let from_until = ok_lines(&streamlog(&[
        "read-all",
        s.path(),
        "--from",
        from,
        "--until",
        t2,
    ]));
    assert_eq!(from_until.len(), 1, "{from_until:?}");
    assert_eq!(from_until[0]["version"], 1, "{from_until:?}");

    // A time that is not RFC 3339 is a usage error.
    for bad in [
        vec!["read", s.path(), "a", "--as-of", "yesterday"],
        vec!["read-all", s.path(), "--since", "2026-13-01T00:00:00Z"],
        vec!["read", s.path(), "a", "--backward", "--until-version", "1"],
    ] {
        let o = streamlog(&bad);
        assert_eq!(code(&o), 2, "{bad:?}: {}", stderr(&o));
    }
}

#[test]
fn stream_meta_prints_and_changes_metadata_as_json_and_reads_honour_it() {
    let s = TestStore::new();
    for i in 0..5 {
        s.append("order-1", "Placed", &format!(r#"{{"n":{i}}}"#));
    }
    let m = ok_lines(&streamlog(&["stream-meta", s.path(), "order-1"])).remove(0);
    assert_eq!(m["stream"], "order-1");
    assert_eq!(m["metadata_version"], Value::Null);
    assert_eq!(m["metadata"], serde_json::json!({}));
    let m = ok_lines(&streamlog(&[
        "stream-meta",
        s.path(),
        "order-1",
        "--max-count",
        "2",
        "--max-age",
        "7d",
        "--user",
        r#"{"owner":"billing"}"#,
    ]))
    .remove(0);
    assert_eq!(m["metadata_version"], 0);
    assert_eq!(
        m["metadata"],
        serde_json::json!({"$maxCount": 2, "$maxAge": 604800, "owner": "billing"})
    );
    let versions: Vec<u64> = s
        .read("order-1")
        .iter()
        .map(|e| e["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [3, 4]);
    // `none` removes a rule; the other fields stay.
    let m = ok_lines(&streamlog(&[
        "stream-meta",
        s.path(),
        "order-1",
        "--max-count",
        "none",
        "--truncate-before",
        "1",
    ]))
    .remove(0);
    assert_eq!(
        m["metadata"],
        serde_json::json!({"$maxAge": 604800, "$tb": 1, "owner": "billing"})
    );
    assert_eq!(s.read("order-1").len(), 4);
    let m = ok_lines(&streamlog(&["stream-meta", s.path(), "order-1"])).remove(0);
    assert_eq!(m["metadata_version"], 1);
}

#[test]
fn stream_meta_refuses_bad_input_with_exit_2_and_changes_nothing() {
    let s = TestStore::new();
    s.append("a", "T", "1");
    for args in [
        &["--user", "{"][..],
        &["--user", "[1,2]"],
        &["--user", r#"{"$maxCount":3}"#],
        &["--max-count", "0"],
        &["--max-count", "-1"],
        &["--max-age", "0"],
        &["--max-age", "3 fortnights"],
        &["--truncate-before", "x"],
    ] {
        let mut all = vec!["stream-meta", s.path(), "a"];
        all.extend_from_slice(args);
        let o = streamlog(&all);
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
    }
    let o = streamlog(&["delete", s.path(), "$streams-metadata"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let o = streamlog(&[
        "append",
        s.path(),
        "$streams-metadata",
        "--type",
        "$tombstone",
        "--data",
        r#"{"stream":"a"}"#,
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let m = ok_lines(&streamlog(&["stream-meta", s.path(), "a"])).remove(0);
    assert_eq!(m["metadata_version"], Value::Null);
    assert_eq!(s.read("a").len(), 1);
}

#[test]
fn delete_soft_then_hard_and_a_hard_deleted_stream_exits_7() {
    let s = TestStore::new();
    s.append("a", "T", "1");
    s.append("a", "T", "2");
    s.append("b", "T", "3");
    // Wrong expected version: exit 3, nothing deleted.
    let o = streamlog(&["delete", s.path(), "a", "--expected", "0"]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let d = ok_lines(&streamlog(&["delete", s.path(), "a", "--expected", "1"])).remove(0);
    assert_eq!(d["deleted"], "soft");
    assert!(d["position"].is_u64());
    assert!(s.read("a").is_empty());
    let m = ok_lines(&streamlog(&["stream-meta", s.path(), "a"])).remove(0);
    assert_eq!(
        (m["deleted"].clone(), m["metadata"]["$tb"].clone()),
        (true.into(), 2.into())
    );
    // Re-created: versions go on.
    let o = streamlog(&[
        "append",
        s.path(),
        "a",
        "--expected",
        "no-stream",
        "--data",
        "new",
    ]);
    assert_eq!(ok_lines(&o)[0]["first_version"], 2);
    assert_eq!(s.read("a").len(), 1);
    let d = ok_lines(&streamlog(&["delete", s.path(), "a", "--hard"])).remove(0);
    assert_eq!(d["deleted"], "hard");
    for args in [
        &["read", s.path(), "a"][..],
        &["read", s.path(), "a", "--backward"],
        &["append", s.path(), "a", "--data", "x"],
        &["delete", s.path(), "a"],
        &["delete", s.path(), "a", "--hard"],
        &["stream-meta", s.path(), "a", "--max-count", "3"],
        // A subscription to it would wait for ever: it exits 7 too.
        &["tail", s.path(), "--stream", "a", "--from", "start"],
    ] {
        let o = streamlog(args);
        assert_eq!(code(&o), 7, "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("deleted"), "{}", stderr(&o));
    }
    let m = ok_lines(&streamlog(&["stream-meta", s.path(), "a"])).remove(0);
    assert_eq!(m["tombstoned"], true);
    // $all passes over the deleted stream's events; the changes are system events.
    let all = ok_lines(&streamlog(&["read-all", s.path()]));
    let user: Vec<&str> = all
        .iter()
        .map(|e| e["stream"].as_str().unwrap())
        .filter(|s| !s.starts_with('$'))
        .collect();
    assert_eq!(user, ["b"]);
    assert_eq!(
        all.iter()
            .filter(|e| e["stream"] == "$streams-metadata")
            .count(),
        2
    );
    let o = streamlog(&["verify", s.path()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // --help lists the exit code.
    let help = String::from_utf8(streamlog(&["--help"]).stdout).unwrap();
    assert!(help.contains("7 stream deleted"), "{help}");
}

#[test]
fn hash_password_prints_an_argon2_hash_that_serve_accepts() {
    let o = streamlog_with_stdin(&["hash-password"], b"changeit\n");
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    let hash = String::from_utf8(o.stdout).unwrap().trim().to_owned();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let o = streamlog_with_stdin(&["hash-password"], b"");
    assert_eq!(code(&o), 2, "an empty password is refused");

    // A server with these users and /metrics starts, says so, and stops on SIGTERM.
    let s = TestStore::new();
    let users = s.dir.parent().unwrap().join("users");
    std::fs::write(&users, format!("# operators\nadmin:{hash}\n")).unwrap();
    let users_path = users.to_str().unwrap();
    let (mut child, mut log, start) = serve_started(&[
        s.path(),
        "--metrics-listen",
        "127.0.0.1:0",
        "--users",
        users_path,
    ]);
    assert_eq!(start["authentication"], true, "{start}");
    assert_eq!(start["tls"], false, "{start}");
    let metrics = start["metrics"].as_str().expect("the metrics address");
    let mut scrape = std::net::TcpStream::connect(metrics).unwrap();
    scrape
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut scrape, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("streamlog_appends_total 0"), "{answer}");
    assert_eq!(terminate(&mut child), Some(0));
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut log, &mut rest).unwrap();
    assert!(rest.contains(r#""event":"stop""#), "{rest}");
}

/// `serve --durability` opens the store so: the start line says how appends are answered.
#[test]
fn serve_answers_appends_with_the_durability_asked_for() {
    for (asked, said) in [
        (None, "sync"),
        (Some("periodic:50ms"), "periodic(50ms)"),
        (Some("periodic:2s"), "periodic(2000ms)"),
        (Some("periodic"), "periodic(100ms)"),
        (Some("periodic:1m"), "periodic(60000ms)"),
        (Some("periodic:1h"), "periodic(3600000ms)"),
        (Some("buffered"), "buffered"),
    ] {
        let s = TestStore::new();
        let mut args = vec![s.path()];
        args.extend(asked.map(|a| ["--durability", a]).into_iter().flatten());
        let (mut child, _log, start) = serve_started(&args);
        assert_eq!(start["durability"], said, "{start}");
        assert_eq!(terminate(&mut child), Some(0), "{asked:?}");
    }
}

/// `streamlog serve ARGS… --listen 127.0.0.1:0` once it has started: the process, the rest
/// of its log, and its start line (checked to be one).
fn serve_started(
    args: &[&str],
) -> (
    std::process::Child,
    std::io::BufReader<std::process::ChildStderr>,
    Value,
) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_streamlog"))
        .arg("serve")
        .args(args)
        .args(["--listen", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut start = String::new();
    std::io::BufRead::read_line(&mut log, &mut start).unwrap();
    let start: Value = serde_json::from_str(&start).unwrap();
    assert_eq!(start["event"], "start", "{start}");
    (child, log, start)
}

/// Sends SIGTERM to `child` and returns its exit code (`None`: killed by a signal).
fn terminate(child: &mut std::process::Child) -> Option<i32> {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    child.wait().unwrap().code()
}

#[test]
fn serve_refuses_bad_tls_and_users_files_with_exit_2() {
    let s = TestStore::new();
    let files = s.dir.parent().unwrap().to_path_buf();
    let missing = files.join("missing.pem");
    let garbage = files.join("garbage.pem");
    std::fs::write(&garbage, "not PEM\n").unwrap();
    let bad_users = files.join("users");
    std::fs::write(&bad_users, "admin:plaintext\n").unwrap();
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    for (args, needle) in [
        (vec!["--tls-cert".to_owned(), path(&garbage)], "--tls-key"),
        (
            vec![
                "--tls-cert".to_owned(),
                path(&missing),
                "--tls-key".to_owned(),
                path(&garbage),
            ],
            "missing.pem",
        ),
        (
            vec![
                "--tls-cert".to_owned(),
                path(&garbage),
                "--tls-key".to_owned(),
                path(&garbage),
            ],
            "no certificate",
        ),
        (vec!["--users".to_owned(), path(&bad_users)], "line 1"),
        (vec!["--users".to_owned(), path(&missing)], "missing.pem"),
    ] {
        let mut all = vec!["serve", s.path(), "--listen", "127.0.0.1:0"];
        all.extend(args.iter().map(String::as_str));
        let o = streamlog(&all);
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn serve_in_cluster_mode_with_users_needs_a_cluster_secret_exit_2() {
    let s = TestStore::new();
    let files = s.dir.parent().unwrap().to_path_buf();
    let hash = streamlog::server::hash_password("pw").unwrap();
    let users = files.join("users");
    std::fs::write(&users, format!("ops:{hash}\n")).unwrap();
    let short = files.join("short-secret");
    std::fs::write(&short, "tooshort\n").unwrap();
    let spaced = files.join("spaced-secret");
    std::fs::write(&spaced, "0123456789 abcdef0123\n").unwrap();
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    let node = ["--node-id", "1", "--peer", "1=127.0.0.1:1"].map(str::to_owned);
    let with_node = |more: &[String]| node.iter().chain(more).cloned().collect::<Vec<_>>();
    for (args, needle) in [
        (
            with_node(&["--users".to_owned(), path(&users)]),
            "--cluster-secret-file",
        ),
        (
            with_node(&[
                "--users".to_owned(),
                path(&users),
                "--cluster-secret-file".to_owned(),
                path(&short),
            ]),
            "16 to 1024",
        ),
        (
            with_node(&["--cluster-secret-file".to_owned(), path(&spaced)]),
            "visible ASCII",
        ),
        (
            with_node(&[
                "--cluster-secret-file".to_owned(),
                path(&files.join("none")),
            ]),
            "cannot read",
        ),
        (
            vec!["--cluster-secret-file".to_owned(), path(&short)],
            "--node-id",
        ),
        (
            vec!["--durability".to_owned(), "fast".to_owned()],
            "expected sync, buffered, periodic, or periodic:DURATION with a unit ms, s, m or h",
        ),
        (
            vec!["--durability".to_owned(), "periodic:0ms".to_owned()],
            "1 ms to 1 hour",
        ),
        (
            [
                "--durability",
                "buffered",
                "--node-id",
                "1",
                "--peer",
                "1=127.0.0.1:1",
            ]
            .map(str::to_owned)
            .to_vec(),
            "cannot be used with",
        ),
    ] {
        let mut all = vec!["serve", s.path()];
        all.extend(args.iter().map(String::as_str));
        let o = streamlog(&all);
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn serve_refuses_tls_ca_without_a_tls_cluster_node_or_with_a_bad_file_exit_2() {
    let s = TestStore::new();
    let files = s.dir.parent().unwrap().to_path_buf();
    let garbage = files.join("garbage.pem");
    std::fs::write(&garbage, "not PEM\n").unwrap();
    let empty = files.join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    let node = ["--node-id", "1", "--peer", "1=127.0.0.1:1"].map(str::to_owned);
    let with_node = |more: &[String]| node.iter().chain(more).cloned().collect::<Vec<_>>();
    for (args, needle) in [
        // Without --tls-cert: the node serves plain HTTP/2, so its peers do too.
        (
            with_node(&["--tls-ca".to_owned(), path(&garbage)]),
            "--tls-ca needs --tls-cert",
        ),
        // Without --node-id: nothing to reach.
        (
            vec!["--tls-ca".to_owned(), path(&garbage)],
            "--tls-ca is for a node of a cluster",
        ),
        (
            vec![
                "cluster",
                "status",
                "--tls-ca",
                &path(&files.join("none.pem")),
                "127.0.0.1:1",
            ]
            .into_iter()
            .map(str::to_owned)
            .collect(),
            "cannot read the TLS CA file",
        ),
        (
            vec![
                "cluster",
                "status",
                "--tls-ca",
                &path(&empty),
                "127.0.0.1:1",
            ]
            .into_iter()
            .map(str::to_owned)
            .collect(),
            "no certificate",
        ),
    ] {
        let all: Vec<&str> = if args[0] == "cluster" {
            args.iter().map(String::as_str).collect()
        } else {
            let mut all = vec!["serve", s.path()];
            all.extend(args.iter().map(String::as_str));
            all
        };
        let o = streamlog(&all);
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn a_scavenge_killed_with_sigkill_loses_nothing_live_and_the_next_one_finishes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let d = dir.to_str().unwrap();
    {
        let store = streamlog::Store::open_with(
            &dir,
            streamlog::Options::default().with_segment_size_bytes(64 * 1024),
        )
        .unwrap();
        for i in 0..4000u64 {
            let s = if i % 2 == 0 { "keep" } else { "drop" };
            store
                .append(
                    s,
                    streamlog::ExpectedVersion::Any,
                    [streamlog::NewEvent::new("E", format!("{i:0>100}"))],
                )
                .unwrap();
        }
        store
            .tombstone_stream("drop", streamlog::ExpectedVersion::Any)
            .unwrap();
        store.close().unwrap();
    }
    let before = String::from_utf8(streamlog(&["read", d, "keep"]).stdout).unwrap();
    for delay_ms in [50u64, 150, 400] {
        // Paced to about 1 MB/s, so that the kill lands in the middle of it.
        let mut child = Command::new(env!("CARGO_BIN_EXE_streamlog"))
            .args(["scavenge", d, "--max-bytes-per-s", "1M"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(
            String::from_utf8(streamlog(&["read", d, "keep"]).stdout).unwrap(),
            before,
            "killed after {delay_ms} ms"
        );
        let o = streamlog(&["verify", d]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
    let o = streamlog(&["scavenge", d]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        String::from_utf8(streamlog(&["read", d, "keep"]).stdout).unwrap(),
        before
    );
    let o = streamlog(&["verify", d]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let info = String::from_utf8(streamlog(&["info", d]).stdout).unwrap();
    assert!(info.contains("\"reclaimable_events\":0"), "{info}");
}

#[test]
fn a_cluster_nodes_directory_is_refused_and_its_store_named() {
    let tmp = tempfile::tempdir().unwrap();
    let node = tmp.path().join("n1");
    std::fs::create_dir_all(node.join("raft")).unwrap();
    let store = node.join("sm").join("store-00000000000000000001");
    std::fs::create_dir_all(store.join("segments")).unwrap();
    let n = node.to_str().unwrap();
    for args in [
        vec!["append", n, "s", "--data", "x"],
        vec!["info", n],
        vec!["read-all", n],
        vec!["snapshot", "save", n, "s", "0", "--data", "x"],
        vec!["serve", n, "--listen", "127.0.0.1:0"],
    ] {
        let o = streamlog(&args);
        assert_eq!(code(&o), 1, "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("cluster node"),
            "{args:?}: {}",
            stderr(&o)
        );
        assert!(
            stderr(&o).contains(store.to_str().unwrap()),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    // Nothing was created beside the node's own directories.
    let mut names: Vec<_> = std::fs::read_dir(&node)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["raft", "sm"]);
}

/// A cluster node's directory belongs to one node: a plain store is not made into one,
/// another `--node-id` is refused, a second process on it is refused before it opens
/// anything (exit 4), and the node's store takes no write from the other commands (the
/// read-only ones work there).
#[test]
fn a_node_directory_belongs_to_its_node_and_its_store_takes_no_writes() {
    let s = TestStore::new();
    s.append("s", "T", "x");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let peer = format!("1=127.0.0.1:{port}");
    let o = streamlog(&["serve", s.path(), "--node-id", "1", "--peer", &peer]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("is a store, not a cluster node's directory"),
        "{}",
        stderr(&o)
    );
    assert_eq!(s.read("s").len(), 1, "the store is left as it was");

    let node = s.dir.parent().unwrap().join("node");
    let node_path = node.to_str().unwrap();
    let mut running = Command::new(env!("CARGO_BIN_EXE_streamlog"))
        .args(["serve", node_path, "--node-id", "1", "--peer", &peer])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let store_of = |node: &Path| {
        std::fs::read_dir(node.join("sm"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.join("segments").is_dir())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while store_of(&node).is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let store = store_of(&node).expect("the node made its store");
    let second = streamlog(&["serve", node_path, "--node-id", "1", "--peer", &peer]);
    assert_eq!(code(&second), 4, "{}", stderr(&second));
    running.kill().unwrap();
    running.wait().unwrap();

    let other = format!("2=127.0.0.1:{port}");
    let o = streamlog(&["serve", node_path, "--node-id", "2", "--peer", &other]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("directory of node 1"), "{}", stderr(&o));

    let store = store.to_str().unwrap();
    for args in [
        vec!["append", store, "s", "--data", "x"],
        vec!["delete", store, "s"],
        vec!["scavenge", store],
        vec!["snapshot", "save", store, "s", "0", "--data", "x"],
        vec!["serve", store],
    ] {
        let o = streamlog(&args);
        assert_eq!(code(&o), 1, "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("the store of the cluster node"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    // Through `..` from inside the node's directory, too.
    let o = Command::new(env!("CARGO_BIN_EXE_streamlog"))
        .current_dir(node.join("raft"))
        .args([
            "append",
            &format!(
                "../sm/{}",
                Path::new(store).file_name().unwrap().to_str().unwrap()
            ),
            "s",
            "--data",
            "x",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let o = streamlog(&["info", store]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // The index is derived data: a stopped node's store may be reindexed.
    let o = streamlog(&["reindex", store]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

#[test]
fn serve_refuses_a_message_limit_below_what_the_transport_honours_exit_2() {
    let s = TestStore::new();
    for bytes in ["0", "1000", "65535"] {
        let o = streamlog(&["serve", s.path(), "--max-message-bytes", bytes]);
        assert_eq!(code(&o), 2, "{bytes}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("at least 65536"),
            "{bytes}: {}",
            stderr(&o)
        );
    }
    // `--listen` takes a host name as `--peer` does; one that resolves to nothing is a
    // usage error.
    let o = streamlog(&["serve", s.path(), "--listen", "no-such-host.invalid:2113"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("--listen"), "{}", stderr(&o));
}
