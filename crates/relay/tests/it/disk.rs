//! A full disk under the SQLite store: submissions answer 503 `storage_full` with a
//! `Retry-After`, `/readyz` and `/status` say why, deliveries whose outcome could not be
//! written stay leased, and everything acked is delivered once space comes back.
//!
//! The store lives on a small file system the test fills: a tmpfs, else a loop-mounted ext4
//! file; without either (not root, no `mount`) the test says so and passes without running.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ferrule::config::Secret;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::receiver::{Receiver, Reply};
use crate::support::{self, TestRelay};

/// A small file system mounted on a directory of its own; unmounted on drop.
struct SmallFs {
    dir: PathBuf,
    /// The backing file of a loop mount.
    image: Option<PathBuf>,
}

impl SmallFs {
    /// Mounts `size_mib` MiB under `parent`: a tmpfs, else a loop-mounted ext4 file. `Err`
    /// says why neither worked.
    fn mount(parent: &Path, size_mib: u64) -> Result<SmallFs, String> {
        let dir = parent.join("fs");
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let tmpfs = run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(&dir));
        let Err(tmpfs) = tmpfs else {
            return Ok(SmallFs { dir, image: None });
        };
        let image = parent.join("fs.img");
        let looped = run(Command::new("truncate")
            .args(["-s", &format!("{size_mib}M")])
            .arg(&image))
        .and_then(|()| run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image)))
        .and_then(|()| {
            run(Command::new("mount")
                .args(["-o", "loop"])
                .arg(&image)
                .arg(&dir))
        });
        match looped {
            Ok(()) => Ok(SmallFs {
                dir,
                image: Some(image),
            }),
            Err(looped) => Err(format!("tmpfs: {tmpfs}; loop-mounted ext4: {looped}")),
        }
    }

    fn filler(&self) -> PathBuf {
        self.dir.join("filler")
    }

    /// Writes a file until the file system is full; returns the bytes written.
    fn fill(&self) -> u64 {
        let mut file = std::fs::File::create(self.filler()).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        let mut written = 0;
        // Then smaller writes, for the last partial chunk.
        for size in [chunk.len(), 4096, 512] {
            while let Ok(n @ 1..) = file.write(&chunk[..size]) {
                written += n as u64;
            }
        }
        let _ = file.sync_all();
        written
    }

    /// Removes the filler.
    fn free(&self) {
        std::fs::remove_file(self.filler()).unwrap();
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        if let Some(image) = &self.image {
            let _ = std::fs::remove_file(image);
        }
    }
}

/// Says on stderr (shown by `cargo test -- --nocapture` and in a failing run) why the test
/// did not run.
#[allow(clippy::print_stderr)]
fn skipped(why: &str) {
    eprintln!("SKIPPED: no small file system to fill ({why})");
}

