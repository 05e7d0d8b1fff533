//! The physical limit of golive's stack for `scripts/bench-fanout` (issue
//! 14): one framed request per agent, each on a fresh TCP + mutual TLS 1.3
//! connection (tokio, rustls, hyper's HTTP/1.1 client), every agent at
//! once, nothing else: no plan, no journal, no output but a count. It is
//! what `golivectl status` and `golivectl probe` would cost if they did
//! nothing but their one request per host.
//!
//! `bare_fanout CA CERT KEY (status | probe APP) ADDRESS...`; exits 0 when
//! every agent answered with the expected response, else 1 naming the first
//! failure.

use std::sync::Arc;

use bytes::Bytes;
use golive_shared::codec;
use golive_shared::protocol::{RPC_PATH, Request, Response, RunProbesRequest, StatusRequest};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;

async fn one(
    tls: Arc<rustls::ClientConfig>,
    addr: String,
    body: Bytes,
) -> Result<Response, String> {
    let tcp = tokio::net::TcpStream::connect(&addr)
        .await
        .map_err(|e| format!("{addr}: connect: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let ip: std::net::IpAddr = addr
        .rsplit_once(':')
        .and_then(|(h, _)| h.parse().ok())
        .ok_or_else(|| format!("{addr}: not IP:PORT"))?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(ServerName::IpAddress(ip.into()), tcp)
        .await
        .map_err(|e| format!("{addr}: TLS: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("{addr}: HTTP: {e}"))?;
    tokio::spawn(conn);
    let req = hyper::Request::post(RPC_PATH)
        .header(hyper::header::HOST, ip.to_string())
        .header(hyper::header::CONTENT_TYPE, codec::CONTENT_TYPE)
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("{addr}: request: {e}"))?;
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{addr}: body: {e}"))?
        .to_bytes();
    codec::decode::<Response>(&bytes).map_err(|e| format!("{addr}: decode: {e}"))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || -> ! {
        eprintln!("usage: bare_fanout CA CERT KEY (status | probe APP) ADDRESS...");
        std::process::exit(2)
    };
    if args.len() < 5 {
        usage();
    }
    let (request, addrs) = match args[3].as_str() {
        "status" => (Request::Status(StatusRequest { apps: vec![] }), &args[4..]),
        "probe" if args.len() > 5 => (
            Request::RunProbes(RunProbesRequest {
                app: args[4].clone(),
                tags: vec![],
            }),
            &args[5..],
        ),
        _ => usage(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let code = rt.block_on(async {
        let tls =
            golivectl::tls::client_config(args[0].as_ref(), args[1].as_ref(), args[2].as_ref())
                .expect("TLS files");
        let body = Bytes::from(codec::encode(&request));
        let mut set = tokio::task::JoinSet::new();
        for a in addrs {
            set.spawn(one(Arc::clone(&tls), a.clone(), body.clone()));
        }
        let mut ok = 0;
        let mut first_error = None;
        for r in set.join_all().await {
            match r {
                Ok(Response::Status(_) | Response::Probes(_)) => ok += 1,
                Ok(other) => {
                    first_error.get_or_insert(format!("unexpected answer {other:?}"));
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        println!("answered={ok}");
        match first_error {
            None => 0,
            Some(e) => {
                eprintln!("bare_fanout: {e}");
                1
            }
        }
    });
    std::process::exit(code);
}
