//! The container log writer on its own: `skiff-logger logger <PATH>`, the
//! same as `skiff logger <PATH>` (see `skiff_agent::runtime::containerd::logger`).
//! The runtime tests point containerd's shim at it.

use std::path::PathBuf;

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let path = match args.as_slice() {
        [cmd, path] if cmd == "logger" => PathBuf::from(path),
        _ => {
            eprintln!("usage: skiff-logger logger <LOG_PATH>");
            std::process::exit(2);
        }
    };
    if let Err(e) = skiff_agent::runtime::containerd::logger::run(&path) {
        eprintln!("skiff-logger: {}: {e}", path.display());
        std::process::exit(1);
    }
}
