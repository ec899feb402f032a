//! `skiff-ingress-bench [SECONDS]`: wrk through skiff-ingress and nginx;
//! prints a markdown table (see `skiff_ingress::bench`).

fn main() {
    let seconds: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    println!("{}", skiff_ingress::bench::run(seconds));
}
