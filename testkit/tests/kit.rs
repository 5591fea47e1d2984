//! The kit's own pieces, without the Vexil binaries or any service.

use std::process::Command;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vexil_testkit::echo::Echo;
use vexil_testkit::{Process, TempDir, free_tcp_port, free_udp_port, http_status};

/// One raw HTTP/1.1 request on its own connection; the whole response.
async fn raw_get(addr: std::net::SocketAddr, head: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[test]
fn a_temp_dir_is_removed_on_drop_unless_kept() {
    let dir = TempDir::new("vexil-kit");
    let sub = dir.sub("a/b");
    std::fs::write(sub.join("f"), "x").unwrap();
    let path = dir.to_path_buf();
    assert!(
        path.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("vexil-kit-")
    );
    drop(dir);
    assert!(!path.exists());
    let kept = TempDir::new("vexil-kit").keep();
    assert!(kept.is_dir());
    std::fs::remove_dir_all(kept).unwrap();
}

#[test]
fn free_ports_can_be_bound() {
    std::net::TcpListener::bind(("127.0.0.1", free_tcp_port())).unwrap();
    std::net::UdpSocket::bind(("127.0.0.1", free_udp_port())).unwrap();
}

#[tokio::test]
async fn the_echo_answers_with_the_request_it_received() {
    let echo = Echo::new().start().await;
    let response = raw_get(
        echo.addr(),
        "GET /path?q=1 HTTP/1.1\r\nHost: x\r\nx-a: 1\r\nx-a: 2\r\nConnection: close\r\n\r\n",
    )
    .await;
    let body: serde_json::Value =
        serde_json::from_str(response.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(body["method"], "GET");
    assert_eq!(body["uri"], "/path?q=1");
    assert_eq!(body["headers"]["x-a"], "1, 2");
    assert_eq!(http_status(echo.addr(), "/").await, Some(200));

    let flags = Echo::new()
        .header_as_body("vexil-flags")
        .slow("/slow", Duration::from_millis(10))
        .start()
        .await;
    let response = raw_get(
        flags.addr(),
        "GET /slow HTTP/1.1\r\nHost: x\r\nvexil-flags: a=?1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.ends_with("\r\n\r\na=?1"), "{response}");
    assert_eq!(
        flags
            .slow_arrivals()
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    let addr = flags.addr();
    drop(flags);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(http_status(addr, "/").await, None, "stopped on drop");
}

fn sh(script: &str) -> Process {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script]);
    Process::spawn("sh", cmd)
}

#[test]
fn a_process_keeps_each_stream_and_both_in_order() {
    let mut p = sh("echo one; echo two >&2; sleep 0.1; echo three; exit 3");
    let status = p.wait(10);
    assert_eq!(status.code(), Some(3));
    assert_eq!(p.stdout(), "one\nthree\n");
    assert_eq!(p.stderr(), "two\n");
    assert_eq!(p.output().lines().last(), Some("three"));
    assert_eq!(p.tail(1), "[2 earlier lines left out]\nthree\n");
}

#[test]
fn waiting_on_a_process_that_exits_says_so_with_its_output() {
    let mut p = sh("echo the-reason; exit 1");
    let failure = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        p.wait_until_blocking(Duration::from_secs(10), "ready", |_| None::<()>)
    }))
    .unwrap_err();
    let message = failure.downcast_ref::<String>().unwrap();
    assert!(message.contains("exited"), "{message}");
    assert!(message.contains("the-reason"), "{message}");
}

#[test]
fn terminate_and_drop_end_the_process() {
    let mut p = sh("trap 'exit 0' TERM; while true; do sleep 0.05; done");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(p.terminate(10), Some(0));
    let p = sh("sleep 30");
    let pid = p.pid();
    drop(p);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}
