//! `bench rollback` (`bench migrate --only rollback`): what a rollback
//! pauses writes for. Each trial migrates a fresh pair under load, lets n2
//! take writes for a moment, then rolls back with the load still running
//! through n1: the rollback's compare under both fences and its switch
//! back each stop writes, and the trial reports both and their sum.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::nodes::{admin, last_report, migrate_args, mixed, pair, preload};
use super::{quantiles, MigrateBench};
use crate::common::{record, say};

pub(super) async fn rollback(b: &MigrateBench) -> anyhow::Result<()> {
    let b = MigrateBench {
        entities: 2000,
        ..b.clone()
    };
    say!(
        "\nRollback write pause over {} trials (migrate 2,000 entities under {} req/s, then roll back under the same load)",
        b.rollback_trials,
        b.rate
    );
    let (mut compare, mut switch, mut total) = (Vec::new(), Vec::new(), Vec::new());
    // Trial by trial in the JSON; p99 is nearest rank (the max below 100 trials).
    let mut failed = 0u64;
    for i in 0..b.rollback_trials {
        let p = pair(&b, &format!("rb{i}")).await?;
        preload(&p.n1, b.entities, 256).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let load = {
            let (n1, b2, st) = (p.n1.clone(), b.clone(), stop.clone());
            tokio::spawn(async move { mixed(&n1, &b2, 0.5, st).await })
        };
        northwest_migrate::run(migrate_args(&b, &p), admin()).await?;
        // n2 takes writes (through n1's proxy) before going back.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut args = migrate_args(&b, &p);
        args.rollback = true;
        northwest_migrate::run(args, admin()).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::Relaxed);
        let l = load.await?;
        let st = last_report(&b, &p).await?;
        let Some(rb) = st.rolled_back else {
            anyhow::bail!("trial {i}: the migration record has no rollback report");
        };
        let Some(c) = rb.verify.as_ref().map(|v| v.pause_ms) else {
            anyhow::bail!(
                "trial {i}: the rollback report has no compare (resumed after its switch?)"
            );
        };
        let s = rb.write_pause_ms.unwrap_or(0.0);
        failed += l["failed"].as_u64().unwrap_or(0);
        say!(
            "  trial {i}: compare paused {c:.1} ms, switch back {s:.1} ms, total {:.1} ms; requests {} failed {}",
            c + s,
            l["issued"],
            l["failed"]
        );
        compare.push(c);
        switch.push(s);
        total.push(c + s);
        p.stop().await;
    }
    let (qc, qs, qt) = (quantiles(&compare), quantiles(&switch), quantiles(&total));
    say!(
        "rollback write pause ms (p50 / p99 / max): compare {:.1} / {:.1} / {:.1}, switch {:.1} / {:.1} / {:.1}, total {:.1} / {:.1} / {:.1}; failed requests {failed}",
        qc.0, qc.1, qc.2, qs.0, qs.1, qs.2, qt.0, qt.1, qt.2
    );
    record(serde_json::json!({"rollback": {
        "trials": total.len(),
        "compare_pause_ms": {"p50": qc.0, "p99": qc.1, "max": qc.2, "all": compare},
        "switch_pause_ms": {"p50": qs.0, "p99": qs.1, "max": qs.2, "all": switch},
        "total_pause_ms": {"p50": qt.0, "p99": qt.1, "max": qt.2, "all": total},
        "failed_requests": failed,
    }}));
    Ok(())
}
