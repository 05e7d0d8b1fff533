//! Fuzz harnesses (issue 11). Each takes arbitrary bytes and must return,
//! whatever they are, without panicking; a panic is a bug (in the agent, a
//! remote crash). The cargo-fuzz targets in `fuzz/` and the regression test
//! over `fuzz/regressions/` call these same functions.

use std::path::Path;

use crate::codec;
use crate::protocol::{Request, Response};

/// The wire envelope decoder, both ways; a decoded value must survive a
/// round trip unchanged.
pub fn wire(data: &[u8]) {
    let _ = codec::peek_version(data);
    if let Ok(req) = codec::decode::<Request>(data) {
        let again = codec::encode(&req);
        assert_eq!(
            codec::decode::<Request>(&again).ok(),
            Some(req),
            "a decoded request did not survive its own encoding"
        );
    }
    if let Ok(resp) = codec::decode::<Response>(data) {
        let again = codec::encode(&resp);
        assert_eq!(
            codec::decode::<Response>(&again).ok(),
            Some(resp),
            "a decoded response did not survive its own encoding"
        );
    }
}

/// The agent config parser and validator (a config file that does not
/// exist, so relative paths point nowhere).
pub fn agent_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(errors) =
        crate::config::parse(Path::new("/nonexistent/golive-fuzz/agent.toml"), text)
    {
        // Every error must render (file, line, key).
        let _ = errors.to_string();
    }
}
