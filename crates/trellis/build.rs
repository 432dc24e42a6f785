//! Link flags for the binaries.

fn main() {
    // Relative relocations packed into a bitmap (DT_RELR, glibc 2.36+): a position-independent
    // binary keeps ASLR but no longer maps ~400 KiB of relocation entries into every process.
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
}
