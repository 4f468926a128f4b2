//! `--profile <dir>`: perf samples of this process while one measurement
//! runs, kept as `<name>.perf.data` and, where `inferno` is installed
//! (`cargo install inferno`), folded into a flame graph `<name>.svg`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::Context;

pub(crate) struct Profile {
    perf: Child,
    data: PathBuf,
    svg: PathBuf,
}

/// Starts sampling this process (every thread, call graphs from DWARF).
pub(crate) fn start(dir: &Path, name: &str) -> anyhow::Result<Profile> {
    std::fs::create_dir_all(dir)?;
    let data = dir.join(format!("{name}.perf.data"));
    let perf = Command::new("perf")
        .args(["record", "-F", "199", "--call-graph", "dwarf,8192", "-o"])
        .arg(&data)
        .args(["-p", &std::process::id().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("running perf (linux-perf; perf_event_paranoid <= 1 or root)")?;
    // perf needs a moment to attach before the measured work starts.
    std::thread::sleep(std::time::Duration::from_millis(500));
    Ok(Profile {
        perf,
        data,
        svg: dir.join(format!("{name}.svg")),
    })
}

impl Profile {
    /// Stops sampling and draws the flame graph; returns what was kept.
    pub(crate) fn finish(mut self) -> anyhow::Result<String> {
        let _ = Command::new("kill")
            .args(["-INT", &self.perf.id().to_string()])
            .status();
        self.perf.wait()?;
        let script = format!(
            "perf script -i '{}' 2>/dev/null | inferno-collapse-perf | inferno-flamegraph > '{}'",
            self.data.display(),
            self.svg.display()
        );
        let drawn = Command::new("sh")
            .args(["-c", &script])
            .status()
            .is_ok_and(|s| s.success());
        Ok(if drawn {
            format!("{} and {}", self.data.display(), self.svg.display())
        } else {
            let _ = std::fs::remove_file(&self.svg);
            format!(
                "{} (no flame graph: `cargo install inferno` draws one)",
                self.data.display()
            )
        })
    }
}
