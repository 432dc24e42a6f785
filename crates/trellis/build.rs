//! Link flags for the binaries.

use std::path::Path;

fn main() {
    // Relative relocations packed into a bitmap (DT_RELR, glibc 2.36+): a position-independent
    // binary keeps ASLR but no longer maps ~400 KiB of relocation entries into every process.
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");

    // Release builds place the functions a sidecar runs (proxy.order, written by
    // bench/layout.sh) next to each other: the kernel maps code in 64 KiB windows around each
    // page touched, so scattered hot functions would map most of the binary into every
    // sidecar. Names the binary no longer has are skipped.
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=proxy.order");
    if std::env::var("PROFILE").as_deref() == Ok("release") {
        let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        let order = Path::new(&dir).join("proxy.order");
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}
