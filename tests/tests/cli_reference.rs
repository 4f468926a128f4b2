//! README and the docs as a command reference, checked against the binary:
//! every `northwest <command> --flag` they show (in code spans and code
//! blocks) is a flag `northwest <command> --help` lists, and every command
//! `northwest --help` lists is in README's "Running a deployment" block.
//! A renamed or removed flag fails here while a document still shows it.
//! No running stack needed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use northwest_tests::bin_path;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn help(args: &[&str]) -> String {
    let o = Command::new(bin_path("northwest"))
        .args(args)
        .arg("--help")
        .output()
        .expect("run northwest --help");
    assert!(o.status.success(), "northwest {args:?} --help failed");
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// The `--flags` a help text lists.
fn flags(help: &str) -> BTreeSet<String> {
    help.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(str::to_string)
        .collect()
}

/// The commands `northwest --help` (or a command's help) lists.
fn commands(help: &str) -> Vec<String> {
    help.split("Commands:")
        .nth(1)
        .unwrap_or_default()
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

/// Code spans and code-block lines of a markdown text.
fn code(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            out.push(line.to_string());
        } else {
            out.extend(line.split('`').skip(1).step_by(2).map(str::to_string));
        }
    }
    out
}

#[test]
fn every_flag_the_docs_show_is_one_the_command_takes() {
    let top = help(&[]);
    let cmds = commands(&top);
    assert!(cmds.len() >= 7, "northwest --help lists {cmds:?}");
    let benches = commands(&help(&["bench"]));
    let mut known: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for c in &cmds {
        known.insert(c.clone(), flags(&help(&[c])));
    }
    for b in &benches {
        known.insert(format!("bench {b}"), flags(&help(&["bench", b])));
    }
    let mut docs = vec![root().join("README.md"), root().join("deploy/README.md")];
    for e in std::fs::read_dir(root().join("docs")).unwrap() {
        docs.push(e.unwrap().path());
    }
    let (mut checked, mut wrong) = (0, Vec::new());
    for doc in docs
        .iter()
        .filter(|d| d.extension().is_some_and(|e| e == "md"))
    {
        let text = std::fs::read_to_string(doc).unwrap();
        for span in code(&text) {
            // Every `northwest <cmd> ...` in the span, up to the next one.
            for part in span.split("northwest ").skip(1) {
                let mut words = part.split_whitespace();
                let Some(cmd) = words.next() else { continue };
                if !cmd.chars().all(|c| c.is_ascii_lowercase()) {
                    continue;
                }
                let key = match cmd {
                    // `bench --json migrate ...`: the bench named after
                    // the global flags.
                    "bench" => match words
                        .find(|w| !w.starts_with("--"))
                        .filter(|b| benches.iter().any(|x| x == b))
                    {
                        Some(b) => format!("bench {b}"),
                        None => "bench".to_string(),
                    },
                    c => c.to_string(),
                };
                let Some(takes) = known.get(&key) else {
                    wrong.push(format!(
                        "{}: `northwest {cmd}` is no command",
                        doc.display()
                    ));
                    continue;
                };
                for f in flags(part) {
                    checked += 1;
                    if !takes.contains(&f) {
                        wrong.push(format!(
                            "{}: `northwest {key} {f}`: not in `northwest {key} --help`",
                            doc.display()
                        ));
                    }
                }
            }
        }
    }
    assert!(checked > 40, "only {checked} flags found in the docs");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // README's block of commands names every command.
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let block = readme
        .split("## Running a deployment")
        .nth(1)
        .and_then(|r| r.split("```").nth(1))
        .expect("README's Running a deployment block");
    for c in &cmds {
        assert!(
            block.contains(&format!("northwest {c}")),
            "README's command block does not show `northwest {c}`"
        );
    }
}
