//! Link flags for the binaries.

use std::path::Path;

fn main() {
    // Relative relocations packed into a bitmap (DT_RELR, glibc 2.36+): a position-independent
    // binary keeps ASLR but no longer maps ~400 KiB of relocation entries into every process.
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");

    // Release builds place the functions a sidecar runs (proxy.order, written by
    // bench/layout.sh) next to each other: the kernel maps code in 64 KiB windows around each
    // page touched, so scattered hot functions would map most of the binary into every
    // sidecar. Names the binary no longer has are skipped. The flag is lld's, the default
    // linker of x86_64-unknown-linux-gnu since Rust 1.90; other targets link without it.
    println!("cargo:rerun-if-changed=proxy.order");
    println!("cargo:rerun-if-env-changed=RUSTFLAGS");
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let lld = var("CARGO_CFG_TARGET_ARCH") == "x86_64"
        && var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu"
        && !var("CARGO_ENCODED_RUSTFLAGS").contains("linker-features=-lld");
    if var("PROFILE") == "release" && lld {
        let order = Path::new(&var("CARGO_MANIFEST_DIR")).join("proxy.order");
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}
