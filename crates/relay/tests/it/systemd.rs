//! The real binary under a stand-in service manager: the `sd_notify` datagrams a `Type=notify`
//! unit with `WatchdogSec` receives (`READY=1`, `WATCHDOG=1`, `STOPPING=1`), read from a unix
//! datagram socket the test binds where `NOTIFY_SOCKET` points, as systemd does.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::binary::{Server, write_config};

/// What the relay has sent to `socket` within `limit`, until `until` says enough.
fn collect(
    socket: &UnixDatagram,
    limit: Duration,
    until: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !until(&got) && Instant::now() < deadline {
        socket
            .set_read_timeout(Some(
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
            ))
            .unwrap();
        if let Ok(n) = socket.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    got
}

#[test]
fn the_relay_tells_the_service_manager_it_is_ready_alive_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let config = write_config(dir.path(), "http://127.0.0.1:9/hook", "");
    // A watchdog of 400 ms: a ping every 200 ms while the claim loop (polling every 50 ms)
    // goes round.
    let mut server = Server::start_with_env(
        &config,
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let first = collect(&socket, Duration::from_secs(10), |got| !got.is_empty());
    let ready = first.first().expect("no READY=1 within 10 s");
    let listen = server.base.trim_start_matches("http://");
    assert_eq!(ready, &format!("READY=1\nSTATUS=serving on {listen}\n"));
    let pings = collect(&socket, Duration::from_secs(10), |got| got.len() >= 3);
    assert_eq!(pings, vec!["WATCHDOG=1\n"; 3]);
    server.signal("-TERM");
    let stopping = collect(&socket, Duration::from_secs(10), |got| {
        got.iter().any(|m| m.starts_with("STOPPING=1"))
    });
    assert!(
        stopping.contains(&"STOPPING=1\nSTATUS=draining deliveries\n".to_owned()),
        "{stopping:?}"
    );
    assert_eq!(server.wait_exit(Duration::from_secs(20)), Some(0));
}

#[test]
fn outside_systemd_the_relay_sends_nothing_and_runs_as_usual() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "http://127.0.0.1:9/hook", "");
    // WATCHDOG_USEC without NOTIFY_SOCKET: nowhere to send, nothing fails.
    let mut server = Server::start_with_env(&config, &[("WATCHDOG_USEC", "200000")]);
    std::thread::sleep(Duration::from_millis(300));
    server.signal("-TERM");
    assert_eq!(server.wait_exit(Duration::from_secs(20)), Some(0));
    assert!(
        !server.stderr.lock().unwrap().contains("cannot notify"),
        "{}",
        server.stderr.lock().unwrap()
    );
}
