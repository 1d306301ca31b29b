//! The seven scenarios of issue #6, run in sequence against one dedicated control plane, each
//! figure beside its floor or baseline measured in the same run:
//!
//! 1. floor: a bare client creates N accounts and patches each one's status once;
//! 2. convergence: N accounts created at once, until every one is PENDING_AUTH with a link;
//! 3. latency: single applies one after another, apply-to-link time;
//! 4. steady state: the operator's API writes (audit log) and CPU in the window after convergence;
//! 5. refresh wave: client-credentials tokens expiring together: margins and token-endpoint peak;
//! 6. memory: RSS with many accounts and unrelated Secrets;
//! 7. gateway: `/connect/{token}` under load from a separate process;
//! 8. sustained refresh: OAuth accounts renewing at a rotating provider, API writes per refresh
//!    with and without the refresh intent (`sustained.rs`).
//!
//! The operator is stopped while a floor or baseline runs (it watches every namespace), and
//! started again (same ports, so links stay valid) before its own measurement.
#![allow(dead_code)] // the smoke test uses a part of this module

#[path = "broker.rs"]
mod broker;
#[path = "sustained.rs"]
mod sustained;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_auth_operator::api::{ConnectedAccount, Connection};
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, ListParams, ObjectMeta};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};

use crate::harness::{
    self, BENCH_USER, CONNECTION, Env, Mem, OPERATOR_USER, Operator, Res, Tracker, bounded, breakdown,
    has_link, percentile,
};
use crate::load::{self, Tool};
use crate::report::{Report, Row};
use crate::tls;
use crate::token_server::{TokenServer, TokenServerConfig};

/// Sizes and knobs of a run.
#[derive(Debug, Clone)]
pub struct Params {
    pub scale: String,
    /// Whether the issue's targets are judged (full scale only).
    pub targets: bool,
    /// Convergence sizes, ascending; `headline` is the one the 1.3x target applies to.
    pub conv_sizes: Vec<usize>,
    pub headline: usize,
    /// Creates (and floor status patches) in flight at once.
    pub concurrency: usize,
    pub latency_n: usize,
    pub steady_window: Duration,
    pub refresh_n: usize,
    pub refresh_lifetime: Duration,
    /// `--refresh-concurrency` given to the operator.
    pub refresh_limit: usize,
    /// Artificial latency of the token endpoint, so that concurrency builds up.
    pub refresh_delay: Duration,
    /// ConnectedAccounts in the cluster for the memory reading (topped up to this).
    pub memory_accounts: usize,
    pub memory_secrets: usize,
    pub secret_bytes: usize,
    pub gateway_links: usize,
    pub gateway_duration: Duration,
    pub gateway_baseline_duration: Duration,
    pub gateway_connections: usize,
    pub load: Tool,
    /// Scenario numbers to run (`BENCH_ONLY`); empty: all. 1, 2 and 4 run together.
    pub only: Vec<u32>,
}

impl Params {
    /// The issue's sizes.
    pub fn full() -> Params {
        Params {
            scale: "full".into(),
            targets: true,
            conv_sizes: vec![500, 1000, 2000, 5000],
            headline: 2000,
            // What the operator's account controller may run at once.
            concurrency: usize::from(agent_auth_operator::controller::RECONCILE_CONCURRENCY),
            latency_n: 200,
            steady_window: Duration::from_secs(60),
            refresh_n: 1000,
            refresh_lifetime: Duration::from_secs(90),
            refresh_limit: 8,
            refresh_delay: Duration::from_millis(100),
            memory_accounts: 10_000,
            memory_secrets: 10_000,
            secret_bytes: 1536,
            gateway_links: 100,
            gateway_duration: Duration::from_secs(30),
            gateway_baseline_duration: Duration::from_secs(10),
            gateway_connections: 32,
            load: Tool::Wrk,
            only: Vec::new(),
        }
    }

    /// Tiny sizes, no targets: proves every scenario still produces numbers.
    pub fn smoke() -> Params {
        Params {
            scale: "smoke".into(),
            targets: false,
            conv_sizes: vec![10, 20],
            headline: 20,
            concurrency: 8,
            latency_n: 10,
            steady_window: Duration::from_secs(3),
            refresh_n: 30,
            refresh_lifetime: Duration::from_secs(12),
            refresh_limit: 4,
            refresh_delay: Duration::from_millis(50),
            memory_accounts: 60,
            memory_secrets: 50,
            secret_bytes: 1536,
            gateway_links: 5,
            gateway_duration: Duration::from_secs(2),
            gateway_baseline_duration: Duration::from_secs(1),
            gateway_connections: 4,
            load: Tool::InProcess,
            only: Vec::new(),
        }
    }

