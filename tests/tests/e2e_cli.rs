//! `northwest migrate` as README's exit-code table says, row by row, on
//! real nodes: each row's code and outcome comes out of a command run
//! here, and under `--json` a failure prints exactly one JSON object on
//! stdout. Also what an operator trips over: a migration without
//! `--namespace`, an empty (misspelt) namespace, a second orchestrator of
//! the same namespace (it waits, then reads where the first one left the
//! namespace), an abort after the switch (it names the rollback command).

use std::collections::BTreeSet;
use std::process::Output;

use northwest_tests::*;

/// README's exit-code rows: (code, outcome).
fn readme_rows() -> BTreeSet<(i32, String)> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let table = readme
        .split("**Exit codes**")
        .nth(1)
        .expect("README has an **Exit codes** table");
    let rows: BTreeSet<(i32, String)> = table
        .lines()
        .skip_while(|l| !l.starts_with("| code |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells[1].parse().expect("a code"), cells[2].to_string())
        })
        .collect();
    assert!(rows.len() >= 4, "README's table: {rows:?}");
    rows
}

/// The code and outcome of a run; a failure's stdout must be one JSON
/// object saying the same.
fn outcome(o: &Output) -> (i32, String) {
    let code = o.status.code().expect("exited");
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "one JSON line on stdout: {out}\nstderr: {err}"
    );
    let v: serde_json::Value = serde_json::from_str(lines[0])
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {out}\nstderr: {err}"));
    if code == 0 {
        return (0, "done".into());
    }
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["exit_code"], code, "{v}");
    let label = v["outcome"].as_str().unwrap().to_string();
    // clap prints its own usage text on a usage error.
    let said = match label.as_str() {
        "usage" => "Usage:".to_string(),
        l => format!("{l}: "),
    };
    assert!(err.contains(&said), "stderr names the outcome too: {err}");
    (code, label)
}

fn error_of(o: &Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    v["error"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_exit_code_in_readme_comes_out_of_a_real_run() {
    let s = Pipeline::start("cli", "");
    let (n1, n2) = (s.n1.base.clone(), s.n2.base.clone());
    let mut seen = BTreeSet::new();

    // No --namespace: a usage error, never a silent default.
    let o = std::process::Command::new(bin_path("northwest"))
        .args(["migrate", "--from", &n1, "--to", &n2, "--json", "--quiet"])
        .output()
        .unwrap();
    assert_eq!(outcome(&o), (2, "usage".into()));
    assert!(error_of(&o).contains("--namespace"), "{}", error_of(&o));
    seen.insert(outcome(&o));

    // A namespace n1 holds nothing of (a typo) is refused, naming the way
    // to move an empty one on purpose.
    let o = migrate_json(&n1, &n2, "app", &[]);
    assert_eq!(outcome(&o), (2, "refused".into()));
    assert!(error_of(&o).contains("--allow-empty"), "{}", error_of(&o));
    seen.insert(outcome(&o));
    let o = migrate_json(&n1, &n2, "app", &["--allow-empty", "--stop-after", "init"]);
    assert_eq!(outcome(&o), (0, "done".into()));
    let o = migrate_json(&n1, &n2, "app", &["--abort"]);
    assert_eq!(outcome(&o), (0, "done".into()));
    assert_eq!(migrate_report(&o)["phase"], "aborted");

    random_load(&n1, "app", 2000, 100, 16).await;

    // A target that cannot be reached stops the run (recorded, resumable).
    let dead = format!("http://127.0.0.1:{}", free_port());
    let o = migrate_json(&n1, &dead, "app", &[]);
    assert_eq!(outcome(&o), (1, "error".into()));
    assert!(error_of(&o).contains("n2 unreachable"), "{}", error_of(&o));
    seen.insert(outcome(&o));

    // Two orchestrators of one namespace: the second waits for the first,
    // then reads where it left the namespace (done), not the status it
    // read before waiting.
    let first = {
        let (n1, n2) = (n1.clone(), n2.clone());
        std::thread::spawn(move || migrate_json(&n1, &n2, "app", &[]))
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    let second = migrate_json(&n1, &n2, "app", &[]);
    let first = first.join().unwrap();
    assert_eq!(migrate_report(&first)["phase"], "done");
    assert_eq!(
        outcome(&second),
        (0, "done".into()),
        "the second orchestrator: {}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert_eq!(migrate_report(&second)["phase"], "done");
    seen.insert(outcome(&second));

    // An abort after the switch is refused and gives the rollback command
    // with the migration's own nodes.
    let o = migrate_json(&n1, &n2, "app", &["--abort"]);
    assert_eq!(outcome(&o), (2, "refused".into()));
    let e = error_of(&o);
    assert!(
        e.contains(&format!(
            "northwest migrate --from {n1} --to {n2} --namespace app --rollback"
        )),
        "{e}"
    );

    assert_eq!(
        seen,
        readme_rows(),
        "README's exit-code table and what the runs did"
    );
}
