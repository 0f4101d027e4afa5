//! A PostgreSQL cluster of one test's own, in a temporary directory on a port of its own, that
//! the test may stop and start: the machine's shared server is never restarted, since other
//! tests run against it at the same time.
//!
//! The server binaries are those of `pg_config --bindir`, else the newest
//! `/usr/lib/postgresql/<version>/bin`; `FERRULE_TEST_PG_BINDIR` overrides both. PostgreSQL
//! refuses to run as root, so as root the cluster belongs to the `postgres` user and its
//! commands run through `runuser`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A running (or stopped) private cluster; stopped and removed when dropped.
pub(crate) struct PrivatePostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivatePostgres {
    /// Initialises a cluster (trust authentication, no fsync) and starts it.
    pub(crate) fn start() -> PrivatePostgres {
        let bin = bindir();
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            run(
                "chown",
                Command::new("chown").arg("postgres").arg(dir.path()),
            );
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = PrivatePostgres { bin, dir, port };
        let data = cluster.data();
        let mut initdb = cluster.command("initdb");
        initdb.arg("-D").arg(&data);
        initdb.args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"]);
        run("initdb", &mut initdb);
        cluster.up();
        cluster
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the stopped cluster on the same port, and waits until it accepts connections.
    pub(crate) fn up(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let mut start = self.command("pg_ctl");
        start.arg("-D").arg(self.data()).arg("-l");
        start.arg(self.dir.path().join("server.log"));
        start.args(["-w", "-o", &options, "start"]);
        run("pg_ctl start", &mut start);
    }

    /// Stops the cluster (`-m fast`: open connections are cut, as in a restart).
    pub(crate) fn down(&self) {
        let mut stop = self.command("pg_ctl");
        stop.arg("-D")
            .arg(self.data())
            .args(["-w", "-m", "fast", "stop"]);
        run("pg_ctl stop", &mut stop);
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `tool` of the server's binaries, run as `postgres` when this process is root.
    fn command(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

/// Whether this process runs as root (`/proc/self` belongs to its effective user).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Runs `command`, panicking with its output if it fails.
fn run(what: &str, command: &mut Command) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Where the server's binaries are (see the module's doc).
fn bindir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FERRULE_TEST_PG_BINDIR") {
        return dir.into();
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return dir;
        }
    }
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .max_by_key(|bin| version_of(bin));
    newest.unwrap_or_else(|| {
        panic!(
            "no PostgreSQL server binaries (initdb, pg_ctl) found: install the server package \
             or set FERRULE_TEST_PG_BINDIR"
        )
    })
}

/// The major version in `/usr/lib/postgresql/<version>/bin`.
fn version_of(bin: &Path) -> u32 {
    bin.parent()
        .and_then(Path::file_name)
        .and_then(|v| v.to_str())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