    /// `BENCH_SCALE=smoke|full` (default full) and the knobs documented in BENCHMARKS.md.
    pub fn from_env() -> Res<Params> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let mut p = match var("BENCH_SCALE").as_deref() {
            None | Some("full") => Params::full(),
            Some("smoke") => Params::smoke(),
            Some(other) => return Err(format!("BENCH_SCALE={other}: use smoke or full")),
        };
        let num = |k: &str| -> Res<Option<usize>> {
            var(k)
                .map(|v| v.trim().parse::<usize>().map_err(|e| format!("{k}={v}: {e}")))
                .transpose()
        };
        if let Some(v) = var("BENCH_SIZES") {
            let sizes = v
                .split(',')
                .map(|s| {
                    s.trim()
                        .parse::<usize>()
                        .map_err(|e| format!("BENCH_SIZES={v}: {e}"))
                })
                .collect::<Res<Vec<_>>>()?;
            p.headline = if sizes.contains(&p.headline) {
                p.headline
            } else {
                sizes.last().copied().unwrap_or(0)
            };
            p.conv_sizes = sizes;
            p.targets = false;
        }
        if let Some(v) = var("BENCH_ONLY") {
            p.only = v
                .split(',')
                .map(|s| {
                    s.trim()
                        .parse::<u32>()
                        .map_err(|e| format!("BENCH_ONLY={v}: {e}"))
                })
                .collect::<Res<Vec<_>>>()?;
        }
        if let Some(c) = num("BENCH_CONCURRENCY")? {
            p.concurrency = c.max(1);
        }
        if let Some(c) = num("BENCH_REFRESH_CONCURRENCY")? {
            p.refresh_limit = c.max(1);
        }
        if let Some(s) = num("BENCH_GATEWAY_SECONDS")? {
            p.gateway_duration = Duration::from_secs(s.max(1) as u64);
        }
        if let Some(c) = num("BENCH_GATEWAY_CONNECTIONS")? {
            p.gateway_connections = c.max(1);
        }
        match var("BENCH_LOAD").as_deref() {
            None => {}
            Some("wrk") => p.load = Tool::Wrk,
            Some("in-process") => p.load = Tool::InProcess,
            Some(other) => return Err(format!("BENCH_LOAD={other}: use wrk or in-process")),
        }
        if p.load == Tool::Wrk && !load::wrk_available() {
            return Err(
                "wrk is not installed: run scripts/install-bench-deps.sh, or set BENCH_LOAD=in-process"
                    .into(),
            );
        }
        Ok(p)
    }

    fn settings(&self) -> Value {
        json!({
            "conv_sizes": self.conv_sizes, "headline": self.headline,
            "concurrency": self.concurrency, "latency_n": self.latency_n,
            "steady_window_s": self.steady_window.as_secs(), "refresh_n": self.refresh_n,
            "refresh_lifetime_s": self.refresh_lifetime.as_secs(),
            "refresh_limit": self.refresh_limit,
            "refresh_delay_ms": self.refresh_delay.as_millis() as u64,
            "memory_accounts": self.memory_accounts, "memory_secrets": self.memory_secrets,
            "secret_bytes": self.secret_bytes, "gateway_links": self.gateway_links,
            "gateway_s": self.gateway_duration.as_secs(),
            "gateway_connections": self.gateway_connections,
            "load": format!("{:?}", self.load),
        })
    }
}

/// Runs every scenario; a scenario that fails is reported and the rest carry on.
pub async fn run(p: &Params) -> Report {
    let started = Instant::now();
    let mut report = Report {
        scale: p.scale.clone(),
        started: Timestamp::now().strftime("%Y-%m-%d %H:%M UTC").to_string(),
        wall_seconds: 0.0,
        machine: harness::machine(),
        settings: p.settings(),
        rows: Vec::new(),
        details: serde_json::Map::new(),
        errors: Vec::new(),
    };
    let env = match Env::start().await {
        Ok(env) => env,
        Err(e) => {
            report.errors.push(format!("control plane: {e}"));
            report.rows.push(Row::error("control plane", &e));
            return report;
        }
    };
    let op = match Operator::new(&env, p.refresh_limit) {
        Ok(op) => op,
        Err(e) => {
            report.errors.push(format!("operator: {e}"));
            report.rows.push(Row::error("operator", &e));
            return report;
        }
    };
    let mut s = Suite {
        env,
        op,
        p,
        report,
        rss_empty: None,
        link_ns: None,
    };
    progress(&format!(
        "control plane up in {:.0} s (cluster dir {})",
        started.elapsed().as_secs_f64(),
        s.env.cluster.dir().display()
    ));
    let runs = |n: u32| p.only.is_empty() || p.only.contains(&n);
    let r = s.empty().await;
    s.record("0. empty operator", r);
    // Also runs 4. steady state, right after the last convergence.
    if runs(1) || runs(2) || runs(4) {
        let r = s.convergence().await;
        s.record("1-2. floor and convergence", r);
    }
    if runs(3) {
        let r = s.latency().await;
        s.record("3. latency", r);
    }
    if runs(5) {
        let r = s.refresh_wave().await;
        s.record("5. refresh wave", r);
    }
    if runs(8) {
        let r = s.sustained_refresh().await;
        s.record("8. sustained refresh", r);
    }
    if runs(6) {
        let r = s.memory().await;
        s.record("6. memory", r);
    }
    if runs(7) {
        let r = s.gateway().await;
        s.record("7. gateway", r);
    }
    if runs(9) {
        let r = s.broker().await;
        s.record("9. broker", r);
    }
    s.op.stop();
    let mut report = s.report;
    // Scenario order (the steady state ran between two convergence rows); stable within one.
    report.rows.sort_by_key(|r| {
        r.scenario
            .split('.')
            .next()
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(99)
    });
    report.details.insert(
        "api_retries".into(),
        json!(harness::RETRIES.load(std::sync::atomic::Ordering::Relaxed)),
    );
    report.wall_seconds = started.elapsed().as_secs_f64();
    report
}

/// One line on stderr per step, so a long run shows where it is.
pub fn progress(what: &str) {
    eprintln!("bench: {what}");
}

struct Suite<'a> {
    env: Env,
    op: Operator,
    p: &'a Params,
    report: Report,
    rss_empty: Option<Mem>,
    /// A namespace of PENDING_AUTH accounts whose links the gateway scenario loads.
    link_ns: Option<String>,
}

/// CPU seconds per process: a reading, and the difference of two.
type Cpu = BTreeMap<String, f64>;

fn cpu_delta(before: &Cpu, after: &Cpu) -> Value {
    let d: BTreeMap<&String, f64> = after
        .iter()
        .map(|(k, v)| {
            (
                k,
                ((v - before.get(k).copied().unwrap_or(0.0)) * 100.0).round() / 100.0,
            )
        })
        .collect();
    json!(d)
}

/// What one floor or convergence run measured.
struct Run {
    secs: f64,
    created_secs: f64,
    writes: BTreeMap<String, u64>,
    /// p50/p99 of the API server's answer time for those writes.
    server_ms: Value,
    cpu: Value,
}

