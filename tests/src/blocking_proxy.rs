//! A loopback HTTP proxy that forwards nothing: every request Chromium sends
//! through it (`--proxy-server=http://127.0.0.1:<port>`) is recorded and
//! refused with 403. Chromium never proxies loopback, so the add-in host
//! (`127.0.0.1:<port>`) stays reachable while every other host is blocked
//! and counted: the air-gapped e2e tests assert the count.

use std::sync::{Arc, Mutex};

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The running proxy; stops when dropped.
pub struct BlockingProxy {
    /// Port on 127.0.0.1.
    pub port: u16,
    seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl BlockingProxy {
    /// Listens on a free loopback port.
    pub async fn start() -> Result<BlockingProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let record = record.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 2048];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16384 {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let line = String::from_utf8_lossy(&head)
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_string();
                    if let Ok(mut r) = record.lock() {
                        r.push(line);
                    }
                    let _ = socket
                        .write_all(
                            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        )
                        .await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Ok(BlockingProxy { port, seen, task })
    }

    /// The Chromium switches that send every non-loopback request here.
    pub fn chromium_args(&self) -> Vec<String> {
        vec![format!("--proxy-server=http://127.0.0.1:{}", self.port)]
    }

    /// Request lines blocked so far (`CONNECT host:443 HTTP/1.1`, `GET http://…`).
    pub fn blocked(&self) -> Vec<String> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Forgets what was recorded.
    pub fn clear(&self) {
        if let Ok(mut s) = self.seen.lock() {
            s.clear();
        }
    }
}

impl Drop for BlockingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
