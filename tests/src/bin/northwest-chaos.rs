//! `northwest-chaos`: the seeded fault campaign as its own binary, so the
//! shipped `northwest` does not link the test harness. It drives the
//! `northwest` binary built beside it.

use clap::Parser;
use northwest_tests::chaos::ChaosArgs;

#[derive(Parser)]
#[command(
    name = "northwest-chaos",
    version,
    about = "Seeded fault campaign: migrations under load while processes, the broker and \
             ZooKeeper are killed; every acknowledged write is checked"
)]
struct Cli {
    #[command(flatten)]
    args: ChaosArgs,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let exe = std::env::current_exe().expect("own path");
    let northwest = exe.with_file_name("northwest");
    if !northwest.exists() {
        eprintln!(
            "{} not found: build it with `cargo build --release --workspace` (northwest-chaos runs \
             the northwest binary built beside it)",
            northwest.display()
        );
        std::process::exit(2);
    }
    northwest_tests::use_binary(northwest);
    if let Err(e) = northwest_tests::chaos::run(cli.args).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