impl Suite<'_> {
    fn record(&mut self, scenario: &str, r: Res<()>) {
        match r {
            Ok(()) => progress(&format!("{scenario}: done")),
            Err(e) => {
                progress(&format!("{scenario}: FAILED: {e}"));
                self.report.errors.push(format!("{scenario}: {e}"));
                self.report.rows.push(Row::error(scenario, &e));
            }
        }
    }

    fn row(&mut self, row: Row) {
        progress(&format!(
            "  {} | {} | {} | {}",
            row.metric, row.measured, row.baseline, row.target
        ));
        self.report.rows.push(row);
    }

    fn detail(&mut self, key: &str, value: Value) {
        self.report.details.insert(key.to_owned(), value);
    }

    fn cpu(&self) -> Cpu {
        let mut c = self.env.control_plane_cpu();
        if let Ok(op) = self.op.cpu() {
            c.insert("operator".into(), op);
        }
        c.insert("bench".into(), harness::own_cpu_seconds());
        c
    }

    fn audit_offset(&self) -> u64 {
        self.env.audit.as_ref().map_or(0, |a| a.offset())
    }

    fn writes(&self, offset: u64, from: Timestamp) -> Res<Vec<harness::Write>> {
        match &self.env.audit {
            Some(a) => a.writes(offset, from, Timestamp::now()),
            None => Ok(Vec::new()),
        }
    }

    /// Starts the operator if needed and waits until it has reconciled every account it manages
    /// and gone quiet.
    async fn start_operator(&mut self) -> Res<()> {
        let fresh = !self.op.running();
        let t = Instant::now();
        self.op.start().await?;
        let accounts = self.env.accounts();
        let limit = Duration::from_secs(120) + Duration::from_millis(20) * accounts as u32;
        self.op.wait_idle(if fresh { accounts } else { 0 }, limit).await?;
        if fresh {
            progress(&format!(
                "  operator started and idle with {accounts} accounts in {:.1} s",
                t.elapsed().as_secs_f64()
            ));
        }
        Ok(())
    }

    /// The operator with nothing to manage: its memory floor.
    async fn empty(&mut self) -> Res<()> {
        self.warm_up().await?;
        self.start_operator().await?;
        let m = self.op.mem()?;
        self.rss_empty = Some(m);
        self.detail(
            "empty_operator",
            json!({"rss_kib": m.rss_kib, "hwm_kib": m.hwm_kib}),
        );
        Ok(())
    }

    /// The API server does some work once per resource on first use (e.g. the server-side-apply
    /// type converter of a CRD): one create and one status apply before anything is timed.
    async fn warm_up(&mut self) -> Res<()> {
        let ns = self.env.namespace("warm-up").await?;
        let api: Api<ConnectedAccount> = Api::namespaced(self.env.bench.clone(), &ns);
        let t = Instant::now();
        harness::create(&api, &harness::account("w", CONNECTION)?).await?;
        let created = t.elapsed().as_secs_f64() * 1000.0;
        let t = Instant::now();
        harness::patch_floor_status(&api, "w", &ns).await?;
        let patched = t.elapsed().as_secs_f64() * 1000.0;
        harness::delete_accounts(&self.env.admin, &ns, Duration::from_secs(30)).await?;
        harness::delete_namespace(&self.env.admin, &ns).await?;
        self.detail("warm_up_ms", json!({"create": created, "status_apply": patched}));
        Ok(())
    }

    /// For each N: floor, convergence, floor again (the machine is shared and noisy: the floor is
    /// the mean of the two readings that bracket the convergence). The steady-state window runs
    /// right after the last convergence, before its second floor.
    async fn convergence(&mut self) -> Res<()> {
        let p = self.p;
        let mut points = Vec::new();
        for (k, &n) in p.conv_sizes.iter().enumerate() {
            self.op.stop();
            let before = self.floor_run(n).await?;
            self.start_operator().await?;
            let conv = self.converge_run(n).await?;
            if k + 1 == p.conv_sizes.len() {
                let r = self.steady_state().await;
                self.record("4. steady state", r);
            }
            self.op.stop();
            let after = self.floor_run(n).await?;
            let floor = (before.secs + after.secs) / 2.0;
            let writes_per = before.writes.values().sum::<u64>() as f64 / n as f64;
            self.row(Row::new(
                "1. floor",
                &format!(
                    "N={n}: bare client, create + 1 status patch each, {} in flight",
                    p.concurrency
                ),
                format!(
                    "{floor:.2} s (before {:.2} s, after {:.2} s; {:.0} accounts/s, {writes_per:.1} writes/account)",
                    before.secs,
                    after.secs,
                    n as f64 / floor
                ),
                floor,
            ));
            let ratio = conv.secs / floor;
            let op_writes = conv.writes.values().sum::<u64>() as f64 / n as f64;
            let headline = n == p.headline;
            self.row(
                Row::new(
                    "2. convergence",
                    &format!("N={n}: until all PENDING_AUTH with a link"),
                    format!(
                        "{:.2} s ({:.0} accounts/s, {op_writes:.1} operator writes/account)",
                        conv.secs,
                        n as f64 / conv.secs
                    ),
                    conv.secs,
                )
                .baseline(format!("{floor:.2} s"), Some(ratio))
                .target(p.targets && headline, "≤ 1.3x floor", ratio <= 1.3),
            );
            points.push((n, floor, conv.secs));
            let run = |r: &Run, who: &str| json!({"secs": r.secs, "created_secs": r.created_secs, who: r.writes, "write_server_ms": r.server_ms, "cpu_s": r.cpu});
            self.detail(
                &format!("convergence_{n}"),
                json!({
                    "floor_before": run(&before, "bench_writes"),
                    "floor_after": run(&after, "bench_writes"),
                    "operator": run(&conv, "operator_writes"),
                }),
            );
        }
        if let (Some(first), Some(last)) = (points.first(), points.last())
            && points.len() > 1
        {
            let per = |n: usize, s: f64| s * 1000.0 / n as f64;
            let (a, b) = (per(first.0, first.2), per(last.0, last.2));
            let growth = b / a;
            self.row(
                Row::new(
                    "2. convergence",
                    &format!("growth: time per account, N={} vs N={}", last.0, first.0),
                    format!("{b:.2} ms/account"),
                    b,
                )
                .baseline(format!("{a:.2} ms/account"), Some(growth))
                .target(p.targets, "linear: ≤ 1.3x", growth <= 1.3),
            );
            let fl = per(last.0, last.1) / per(first.0, first.1);
            self.detail(
                "convergence_growth",
                json!({"points": points.iter().map(|(n, f, c)| json!({"n": n, "floor_s": f, "conv_s": c})).collect::<Vec<_>>(), "floor_growth": fl, "operator_growth": growth}),
            );
        }
        Ok(())
    }

    /// The floor: a bare client creates `n` accounts and patches each one's status once (the
    /// operator is stopped), timed until a watch has seen every status.
    async fn floor_run(&mut self, n: usize) -> Res<Run> {
        let p = self.p;
        let ns = self.env.namespace("floor").await?;
        let tracker = Tracker::start(&self.env.admin, &ns, has_link).await?;
        let api: Api<ConnectedAccount> = Api::namespaced(self.env.bench.clone(), &ns);
        let (offset, from, cpu0) = (self.audit_offset(), Timestamp::now(), self.cpu());
        let t0 = Instant::now();
        bounded(n, p.concurrency, |i| {
            let (api, ns) = (api.clone(), ns.clone());
            async move {
                let name = format!("a-{i}");
                let a = harness::account(&name, CONNECTION)?;
                harness::create(&api, &a).await?;
                harness::patch_floor_status(&api, &name, &ns).await
            }
        })
        .await?;
        let created_secs = t0.elapsed().as_secs_f64();
        let done = tracker.wait_count(n, conv_limit(n)).await?;
        let secs = done.duration_since(t0).as_secs_f64();
        let cpu = cpu_delta(&cpu0, &self.cpu());
        let all = self.writes(offset, from)?;
        let writes = breakdown(&all, BENCH_USER);
        let server_ms = harness::server_latency(&all, BENCH_USER);
        drop(tracker);
        harness::delete_accounts(&self.env.admin, &ns, Duration::from_secs(120)).await?;
        harness::delete_namespace(&self.env.admin, &ns).await?;
        Ok(Run {
            secs,
            created_secs,
            writes,
            server_ms,
            cpu,
        })
    }

    /// Convergence: `n` accounts created at the floor's concurrency while the operator runs.
    async fn converge_run(&mut self, n: usize) -> Res<Run> {
        let p = self.p;
        let ns = self.env.namespace("conv").await?;
        harness::create_connection(&self.env.admin, &ns).await?;
        harness::wait_connection_ready(&self.env.admin, &ns, CONNECTION).await?;
        let tracker = Tracker::start(&self.env.admin, &ns, has_link).await?;
        let reconciles0 = self.op.reconciles().await?;
        let (offset, from, cpu0) = (self.audit_offset(), Timestamp::now(), self.cpu());
        let t0 = Instant::now();
        harness::create_accounts(&self.env.bench, &ns, "a", n, p.concurrency, CONNECTION).await?;
        let created_secs = t0.elapsed().as_secs_f64();
        let done = tracker.wait_count(n, conv_limit(n)).await?;
        let secs = done.duration_since(t0).as_secs_f64();
        let cpu = cpu_delta(&cpu0, &self.cpu());
        self.env.add_accounts(n);
        let idle = self.op.wait_idle(reconciles0 as usize + n, conv_limit(n)).await?;
        let settle_secs = done.elapsed().as_secs_f64();
        let all = self.writes(offset, from)?;
        let writes = breakdown(&all, OPERATOR_USER);
        let server_ms = harness::server_latency(&all, OPERATOR_USER);
        let trailing = all
            .iter()
            .filter(|w| w.user == OPERATOR_USER && w.at > from + jiff::SignedDuration::from_secs_f64(secs))
            .count();
        self.detail(
            &format!("convergence_{n}_settle"),
            json!({
                "reconciles_per_account": (idle - reconciles0) as f64 / n as f64,
                "idle_after_s": settle_secs,
                "operator_writes_after_convergence": trailing,
            }),
        );
        if self.link_ns.is_none() {
            self.link_ns = Some(ns);
        }
        Ok(Run {
            secs,
            created_secs,
            writes,
            server_ms,
            cpu,
        })
    }

    /// The operator's writes and CPU in a window starting once it is idle after the last
    /// convergence (it still manages every account created so far).
    async fn steady_state(&mut self) -> Res<()> {
        let p = self.p;
        self.start_operator().await?;
        self.op.wait_idle(0, Duration::from_secs(120)).await?;
        let api0 = harness::apiserver_metrics(&self.env.admin).await?;
        let (offset, from) = (self.audit_offset(), Timestamp::now());
        let cpu0 = self.op.cpu()?;
        tokio::time::sleep(p.steady_window).await; // the measurement window itself
        let cpu = self.op.cpu()? - cpu0;
        let api1 = harness::apiserver_metrics(&self.env.admin).await?;
        let all = self.writes(offset, from)?;
        let op_writes = breakdown(&all, OPERATOR_USER);
        let count: u64 = op_writes.values().sum();
        let everyone = harness::apiserver_writes(&api1).saturating_sub(harness::apiserver_writes(&api0));
        let mut by_user: BTreeMap<String, u64> = BTreeMap::new();
        for w in &all {
            *by_user.entry(w.user.clone()).or_default() += 1;
        }
        let accounts = self.env.accounts();
        let window = p.steady_window.as_secs();
        // Operator writes per tenth of the window: a backlog draining shows as a steady rate.
        let mut tenths = [0u64; 10];
        for w in all.iter().filter(|w| w.user == OPERATOR_USER) {
            let f = w.at.duration_since(from).as_secs_f64() / p.steady_window.as_secs_f64();
            tenths[((f * 10.0) as usize).min(9)] += 1;
        }
        let what = op_writes
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", ");
        self.row(
            Row::new(
                "4. steady state",
                &format!("operator API writes in {window} s after convergence ({accounts} accounts)"),
                if count == 0 {
                    "0".into()
                } else {
                    format!("{count} ({what})")
                },
                count as f64,
            )
            .baseline(format!("{everyone} by all clients (apiserver /metrics)"), None)
            .target(p.targets, "0", count == 0),
        );
        self.row(Row::new(
            "4. steady state",
            &format!("operator CPU time in those {window} s"),
            format!("{cpu:.2} s ({:.2}% of one core)", cpu * 100.0 / window as f64),
            cpu,
        ));
        self.detail(
            "steady_state",
            json!({"window_s": window, "accounts": accounts, "operator_writes": op_writes,
                   "operator_writes_per_tenth_of_window": tenths,
                   "operator_write_server_ms": harness::server_latency(&all, OPERATOR_USER),
                   "audit_writes_by_user": by_user, "apiserver_writes_all_clients": everyone,
                   "operator_cpu_s": cpu}),
        );
        Ok(())
    }

    /// Creates `latency_n` accounts in `ns` one after another and returns each one's apply-to-link
    /// time in ms. With `floor`, the bench client patches the status itself right after the create
    /// (the floor an operator cannot beat).
    async fn apply_to_link(&self, ns: &str, floor: bool) -> Res<Vec<f64>> {
        let tracker = Tracker::start(&self.env.admin, ns, has_link).await?;
        let api: Api<ConnectedAccount> = Api::namespaced(self.env.bench.clone(), ns);
        let mut times = Vec::new();
        for i in 0..self.p.latency_n {
            let name = format!("l-{i}");
            let a = harness::account(&name, CONNECTION)?;
            let t = Instant::now();
            harness::create(&api, &a).await?;
            if floor {
                harness::patch_floor_status(&api, &name, ns).await?;
            }
            let seen = tracker.wait_name(&name, Duration::from_secs(30)).await?;
            times.push(seen.duration_since(t).as_secs_f64() * 1000.0);
        }
        Ok(times)
    }

    /// Apply-to-link time of single applies one after another, beside a bare client's create +
    /// status patch observed through the same watch.
    async fn latency(&mut self) -> Res<()> {
        let p = self.p;
        self.op.stop();
        let ns = self.env.namespace("lat-base").await?;
        let mut base = self.apply_to_link(&ns, true).await?;
        harness::delete_accounts(&self.env.admin, &ns, Duration::from_secs(60)).await?;
        harness::delete_namespace(&self.env.admin, &ns).await?;

        self.start_operator().await?;
        let ns = self.env.namespace("lat").await?;
        harness::create_connection(&self.env.admin, &ns).await?;
        harness::wait_connection_ready(&self.env.admin, &ns, CONNECTION).await?;
        let mut op = self.apply_to_link(&ns, false).await?;
        self.env.add_accounts(p.latency_n);
        base.sort_by(f64::total_cmp);
        op.sort_by(f64::total_cmp);
        let (b50, b99, o50, o99) = (
            percentile(&base, 50.0),
            percentile(&base, 99.0),
            percentile(&op, 50.0),
            percentile(&op, 99.0),
        );
        let n = p.latency_n;
        self.row(
            Row::new(
                "3. latency",
                &format!("apply-to-link p50 ({n} sequential applies)"),
                format!("{o50:.1} ms"),
                o50,
            )
            .baseline(format!("{b50:.1} ms (create + status patch)"), Some(o50 / b50))
            .target(p.targets, "≤ baseline + 50 ms", o50 - b50 <= 50.0),
        );
        self.row(
            Row::new("3. latency", "apply-to-link p99", format!("{o99:.1} ms"), o99)
                .baseline(format!("{b99:.1} ms"), Some(o99 / b99)),
        );
        self.detail(
            "latency",
            json!({"n": n, "operator_ms": {"p50": o50, "p90": percentile(&op, 90.0), "p99": o99, "max": op.last()},
                   "baseline_ms": {"p50": b50, "p90": percentile(&base, 90.0), "p99": b99, "max": base.last()}}),
        );
        Ok(())
    }

    /// Client-credentials accounts whose tokens expire together: every one renewed before it
    /// expires (worst margin), and the token endpoint never sees more than the limit at once.
    async fn refresh_wave(&mut self) -> Res<()> {
        let p = self.p;
        self.start_operator().await?;
        let ns = self.env.namespace("refresh").await?;
        let server = TokenServer::start(TokenServerConfig {
            expires_in: p.refresh_lifetime,
            ..Default::default()
        })
        .await;
        server.set_delay(p.refresh_delay);
        harness::connection(
            "cc",
            "test-secret",
            json!({"clientId": "test-client", "tokenUrl": server.token_url()}),
        )
        .auth_type("ClientCredentials")
        .create::<Connection>(&self.env.admin, &ns)
        .await?;
        harness::wait_connection_ready(&self.env.admin, &ns, "cc").await?;
        let wave = RefreshWatch::start(&self.env.admin, &ns).await?;
        let n = p.refresh_n;
        let t0 = Instant::now();
        harness::create_accounts(&self.env.bench, &ns, "r", n, p.concurrency, "cc").await?;
        // Obtaining is limited too: n / limit * delay at best.
        let obtain_limit =
            Duration::from_secs(60) + p.refresh_delay * (2 * n / p.refresh_limit.max(1)) as u32;
        wave.wait(|s| s.first.len() >= n, obtain_limit, "every account ACTIVE")
            .await?;
        let obtained_secs = t0.elapsed().as_secs_f64();
        let peak_obtain = server.peak_concurrency();
        server.reset_peak();
        let last_expiry = wave.last_expiry().unwrap_or_else(Timestamp::now);
        let until_last = last_expiry
            .duration_since(Timestamp::now())
            .as_secs_f64()
            .max(0.0);
        let limit = Duration::from_secs_f64(until_last) + Duration::from_secs(30);
        let waited = wave
            .wait(|s| s.renewed.len() >= n, limit, "every account renewed")
            .await;
        let peak = server.peak_concurrency();
        let (renewed, margins, late) = wave.margins();
        let worst = margins.first().copied().unwrap_or(f64::NAN);
        let wave_secs = t0.elapsed().as_secs_f64();
        let all_in_time = renewed == n && late == 0;
        let flag = if self.op.refresh_flag {
            "--refresh-concurrency"
        } else {
            "REFRESH_CONCURRENCY (this build has no --refresh-concurrency flag)"
        };
        self.row(
            Row::new(
                "5. refresh wave",
                &format!(
                    "{n} tokens of {} s expiring together: worst margin before expiry",
                    p.refresh_lifetime.as_secs()
                ),
                format!("{worst:.1} s ({renewed}/{n} renewed, {late} late)"),
                worst,
            )
            .target(p.targets, "all renewed before expiry", all_in_time && worst > 0.0),
        );
        self.row(
            Row::new(
                "5. refresh wave",
                &format!(
                    "peak concurrent token-endpoint calls ({} ms each)",
                    p.refresh_delay.as_millis()
                ),
                format!("{peak} (initial obtain: {peak_obtain})"),
                peak as f64,
            )
            .baseline(
                format!("limit {} ({flag})", p.refresh_limit),
                Some(peak as f64 / p.refresh_limit as f64),
            )
            .target(
                p.targets,
                "≤ limit",
                peak <= p.refresh_limit && peak_obtain <= p.refresh_limit,
            ),
        );
        self.detail(
            "refresh_wave",
            json!({"n": n, "lifetime_s": p.refresh_lifetime.as_secs(), "limit": p.refresh_limit,
                   "flag_supported": self.op.refresh_flag, "delay_ms": p.refresh_delay.as_millis() as u64,
                   "obtained_all_after_s": obtained_secs, "scenario_s": wave_secs,
                   "peak_obtain": peak_obtain, "peak_refresh": peak, "renewed": renewed, "late": late,
                   "margin_s": {"min": worst, "p50": percentile(&margins, 50.0), "max": margins.last()},
                   "token_requests": server.issued(), "wait_error": waited.err()}),
        );
        drop(wave);
        // Deleting the namespace runs the operator's clean-up of every account.
        harness::delete_namespace(&self.env.admin, &ns).await?;
        harness::wait_no_accounts(&self.env.admin, &ns, Duration::from_secs(300)).await?;
        drop(server);
        Ok(())
    }

    /// RSS with `memory_accounts` ConnectedAccounts and `memory_secrets` unrelated Secrets in the
    /// cluster: of the operator that converged them, and of a fresh start that synced them.
    async fn memory(&mut self) -> Res<()> {
        let p = self.p;
        self.start_operator().await?;
        let total = count_accounts(&self.env.admin).await?;
        let top_up = p.memory_accounts.saturating_sub(total);
        let ns = self.env.namespace("mem").await?;
        harness::create_connection(&self.env.admin, &ns).await?;
        harness::wait_connection_ready(&self.env.admin, &ns, CONNECTION).await?;
        let tracker = Tracker::start(&self.env.admin, &ns, has_link).await?;
        harness::create_accounts(&self.env.bench, &ns, "m", top_up, p.concurrency, CONNECTION).await?;
        tracker.wait_count(top_up, conv_limit(top_up)).await?;
        drop(tracker);
        self.env.add_accounts(top_up);
        let secrets_ns = self.env.namespace("unrelated").await?;
        let secrets: Api<Secret> = Api::namespaced(self.env.bench.clone(), &secrets_ns);
        let bytes = p.secret_bytes;
        bounded(p.memory_secrets, p.concurrency, |i| {
            let secrets = secrets.clone();
            async move {
                let s = unrelated_secret(i, bytes);
                harness::create(&secrets, &s).await
            }
        })
        .await?;
        self.op.wait_idle(0, Duration::from_secs(120)).await?;
        let accounts = count_accounts(&self.env.admin).await?;
        let long = self.op.mem()?;
        self.op.stop();
        self.start_operator().await?;
        let fresh = self.op.mem()?;
        let empty = self.rss_empty.unwrap_or_default();
        let mib = |kib: u64| kib as f64 / 1024.0;
        let per_k = (mib(fresh.rss_kib) - mib(empty.rss_kib)) / (accounts as f64 / 1000.0);
        let what = format!("{accounts} accounts + {} unrelated Secrets", p.memory_secrets);
        self.row(
            Row::new(
                "6. memory",
                &format!("RSS after a restart with {what}"),
                format!(
                    "{:.1} MiB (peak {:.1} MiB)",
                    mib(fresh.rss_kib),
                    mib(fresh.hwm_kib)
                ),
                mib(fresh.rss_kib),
            )
            .baseline(
                format!("{:.1} MiB with no accounts", mib(empty.rss_kib)),
                Some(fresh.rss_kib as f64 / empty.rss_kib.max(1) as f64),
            )
            .target(p.targets, "< 100 MiB", mib(fresh.rss_kib) < 100.0),
        );
        self.row(
            Row::new(
                "6. memory",
                "RSS of the operator that ran every scenario so far",
                format!("{:.1} MiB (peak {:.1} MiB)", mib(long.rss_kib), mib(long.hwm_kib)),
                mib(long.rss_kib),
            )
            .target(p.targets, "< 100 MiB", mib(long.rss_kib) < 100.0),
        );
        self.row(Row::new(
            "6. memory",
            "RSS per 1,000 accounts (restart RSS - empty RSS)",
            format!("{per_k:.2} MiB"),
            per_k,
        ));
        self.detail(
            "memory",
            json!({"accounts": accounts, "unrelated_secrets": p.memory_secrets, "secret_bytes": bytes,
                   "empty_kib": {"rss": empty.rss_kib, "hwm": empty.hwm_kib},
                   "restart_kib": {"rss": fresh.rss_kib, "hwm": fresh.hwm_kib},
                   "long_running_kib": {"rss": long.rss_kib, "hwm": long.hwm_kib},
                   "per_1000_accounts_mib": per_k}),
        );
        Ok(())
    }

    /// `/connect/{token}` of many PENDING_AUTH accounts under load from a separate process, with
    /// the controller running; beside `/healthz` of the same process under the same load.
    /// The judged rows of a gateway load run `r`: throughput and latency, beside `base`.
    fn gateway_rows(
        &mut self,
        what: String,
        latency: &str,
        r: &load::LoadResult,
        base: &load::LoadResult,
        base_name: &str,
    ) {
        self.load_rows(
            "7. gateway",
            (&what, latency),
            r,
            (base, base_name),
            (5000.0, 10.0),
        );
    }

    /// The rows of a load run `r` of `scenario`: throughput (`what`) and latency, beside `base`,
    /// judged against `targets` (at least that many req/s without errors, p99 under that many ms).
    pub(super) fn load_rows(
        &mut self,
        scenario: &str,
        (what, latency): (&str, &str),
        r: &load::LoadResult,
        (base, base_name): (&load::LoadResult, &str),
        (min_rps, max_p99_ms): (f64, f64),
    ) {
        let targets = self.p.targets;
        self.row(
            Row::new(
                scenario,
                what,
                format!("{:.0} req/s ({} errors)", r.rps, r.errors),
                r.rps,
            )
            .baseline(
                format!("{:.0} req/s {base_name}", base.rps),
                Some(r.rps / base.rps),
            )
            .target(
                targets,
                &format!("≥ {} req/s", thousands(min_rps)),
                r.rps >= min_rps && r.errors == 0,
            ),
        );
        self.row(
            Row::new(
                scenario,
                latency,
                format!("{:.2} / {:.2} ms", r.p50_ms, r.p99_ms),
                r.p99_ms,
            )
            .baseline(
                format!("{:.2} / {:.2} ms {base_name}", base.p50_ms, base.p99_ms),
                Some(r.p99_ms / base.p99_ms),
            )
            .target(targets, &format!("p99 < {max_p99_ms} ms"), r.p99_ms < max_p99_ms),
        );
    }

    /// The same load through nginx terminating TLS in front of the gateway (the chart's Ingress
    /// with `ingress.tls`), beside the plain run `plain`.
    async fn gateway_behind_tls(
        &mut self,
        gw: &str,
        paths: &[String],
        plain: &load::LoadResult,
    ) -> Res<Option<load::LoadResult>> {
        let p = self.p;
        if !tls::available() {
            self.row(Row::new(
                "7. gateway",
                "behind TLS termination (nginx)",
                "not run: nginx is not installed (scripts/install-deps.sh installs it)".into(),
                f64::NAN,
            ));
            return Ok(None);
        }
        let dir = self.env.cluster.dir().to_owned();
        let front = tls::TlsFront::start(&dir, gw).await?;
        let r = load::run(
            p.load,
            &front.url,
            paths,
            p.gateway_connections,
            p.gateway_duration,
            &dir,
            Some(&front.ca),
        )
        .await?;
        self.gateway_rows(
            "behind TLS termination (nginx, 1 process): /connect → 200 interstitial".into(),
            "behind TLS termination: latency p50 / p99",
            &r,
            plain,
            "plain HTTP",
        );
        Ok(Some(r))
    }

    async fn gateway(&mut self) -> Res<()> {
        let p = self.p;
        self.start_operator().await?;
        let ns = self
            .link_ns
            .clone()
            .ok_or("no namespace with PENDING_AUTH accounts")?;
        let api: Api<ConnectedAccount> = Api::namespaced(self.env.admin.clone(), &ns);
        let list = api
            .list(&ListParams::default().limit(p.gateway_links as u32))
            .await
            .map_err(|e| e.to_string())?;
        let gw = self.op.gateway_url();
        let paths: Vec<String> = list
            .items
            .iter()
            .filter_map(|a| a.status.as_ref()?.authorization_link.clone())
            .filter_map(|l| l.strip_prefix(&gw).map(str::to_owned))
            .collect();
        if paths.is_empty() {
            return Err(format!("no links under {gw} in {ns}"));
        }
        // One request by hand: the answer is the interstitial naming the provider (only its
        // Continue button goes there).
        let probe = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?
            .get(format!("{gw}{}", paths[0]))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = probe.status();
        let page = probe.text().await.map_err(|e| e.to_string())?;
        let provider_host = reqwest::Url::parse(harness::AUTHORIZATION_URL)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        if status != 200 || !page.contains("id=\"interstitial\"") || !page.contains(&provider_host) {
            return Err(format!("/connect answered {status}, not the interstitial"));
        }
        let dir = self.env.cluster.dir().to_owned();
        let admin = self.op.admin_url();
        let base = load::run(
            p.load,
            &admin,
            &["/healthz".to_owned()],
            p.gateway_connections,
            p.gateway_baseline_duration,
            &dir,
            None,
        )
        .await?;
        let m0 = self.op.metrics().await?;
        let api0 = harness::apiserver_metrics(&self.env.admin).await?;
        let cpu0 = self.cpu();
        let r = load::run(
            p.load,
            &gw,
            &paths,
            p.gateway_connections,
            p.gateway_duration,
            &dir,
            None,
        )
        .await?;
        let cpu = cpu_delta(&cpu0, &self.cpu());
        let api1 = harness::apiserver_metrics(&self.env.admin).await?;
        let m1 = self.op.metrics().await?;
        let pages = harness::metric_sum(&m1, "agentauth_gateway_requests_total", &[("status", "200")])
            - harness::metric_sum(&m0, "agentauth_gateway_requests_total", &[("status", "200")]);
        let gets: BTreeMap<&str, u64> = ["connectedaccounts", "connections", "secrets"]
            .into_iter()
            .map(|res| {
                let d = harness::apiserver_requests(&api1, "GET", res)
                    .saturating_sub(harness::apiserver_requests(&api0, "GET", res));
                (res, d)
            })
            .collect();
        let gets_per_request = gets.values().sum::<u64>() as f64 / r.requests.max(1) as f64;
        let secs = r.seconds.round();
        self.gateway_rows(
            format!(
                "/connect/{{token}} → 200 interstitial, {} links, {} connections, {secs:.0} s ({})",
                paths.len(),
                p.gateway_connections,
                r.tool
            ),
            "/connect latency p50 / p99",
            &r,
            &base,
            "/healthz",
        );
        let tls = self.gateway_behind_tls(&gw, &paths, &r).await?;
        self.detail(
            "gateway",
            json!({"connect": r, "healthz": base, "connect_behind_tls": tls,
                   "interstitials_counted_by_operator": pages,
                   "apiserver_gets_during_load": gets, "apiserver_gets_per_request": gets_per_request,
                   "cpu_s": cpu}),
        );
        Ok(())
    }
}

