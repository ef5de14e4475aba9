//! `streamlog serve` driven by a second official client in another language: KurrentDB's
//! Python client (`kurrentdbclient`, pinned in `server-tests/python/requirements.txt`).
//! The test installs it into a virtual environment under the target directory (once;
//! again when the requirements change) and runs `server-tests/python/client_check.py`
//! against a server in this process.
//!
//! When the package cannot be installed, the test fails, saying why: a test that passes
//! without running proves nothing. On a machine without a package index,
//! `STREAMLOG_SKIP_PYTHON_CLIENT=1` lets it pass instead, saying so loudly.

use std::path::{Path, PathBuf};
use std::time::Duration;

use streamlog::Store;
use streamlog_server_tests::serve_in_process;
use tokio::process::Command;

/// How long installing the client may take (a cold pip cache downloads grpcio).
const INSTALL_PATIENCE: Duration = Duration::from_secs(600);
/// How long the checks may take.
const RUN_PATIENCE: Duration = Duration::from_secs(180);

fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python")
}

/// Why the client could not be installed: a failure, unless skipping is asked for.
fn cannot_install(why: &str) {
    let why = format!("cannot install kurrentdbclient: {why}");
    if std::env::var_os("STREAMLOG_SKIP_PYTHON_CLIENT").is_some_and(|v| v == "1") {
        eprintln!(
            "\n!!!!!!!!\n!!!! SKIPPED (STREAMLOG_SKIP_PYTHON_CLIENT=1): the KurrentDB Python client test: {why}\n!!!!!!!!\n"
        );
        return;
    }
    panic!(
        "the KurrentDB Python client test {why} (set STREAMLOG_SKIP_PYTHON_CLIENT=1 on a machine without a package index)"
    );
}

/// The virtual environment's python with the client installed, or `None` (said why).
async fn client_python() -> Option<PathBuf> {
    let requirements_path = python_dir().join("requirements.txt");
    let requirements = std::fs::read_to_string(&requirements_path).expect("read requirements.txt");
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kurrentdbclient-venv");
    let python = venv.join("bin").join("python");
    let stamp = venv.join("installed-requirements.txt");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == requirements) && python.exists() {
        return Some(python);
    }
    let _ = std::fs::remove_dir_all(&venv);
    let interpreter = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let made = Command::new(&interpreter)
        .args(["-m", "venv"])
        .arg(&venv)
        .kill_on_drop(true)
        .output()
        .await;
    match made {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            cannot_install(&format!(
                "`{interpreter} -m venv` failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
            return None;
        }
        Err(e) => {
            cannot_install(&format!(
                "no `{interpreter}` to make a virtual environment: {e}"
            ));
            return None;
        }
    }
    eprintln!(
        "installing the KurrentDB Python client into {}",
        venv.display()
    );
    let install = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "-q",
            "-r",
        ])
        .arg(&requirements_path)
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(INSTALL_PATIENCE, install).await {
        Ok(Ok(out)) if out.status.success() => {}
        Ok(Ok(out)) => {
            cannot_install(&format!(
                "pip failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
            return None;
        }
        Ok(Err(e)) => {
            cannot_install(&format!("cannot run pip: {e}"));
            return None;
        }
        Err(_) => {
            cannot_install("pip took longer than 10 minutes");
            return None;
        }
    }
    std::fs::write(&stamp, requirements).expect("write the install stamp");
    Some(python)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_appends_reads_subscribes_and_deletes() {
    let Some(python) = client_python().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("store")).expect("open");
    let (addr, stop, task) = serve_in_process(&store).await;

    let run = Command::new(&python)
        .arg(python_dir().join("client_check.py"))
        .arg(addr.to_string())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(RUN_PATIENCE, run)
        .await
        .expect("the Python checks finish in time")
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the Python client's checks failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("checks passed"), "{stdout}\n{stderr}");
    eprint!("{stdout}");

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the server stops in time")
        .expect("the server task")
        .expect("the server ends cleanly");
    store.close().expect("close the store");
}
