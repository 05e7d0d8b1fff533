//! A test helper: connects to a Unix socket, sends one length-prefixed
//! frame (hex in argv), and prints the whole answer as hex. The issue 13
//! tests run it as another user (setpriv) to check that the agent's local
//! socket refuses peers by their credentials.
//!
//! Usage: `local_socket_peer SOCKET FRAME_HEX`.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, path, frame] = args.as_slice() else {
        eprintln!("usage: local_socket_peer SOCKET FRAME_HEX");
        return ExitCode::from(2);
    };
    let frame = match hex::decode(frame) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("FRAME_HEX: {e}");
            return ExitCode::from(2);
        }
    };
    let mut s = match std::os::unix::net::UnixStream::connect(path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("connect {path}: {e}");
            return ExitCode::from(1);
        }
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut out = (frame.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&frame);
    if let Err(e) = s.write_all(&out) {
        eprintln!("send: {e}");
        return ExitCode::from(1);
    }
    let mut answer = Vec::new();
    if let Err(e) = s.read_to_end(&mut answer) {
        eprintln!("read: {e}");
        return ExitCode::from(1);
    }
    println!("{}", hex::encode(answer));
    ExitCode::SUCCESS
}