/// How long a convergence of `n` accounts may take before the run gives up.
fn conv_limit(n: usize) -> Duration {
    Duration::from_secs(60) + Duration::from_millis(40) * n as u32
}

/// A Secret the operator has no business with: no labels of its, `bytes` of data.
fn unrelated_secret(i: usize, bytes: usize) -> Secret {
    let blob: Vec<u8> = (0..bytes).map(|b| ((i * 31 + b * 7) % 251) as u8).collect();
    Secret {
        metadata: ObjectMeta {
            name: Some(format!("unrelated-{i}")),
            labels: Some(BTreeMap::from([("app".to_owned(), "someone-else".to_owned())])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "blob".to_owned(),
            k8s_openapi::ByteString(blob),
        )])),
        ..Default::default()
    }
}

/// ConnectedAccounts in the whole cluster.
async fn count_accounts(client: &kube::Client) -> Res<usize> {
    let api: Api<ConnectedAccount> = Api::all(client.clone());
    let mut total = 0;
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().limit(500);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = api.list_metadata(&lp).await.map_err(|e| e.to_string())?;
        total += page.items.len();
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            return Ok(total);
        }
    }
}

/// What the refresh watch saw, per account.
#[derive(Default)]
struct WaveState {
    /// First ACTIVE credential: (expires at, obtained at).
    first: HashMap<String, (Timestamp, Timestamp)>,
    /// Seconds between the moment a renewed status arrived and the expiry of the first token.
    renewed: HashMap<String, f64>,
}

