//! A TCP proxy the test controls: the browser talks to the proxy's fixed
//! port, so the test can cut every connection at once, or point the proxy at
//! a restarted server, without the page noticing anything but a network fault.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub struct Proxy {
    pub port: u16,
    state: Arc<Mutex<ProxyState>>,
}

struct ProxyState {
    upstream: SocketAddr,
    /// Cancelled to cut every connection open now.
    cut: CancellationToken,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(ProxyState {
            upstream,
            cut: CancellationToken::new(),
        }));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, cut) = {
                    let state = shared.lock().unwrap();
                    (state.upstream, state.cut.clone())
                };
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let mut client = client;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        () = cut.cancelled() => {}
                    }
                });
            }
        });
        Self { port, state }
    }

    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Drops every open connection (as a network fault would).
    pub fn cut(&self) {
        let mut state = self.state.lock().unwrap();
        state.cut.cancel();
        state.cut = CancellationToken::new();
    }

    pub fn point_at(&self, upstream: SocketAddr) {
        self.state.lock().unwrap().upstream = upstream;
    }
}
