//! Compiles accel's XDP flow filter (`bpf/accel_xdp.c`) to a BPF object in `OUT_DIR`; the crate
//! embeds it with `include_bytes!` and loads it through libbpf at run time. The object is built
//! here, not shipped, so the C source in the repository is the only truth about the program.

include!("bpf/compile.rs");

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=bpf/compile.rs");
    compile_bpf("bpf/accel_xdp.c", "accel_xdp.o", &[]);
}
