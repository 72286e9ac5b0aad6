//! Compiles the test topology's fault injector (`bpf/faults.c`) to a BPF object in `OUT_DIR`,
//! embedded by `src/faults.rs`; the same build code as libaccel's XDP filter.

include!("../libaccel/bpf/compile.rs");

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../libaccel/bpf/compile.rs");
    // v3: atomic fetch-and-add (the injector numbers frames with the counter's old value).
    compile_bpf("bpf/faults.c", "faults.o", &["-mcpu=v3"]);
}
