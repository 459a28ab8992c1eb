//! What the HTTP servers kept when they moved to warp: keep-alive, the 413 for a declared
//! oversized body before it is sent, and the drain at shutdown (a request in progress when
//! SIGTERM arrives is still answered, and applied).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

fn read_response(sock: &mut TcpStream) -> String {
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = sock.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&raw)
        );
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = header(head, "content-length").map_or(0, |v| v.parse().unwrap());
            if body.len() >= len {
                return text;
            }
        }
    }
}

#[test]
fn keep_alive_and_an_early_413() {
    let dir = TempDir::new("http-keepalive");
    let ip = "127.71.0.1";
    let a = Agent::start(&dir, ip, &config(ip, &[], 100, ""));
    let mut sock = TcpStream::connect(a.app()).unwrap();
    for i in 0..3 {
        let body = format!("{{\"value\": {i}}}");
        write!(
            sock,
            "PUT /k HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        assert!(read_response(&mut sock).starts_with("HTTP/1.1 204"));
    }
    write!(sock, "GET /k HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let answer = read_response(&mut sock);
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.contains("\"value\":2"),
        "{answer}"
    );

    // 17 MiB declared against the 16 MiB limit: refused before the body is sent.
    let mut sock = TcpStream::connect(a.app()).unwrap();
    write!(
        sock,
        "PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 17825792\r\n\r\n"
    )
    .unwrap();
    let answer = read_response(&mut sock);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("body larger than 16777216 bytes"),
        "{answer}"
    );
}

#[test]
fn a_request_in_progress_at_sigterm_is_still_answered() {
    let dir = TempDir::new("http-drain");
    let ip = "127.72.0.1";
    let mut a = Agent::start(&dir, ip, &config(ip, &[], 100, ""));
    let mut sock = TcpStream::connect(a.app()).unwrap();
    let body = br#"{"late": {"value": "arrived"}}"#;
    write!(
        sock,
        "PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    sock.write_all(&body[..10]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    a.signal("TERM");
    std::thread::sleep(Duration::from_millis(500));
    // The listener is closed: no new connection gets in.
    assert!(
        TcpStream::connect_timeout(&a.app().parse().unwrap(), Duration::from_millis(300)).is_err()
    );
    sock.write_all(&body[10..]).unwrap();
    let answer = read_response(&mut sock);
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    let started = Instant::now();
    let status = a.child.take().unwrap().wait().unwrap();
    assert!(status.success());
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(a.logs().contains("shutting down"), "{}", a.logs());
}
