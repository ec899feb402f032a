//! Builds the `pause` program (pause/pause.c) as a static executable; the
//! agent embeds it (`include_bytes!`) in the pause image it imports at start.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=pause/pause.c");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let output = out_dir.join("pause");
    let compiler = cc::Build::new().opt_level(2).get_compiler();
    let mut cmd: Command = compiler.to_command();
    cmd.args(["-static", "-s", "-Wall", "-Werror", "-o"]).arg(&output).arg("pause/pause.c");
    let status = cmd.status().unwrap_or_else(|e| panic!("running the C compiler for pause/pause.c: {e}"));
    assert!(
        status.success(),
        "compiling pause/pause.c as a static executable failed ({status}); a C compiler and static libc \
         are needed (Debian: gcc, libc6-dev)"
    );
}
