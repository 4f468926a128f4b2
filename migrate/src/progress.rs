//! Progress bars of long steps (hidden with `--quiet`).

pub(crate) fn bar(len: u64, msg: &str, quiet: bool) -> indicatif::ProgressBar {
    let b = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(len)
    };
    b.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix:>10} [{bar:40}] {pos}/{len} rows {per_sec} eta {eta} {msg}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    b.set_prefix(msg.to_string());
    b
}
