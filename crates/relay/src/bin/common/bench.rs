//! What the bench binaries share: the `ferrule serve` they measure.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running `ferrule serve`, killed when dropped.
pub(crate) struct Relay {
    pub(crate) child: Child,
    /// `http://host:port`, from its banner.
    pub(crate) base: String,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Relay {
    /// Starts the `ferrule` binary next to this one with `config` and waits for its banner;
    /// the rest of its output is read and dropped.
    pub(crate) fn start(config: &Path) -> Relay {
        let exe = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("ferrule")))
            .unwrap_or_else(|| "ferrule".into());
        let mut child = Command::new(exe)
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting ferrule (build it with --release first): {e}"));
        let mut out = BufReader::new(child.stdout.take().unwrap_or_else(|| panic!("no stdout")));
        let mut line = String::new();
        let base = loop {
            line.clear();
            if out.read_line(&mut line).unwrap_or(0) == 0 {
                panic!("ferrule serve exited");
            }
            if let Some(rest) = line.trim().split("listening on ").nth(1) {
                break rest.to_owned();
            }
        };
        std::thread::spawn(move || {
            let mut rest = String::new();
            while out.read_line(&mut rest).unwrap_or(0) > 0 {
                rest.clear();
            }
        });
        Relay { child, base }
    }
}
