//! Lays out the release agent's code in the order of `link-order.txt`
//! (issue 16, part 8: the idle agent's RSS). The functions an agent runs
//! to start and to serve come first, next to each other, so the kernel
//! maps about 3 MiB of the file for an idle agent instead of nearly all of
//! its 8 MB (a page fault maps the 64 KiB around it: scattered hot code
//! maps everything). `scripts/agent-link-order` regenerates the list; a
//! name the code no longer has is skipped, a new function goes after the
//! listed ones, so a stale list costs memory, never correctness.
//!
//! Only release builds for x86_64 Linux, where rustc links with lld by
//! default (`--symbol-ordering-file` is lld's); `GOLIVE_LINK_ORDER=0`
//! turns it off for a linker that lacks it.

fn main() {
    println!("cargo:rerun-if-changed=link-order.txt");
    println!("cargo:rerun-if-env-changed=GOLIVE_LINK_ORDER");
    println!("cargo:rerun-if-env-changed=GOLIVE_LINK_MAP");
    // `GOLIVE_LINK_MAP=FILE`: the linker's map of the agent (where each
    // function landed), for scripts/agent-link-order's check.
    if let Ok(map) = std::env::var("GOLIVE_LINK_MAP") {
        println!("cargo:rustc-link-arg-bin=golive-agent=-Wl,-Map={map}");
    }
    let release = std::env::var("PROFILE").as_deref() == Ok("release");
    let target = std::env::var("TARGET").unwrap_or_default();
    let wanted = std::env::var("GOLIVE_LINK_ORDER").as_deref() != Ok("0");
    if !(release && wanted && target == "x86_64-unknown-linux-gnu") {
        return;
    }
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let list = std::path::Path::new(&dir).join("link-order.txt");
    if list.is_file() {
        println!(
            "cargo:rustc-link-arg-bin=golive-agent=-Wl,--symbol-ordering-file={}",
            list.display()
        );
        println!("cargo:rustc-link-arg-bin=golive-agent=-Wl,--no-warn-symbol-ordering");
    }
}
