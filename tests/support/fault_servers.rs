//! Servers for the faults an HTTP framework will not produce: resets, drips, bad TLS.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::*;

/// A raw TCP receiver for faults HTTP servers will not produce: each connection's request is
/// read, then `behave` gets the socket. Returns its address.
pub async fn raw_receiver<F, Fut>(behave: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let behave = Arc::new(behave);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let behave = behave.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut read = 0;
                // Read headers and (roughly) the body, so the sender is not stopped mid-write.
                while let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buf[read..]))
                        .await
                {
                    if n == 0 {
                        break;
                    }
                    read += n;
                    let text = String::from_utf8_lossy(&buf[..read]);
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if read >= end + 4 + len {
                            break;
                        }
                    }
                }
                behave(stream).await;
            });
        }
    });
    addr
}

/// A receiver that resets every connection after reading the request (`SO_LINGER` 0).
pub async fn resetting_receiver() -> SocketAddr {
    raw_receiver(|stream| async move {
        let _ = stream.set_zero_linger();
        drop(stream);
    })
    .await
}

/// A receiver that answers 200 with a 100-byte body sent one byte every 100 ms (10 s in all).
pub async fn dripping_receiver() -> SocketAddr {
    use tokio::io::AsyncWriteExt;
    raw_receiver(|mut stream| async move {
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n")
            .await;
        for _ in 0..100 {
            if stream.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

/// A receiver that answers 200 with a chunked body that never ends (16 KiB chunks for as long as
/// the peer reads, up to a minute): an attempt that finishes delivered within the budget shows
/// the hub stopped reading, since reading it all would time out; `most_written` shows how far
/// it read (what one connection took before the peer stopped reading, socket buffers
/// included).
pub struct EndlessReceiver {
    /// Its address.
    pub addr: SocketAddr,
    /// The most bytes of body any one connection was able to write.
    pub most_written: Arc<std::sync::atomic::AtomicU64>,
}

/// Starts an [`EndlessReceiver`].
pub async fn endless_receiver() -> EndlessReceiver {
    use std::sync::atomic::Ordering;
    use tokio::io::AsyncWriteExt;
    let most_written = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let record = most_written.clone();
    let addr = raw_receiver(move |mut stream| {
        let record = record.clone();
        async move {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                .await;
            let mut chunk = format!("{:x}\r\n", 16 * 1024).into_bytes();
            chunk.extend(std::iter::repeat_n(b'x', 16 * 1024));
            chunk.extend(b"\r\n");
            let until = Instant::now() + Duration::from_secs(60);
            let mut written = 0u64;
            while Instant::now() < until {
                if stream.write_all(&chunk).await.is_err() {
                    break;
                }
                written += 16 * 1024;
                record.fetch_max(written, Ordering::SeqCst);
            }
        }
    })
    .await;
    EndlessReceiver { addr, most_written }
}

/// An HTTPS server with a self-signed certificate (`openssl s_server`); killed on drop.
pub struct SelfSignedTls {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    _dir: PathBuf,
}

impl SelfSignedTls {
    /// Generates a certificate and starts the server.
    pub async fn start() -> SelfSignedTls {
        let dir = std::env::temp_dir().join(unique("tls"));
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
            ])
            .arg("-keyout")
            .arg(dir.join("key.pem"))
            .arg("-out")
            .arg(dir.join("cert.pem"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl is installed");
        assert!(status.success());
        let port = free_port();
        let child = Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept", &port.to_string()])
            .arg("-cert")
            .arg(dir.join("cert.pem"))
            .arg("-key")
            .arg(dir.join("key.pem"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        crate::eventually(
            Duration::from_secs(10),
            "openssl s_server to listen",
            || async {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(drop)
            },
        )
        .await;
        SelfSignedTls {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for SelfSignedTls {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
