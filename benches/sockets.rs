//! Memory per WebSocket: the server's resident memory with idle sockets open,
//! and with sockets each holding half of a 1 MiB frame, before and after the
//! server closes them for taking too long.
//!
//! `cargo bench --bench sockets` — or `cargo bench --bench sockets -- IDLE PARTIAL`
//! (defaults 2000 and 200). Runs the release binary as its own process so
//! its memory is measured alone; `SPOOL_BIN=path` measures another build
//! (an older one, for a comparison in the same conditions).

use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let idle = args.first().copied().unwrap_or(2000);
    let partial = args.get(1).copied().unwrap_or(200);
    let _ = spool::server::raise_fd_limit();
    let dir = tempfile::tempdir().unwrap();
    let other = std::env::var("SPOOL_BIN").ok();
    // An older build may not know the flag (nor limit creation).
    let limits: &[&str] = match other {
        Some(_) => &[],
        None => &["--max-sessions-per-minute", "0"],
    };
    let binary = other.unwrap_or_else(|| env!("CARGO_BIN_EXE_spool").into());
    let mut server = tokio::process::Command::new(binary)
        .args(["--listen", "127.0.0.1:0"])
        .args(limits)
        .arg("--data-dir")
        .arg(dir.path())
        .env("RUST_LOG", "warn,spool::startup=info")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the spool binary");
    let base = listening_address(&mut server).await;
    let pid = server.id().unwrap();
    let http = reqwest::Client::new();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let at_start = rss_kib(pid);

    let mut sockets = Vec::with_capacity(idle);
    for _ in 0..idle {
        sockets.push(open_ready_socket(&http, &base).await);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let with_idle = rss_kib(pid);
    let per_socket = (with_idle - at_start) as f64 / idle as f64;

    let mut stalled = Vec::with_capacity(partial);
    for _ in 0..partial {
        let mut socket = open_ready_socket(&http, &base).await;
        send_half_of_a_mib_frame(&mut socket).await;
        stalled.push(socket);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let with_partial = rss_kib(pid);
    let started = Instant::now();
    let mut closed = 0;
    for socket in &mut stalled {
        if tokio::time::timeout(Duration::from_secs(60), wait_closed(socket))
            .await
            .is_ok()
        {
            closed += 1;
        }
    }
    let closed_after = started.elapsed() + Duration::from_secs(2);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_partial = rss_kib(pid);

    println!("| measure | value |");
    println!("|---|---|");
    println!("| server RSS at start | {} KiB |", at_start);
    println!(
        "| with {idle} idle sockets | {} KiB ({per_socket:.1} KiB per socket) |",
        with_idle
    );
    println!(
        "| + {partial} sockets holding 512 KiB of a 1 MiB frame | {} KiB ({:.0} KiB per socket) |",
        with_partial,
        (with_partial - with_idle) as f64 / partial as f64
    );
    println!(
        "| those closed by the server | {closed}/{partial}, all within {:.1} s of the frame |",
        closed_after.as_secs_f64()
    );
    println!("| RSS after they closed | {} KiB |", after_partial);
    drop(sockets);
    let _ = server.kill().await;
}

async fn listening_address(server: &mut tokio::process::Child) -> String {
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    while let Some(line) = lines.next_line().await.unwrap() {
        if let Some(at) = line.find("address=http://") {
            let address = line[at + "address=".len()..]
                .split_whitespace()
                .next()
                .unwrap()
                .to_owned();
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return address;
        }
    }
    panic!("the server exited before listening");
}

async fn open_ready_socket(http: &reqwest::Client, base: &str) -> Socket {
    let created: Value = http
        .post(format!("{base}/v1/sessions"))
        .json(&serde_json::json!({"mime_type": "audio/webm;codecs=opus"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = format!(
        "{}?token={}",
        created["ws_url"].as_str().unwrap(),
        created["token"].as_str().unwrap()
    );
    let (mut socket, _) = connect_async(url).await.expect("WebSocket upgrade");
    match socket.next().await {
        Some(Ok(Message::Text(text))) if text.contains("\"ready\"") => socket,
        other => panic!("expected ready, got {other:?}"),
    }
}

/// Writes a masked binary frame header announcing 1 MiB and half its payload.
async fn send_half_of_a_mib_frame(socket: &mut Socket) {
    use tokio::io::AsyncWriteExt;
    let mut frame = vec![0x82, 0x80 | 127];
    frame.extend_from_slice(&(1024u64 * 1024).to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend(std::iter::repeat_n(0u8, 512 * 1024));
    let MaybeTlsStream::Plain(tcp) = socket.get_mut() else {
        unreachable!()
    };
    tcp.write_all(&frame).await.unwrap();
}

async fn wait_closed(socket: &mut Socket) {
    while let Some(Ok(message)) = socket.next().await {
        if let Message::Close(_) = message {
            let _ = socket.close(None).await;
            return;
        }
    }
}

fn rss_kib(pid: u32) -> i64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}
