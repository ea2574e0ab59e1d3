//! Loopback servers for the integration tests: bound to 127.0.0.1 port 0, started and shut
//! down by each test.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Which protocol the test server speaks (HTTP/2 is prior-knowledge h2c, as gRPC uses).
#[derive(Clone, Copy, Debug)]
pub enum Proto {
    Http1,
    Http2,
}

/// A running loopback server; [`shutdown`](TestServer::shutdown) stops it (dropping it aborts it).
pub struct TestServer {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// How many requests reached the server.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Stops accepting, closes every connection, and waits for the server task.
    pub async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Serves `handler` on 127.0.0.1:0. The handler gets the request and the number of requests
/// before it (0 for the first).
pub async fn serve<F, Fut, B>(proto: Proto, handler: F) -> TestServer
where
    F: Fn(Request<Incoming>, usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    accept_loop(move |stream, counter| {
        let handler = handler.clone();
        let svc = hyper::service::service_fn(move |req| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let fut = handler(req, n);
            async move { Ok::<_, Infallible>(fut.await) }
        });
        let io = TokioIo::new(stream);
        async move {
            let _ = match proto {
                Proto::Http1 => {
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await
                }
                Proto::Http2 => {
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, svc)
                        .await
                }
            };
        }
    })
    .await
}

/// Binds 127.0.0.1:0 and runs `connection(stream, hits)` for each accepted connection until
/// the returned server is shut down (which closes every connection still open).
async fn accept_loop<F, Fut>(connection: F) -> TestServer
where
    F: Fn(tokio::net::TcpStream, Arc<AtomicUsize>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let (stop, mut stopped) = oneshot::channel::<()>();
    let counter = hits.clone();
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    conns.spawn(connection(stream, counter.clone()));
                }
            }
        }
        conns.shutdown().await;
    });
    TestServer {
        addr,
        hits,
        stop: Some(stop),
        task: Some(task),
    }
}

/// How a [`script_server`] response body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The terminating chunk: a clean end of body.
    Complete,
    /// The connection closes mid-body (no terminating chunk): the client sees a body error.
    Cut,
    /// Nothing more is sent and the connection stays open until the server shuts down, the
    /// way a provider that has sent `[DONE]` may still hold the stream.
    Hang,
}

/// One scripted HTTP/1.1 response: `200`, the given content type, a chunked body written one
/// piece per TCP write (with a pause between, so pieces arrive as separate reads), then `end`.
#[derive(Clone, Debug)]
pub struct Script {
    pub content_type: &'static str,
    pub pieces: Vec<Vec<u8>>,
    pub end: End,
}

impl Script {
    pub fn sse(pieces: &[&str], end: End) -> Script {
        Script {
            content_type: "text/event-stream",
            pieces: pieces.iter().map(|p| p.as_bytes().to_vec()).collect(),
            end,
        }
    }
}

/// A raw-socket HTTP/1.1 server on 127.0.0.1:0 that answers the `n`-th connection with
/// `scripts[n % len]` and closes it: byte-exact control over how a stream is split across TCP
/// writes and how it ends. Shut down (and every hanging connection closed) by dropping the
/// returned guard or calling `shutdown`.
pub async fn script_server(scripts: Vec<Script>) -> TestServer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    accept_loop(move |mut stream, counter| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let script = scripts[n % scripts.len()].clone();
        async move {
            // Read the request head (the tests send no body).
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: {}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
                script.content_type
            );
            if stream.write_all(response.as_bytes()).await.is_err() {
                return;
            }
            for piece in &script.pieces {
                let mut chunk = format!("{:x}\r\n", piece.len()).into_bytes();
                chunk.extend_from_slice(piece);
                chunk.extend_from_slice(b"\r\n");
                if stream.write_all(&chunk).await.is_err() {
                    return;
                }
                let _ = stream.flush().await;
                tokio::time::sleep(std::time::Duration::from_millis(15)).await;
            }
            match script.end {
                End::Complete => {
                    let _ = stream.write_all(b"0\r\n\r\n").await;
                }
                End::Cut => {}
                End::Hang => std::future::pending::<()>().await,
            }
            let _ = stream.shutdown().await;
        }
    })
    .await
}