/// Watches the refresh namespace: first credential of every account, then its renewal.
struct RefreshWatch {
    state: Arc<Mutex<WaveState>>,
    changed: tokio::sync::watch::Receiver<usize>,
    task: tokio::task::JoinHandle<()>,
}

impl RefreshWatch {
    async fn start(client: &kube::Client, ns: &str) -> Res<RefreshWatch> {
        let api: Api<ConnectedAccount> = Api::namespaced(client.clone(), ns);
        let state: Arc<Mutex<WaveState>> = Arc::default();
        let (tx, changed) = tokio::sync::watch::channel(0usize);
        let (init_tx, init_rx) = tokio::sync::oneshot::channel();
        let st = state.clone();
        let task = tokio::spawn(async move {
            let mut init = Some(init_tx);
            let stream = watcher(api, watcher::Config::default()).default_backoff();
            let mut stream = std::pin::pin!(stream);
            while let Some(ev) = stream.next().await {
                let a = match ev {
                    Ok(watcher::Event::InitDone) => {
                        if let Some(t) = init.take() {
                            let _ = t.send(());
                        }
                        continue;
                    }
                    Ok(watcher::Event::Apply(a) | watcher::Event::InitApply(a)) => a,
                    _ => continue,
                };
                let now = Timestamp::now();
                let Some(s) = a.status.as_ref().filter(|_| harness::is_active(&a)) else {
                    continue;
                };
                let (Some(exp), Some(got)) = (&s.expires_at, &s.last_refreshed_at) else {
                    continue;
                };
                let Ok(mut st) = st.lock() else { return };
                let name = a.name_any();
                match st.first.get(&name).copied() {
                    None => {
                        st.first.insert(name, (exp.0, got.0));
                    }
                    Some((first_exp, first_got)) if got.0 != first_got && !st.renewed.contains_key(&name) => {
                        let margin = first_exp.duration_since(now).as_secs_f64();
                        st.renewed.insert(name, margin);
                    }
                    Some(_) => continue,
                }
                tx.send_modify(|c| *c += 1);
            }
        });
        tokio::time::timeout(Duration::from_secs(30), init_rx)
            .await
            .map_err(|_| format!("watch on {ns} did not start"))?
            .map_err(|_| format!("watch on {ns} ended"))?;
        Ok(RefreshWatch { state, changed, task })
    }

    async fn wait(&self, done: impl Fn(&WaveState) -> bool, limit: Duration, what: &str) -> Res<()> {
        let mut rx = self.changed.clone();
        let deadline = Instant::now() + limit;
        loop {
            if self.state.lock().map(|s| done(&s)).unwrap_or(false) {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("timed out after {limit:?} waiting for {what}"));
            }
            if let Ok(Err(_)) = tokio::time::timeout(left, rx.changed()).await {
                return Err(format!("the watch ended before {what}"));
            }
        }
    }

    fn last_expiry(&self) -> Option<Timestamp> {
        self.state.lock().ok()?.first.values().map(|(e, _)| *e).max()
    }

    /// (renewed, margins ascending, renewed after expiry).
    fn margins(&self) -> (usize, Vec<f64>, usize) {
        let Ok(s) = self.state.lock() else {
            return (0, Vec::new(), 0);
        };
        let mut m: Vec<f64> = s.renewed.values().copied().collect();
        m.sort_by(f64::total_cmp);
        let late = m.iter().filter(|x| **x <= 0.0).count();
        (m.len(), m, late)
    }
}

impl Drop for RefreshWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `5000` as `5,000`.
fn thousands(n: f64) -> String {
    let digits = format!("{n:.0}");
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
