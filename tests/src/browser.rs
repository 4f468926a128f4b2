//! A real browser for the dashboard tests: Debian's `chromium` in headless
//! mode (installed by `deploy/stack.sh install`; never downloaded). Each
//! [`load`] runs the page's scripts for a while, then returns the rendered
//! DOM and every console message the page produced.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Page {
    pub dom: String,
    /// Console messages (errors, uncaught exceptions, failed loads).
    pub console: Vec<String>,
}

impl Page {
    /// The value of `attr` on the element with `id`, if both exist.
    pub fn attr_of(&self, id: &str, attr: &str) -> Option<String> {
        let at = self.dom.find(&format!("id=\"{id}\""))?;
        let start = self.dom[..at].rfind('<')?;
        let end = at + self.dom[at..].find('>')?;
        let tag = &self.dom[start..end];
        let key = format!("{attr}=\"");
        let v = tag.find(&key)? + key.len();
        Some(tag[v..v + tag[v..].find('"')?].to_string())
    }

    /// The text of the element with `id` (tags stripped).
    pub fn text_of(&self, id: &str) -> Option<String> {
        let at = self.dom.find(&format!("id=\"{id}\""))?;
        let open_end = at + self.dom[at..].find('>')? + 1;
        let tag = self.dom[..at].rfind('<').map(|s| &self.dom[s + 1..at])?;
        let name = tag.split_whitespace().next()?;
        let close = open_end + self.dom[open_end..].find(&format!("</{name}>"))?;
        let mut out = String::new();
        let mut in_tag = false;
        for c in self.dom[open_end..close].chars() {
            match c {
                '<' => in_tag = true,
                '>' => in_tag = false,
                c if !in_tag => out.push(c),
                _ => {}
            }
        }
        Some(out)
    }
}

/// The console line the dashboard logs once loaded.
const CANARY: &str = "northwest dashboard loaded";

/// The chromium binary; a missing browser fails the test with what to run.
pub fn chromium() -> PathBuf {
    for p in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("chromium not found: run `deploy/stack.sh install` (apt package chromium)");
}

fn base_cmd(profile: &Path, budget_ms: u64) -> Command {
    base_cmd_sized(profile, budget_ms, (1200, 1100))
}

fn base_cmd_sized(profile: &Path, budget_ms: u64, (w, h): (u32, u32)) -> Command {
    // Virtual time stops while a fetch is pending: a hung node would hang
    // the browser, so it gets a wall-clock limit.
    let mut c = Command::new("timeout");
    c.arg("--kill-after=5").arg("90").arg(chromium());
    c.args([
        "--headless=new",
        // Root in CI containers cannot use chromium's sandbox.
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--enable-logging=stderr",
        "--v=0",
    ])
    .arg(format!("--window-size={w},{h}"))
    .arg(format!("--user-data-dir={}", profile.display()))
    .arg(format!("--virtual-time-budget={budget_ms}"));
    c
}

/// Loads `url`, lets its scripts run for `budget_ms` of virtual time, and
/// returns the DOM; with `screenshot`, also saves a PNG of the page there.
pub fn load(url: &str, budget_ms: u64, screenshot: Option<&Path>) -> Page {
    let profile = tempfile::tempdir().expect("tempdir");
    let dumped = base_cmd(profile.path(), budget_ms)
        .arg("--dump-dom")
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        dumped.status.success(),
        "chromium --dump-dom {url}: {dumped:?}"
    );
    let console: Vec<String> = String::from_utf8_lossy(&dumped.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_string)
        .collect();
    // The page logs one known line: without it, console capture is broken
    // and an empty list would prove nothing.
    assert!(
        console.iter().any(|l| l.contains(CANARY)),
        "chromium did not report the page's console (no {CANARY:?}); stderr:\n{}",
        String::from_utf8_lossy(&dumped.stderr)
    );
    let console = console
        .into_iter()
        .filter(|l| !l.contains(CANARY))
        .collect();
    if let Some(png) = screenshot {
        shoot(profile.path(), url, budget_ms, png, (1200, 1100));
    }
    Page {
        dom: String::from_utf8_lossy(&dumped.stdout).into_owned(),
        console,
    }
}

/// Saves a PNG of `url` rendered in a `size` (width, height) window after
/// `budget_ms` of virtual time.
pub fn screenshot(url: &str, budget_ms: u64, png: &Path, size: (u32, u32)) {
    let profile = tempfile::tempdir().expect("tempdir");
    shoot(profile.path(), url, budget_ms, png, size);
}

fn shoot(profile: &Path, url: &str, budget_ms: u64, png: &Path, size: (u32, u32)) {
    if let Some(dir) = png.parent() {
        std::fs::create_dir_all(dir).expect("artifact dir");
    }
    let _ = std::fs::remove_file(png);
    let out = base_cmd_sized(profile, budget_ms, size)
        .arg(format!("--screenshot={}", png.display()))
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success() && png.exists(),
        "chromium --screenshot {url}: {out:?}"
    );
}