fn run(command: &mut Command) -> Result<(), String> {
    let out = command.output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

async fn submit_keyed(relay: &TestRelay, n: u32) -> (StatusCode, serde_json::Value, String) {
    let response = relay
        .http
        .post(format!("{}/v1/messages", relay.base))
        .bearer_auth(support::TOKEN)
        .header("idempotency-key", format!("disk-{n}"))
        .json(&json!({"destination": "hook", "payload": {"n": n}}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, response.json().await.unwrap(), retry_after)
}

/// The value of the Prometheus sample `name` (with its labels, as printed), or 0.
async fn metric(relay: &TestRelay, name: &str) -> f64 {
    let (status, text) = relay.call(Method::GET, "/metrics", None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    support::metric(text.as_str().unwrap(), name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_answers_503_with_retry_after_and_loses_nothing_acked() {
    let dir = tempfile::tempdir().unwrap();
    let fs = match SmallFs::mount(dir.path(), 16) {
        Ok(fs) => fs,
        Err(why) => return skipped(&why),
    };
    let receiver = Receiver::start().await;
    // The first deliveries are answered only once the disk is full, so their outcome cannot
    // be written.
    let (open_gate, gate) = tokio::sync::watch::channel(false);
    let in_flight = 5;
    receiver.script((0..in_flight).map(|_| Reply::Held(gate.clone(), 200)));
    let mut config = support::config_in(&dir);
    config.store.url = Secret::new(format!("sqlite://{}", fs.dir.join("ferrule.db").display()));
    // Longer than the test: a message delivered twice would show the outcome was not written
    // once space came back but given up with the lease.
    config.dispatcher.lease = Duration::from_secs(30);
    config.destinations = vec![support::webhook("hook", &receiver.url)];
    let relay = support::start_in(dir, config, ferrule_policy::clock::system()).await;

    let mut acked = Vec::new();
    for n in 0..in_flight {
        let (status, body, _) = submit_keyed(&relay, n).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        acked.push(body["id"].as_str().unwrap().to_owned());
    }
    receiver
        .wait_for_hits(in_flight as usize, Duration::from_secs(10))
        .await;
    let refused_before = metric(
        &relay,
        "ferrule_submits_refused_total{reason=\"storage_full\"}",
    )
    .await;

    let filled = fs.fill();
    assert!(filled > 0);
    // The SQLite WAL may still hold room for a few small writes: submit until one is refused.
    let mut refused = None;
    for n in in_flight..in_flight + 200 {
        match submit_keyed(&relay, n).await {
            (StatusCode::ACCEPTED, body, _) => acked.push(body["id"].as_str().unwrap().to_owned()),
            answer => {
                refused = Some((n, answer));
                break;
            }
        }
    }
    let (refused_n, (status, body, retry_after)) =
        refused.expect("a submission is refused on a full disk");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "storage_full", "{body}");
    assert_eq!(retry_after, "10");
    // The same key again: still refused, nothing was stored under it.
    let (status, body, _) = submit_keyed(&relay, refused_n).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    // A key that was acked before answers its message (a read), and does not end the episode.
    let (status, body, _) = submit_keyed(&relay, 0).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id"], acked[0].as_str());

    let (status, body) = relay.call(Method::GET, "/readyz", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "storage_full", "{body}");
    let (status, body) = relay.call(Method::GET, "/status", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "unhealthy", "a full disk: {body}");
    let store = &body["dependencies"]["store"];
    assert_eq!(store["status"], "unhealthy", "{store}");
    assert!(
        store["storage_full"]["refused_writes"].as_u64().unwrap() >= 2,
        "{store}"
    );
    let message = store["last_error"]["message"].as_str().unwrap();
    assert!(message.starts_with("storage full: "), "{message}");
    let refused_after = metric(
        &relay,
        "ferrule_submits_refused_total{reason=\"storage_full\"}",
    )
    .await;
    assert!(
        refused_after >= refused_before + 2.0,
        "{refused_before} -> {refused_after}"
    );
    assert_eq!(metric(&relay, "ferrule_store_storage_full").await, 1.0);

    // The held deliveries are answered now; their outcome cannot be written, and that must
    // not dead-letter them or lose them: they stay `delivering` while the relay tries again.
    open_gate.send(true).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for id in &acked[..in_flight as usize] {
        assert_eq!(relay.message(id).await["status"], "delivering");
    }

    fs.free();
    // `/readyz` notices by itself, with a write of its own.
    let (status, body) = relay.call(Method::GET, "/readyz", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = relay.call(Method::GET, "/status", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body["dependencies"]["store"].get("storage_full").is_none(),
        "{body}"
    );
    assert_eq!(metric(&relay, "ferrule_store_storage_full").await, 0.0);
    let (status, body, _) = submit_keyed(&relay, refused_n).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    acked.push(body["id"].as_str().unwrap().to_owned());

    for id in &acked {
        relay
            .wait_for_status(id, "delivered", Duration::from_secs(10))
            .await;
    }
    // Within the wait above, far shorter than the lease: the outcomes were written when space
    // came back, and nothing was attempted twice.
    let mut received: Vec<String> = receiver
        .hits()
        .iter()
        .map(|h| h.header("webhook-id"))
        .collect();
    received.sort();
    let mut expected = acked.clone();
    expected.sort();
    assert_eq!(
        received, expected,
        "every acked message delivered exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_logged_once_when_it_starts_and_once_when_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let fs = match SmallFs::mount(dir.path(), 16) {
        Ok(fs) => fs,
        Err(why) => return skipped(&why),
    };
    let receiver = Receiver::start().await;
    let config = crate::binary::write_config(&fs.dir, &receiver.url, "");
    let server = crate::binary::Server::start(&config);
    let (status, body) = crate::binary::submit(&server.base, json!({"n": 0})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    fs.fill();
    let mut refused = 0;
    for n in 1..=200 {
        let (status, body) = crate::binary::submit(&server.base, json!({"n": n})).await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(body["error"]["code"], "storage_full", "{body}");
            refused += 1;
            if refused == 20 {
                break;
            }
        }
    }
    assert_eq!(refused, 20, "the full disk refused submissions");
    fs.free();
    let (status, body) = crate::binary::submit(&server.base, json!({"n": 201})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    // stderr is read on a thread of its own: wait for the end of the episode to reach it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let log = loop {
        let log = server.stderr.lock().unwrap().clone();
        if log.contains("its disk is no longer full") || std::time::Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(count("the store's disk is full"), 1, "{log}");
    assert_eq!(count("its disk is no longer full"), 1, "{log}");
    assert_eq!(count("ERROR"), 1, "{log}");
}
