//! HTTP(S) load against the gateway: `wrk` (Debian's package, a separate process, rotating over many
//! URLs with a Lua script), or an in-process loop (the smoke test; no binary needed).
#![allow(dead_code)] // the smoke test uses a part of this module

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentauth_testcluster::Proc;
use serde::Serialize;

use crate::harness::{Res, percentile};

/// What a load run measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    pub tool: String,
    pub connections: usize,
    pub seconds: f64,
    pub requests: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Responses >= 400 plus socket errors and timeouts.
    pub errors: u64,
    /// Open-loop runs ([`at_rate`]): how late the latest request was sent, in ms.
    pub late_ms: Option<f64>,
}

/// Which load generator to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Tool {
    Wrk,
    InProcess,
}

pub fn wrk_available() -> bool {
    std::process::Command::new("wrk")
        .arg("--version")
        .output()
        .is_ok()
}

/// One request of a load run: a GET of `path`, or a POST of a form `body` to it.
#[derive(Debug, Clone)]
pub struct Req {
    pub path: String,
    pub form: Option<String>,
}

impl Req {
    pub fn get(path: &str) -> Req {
        Req {
            path: path.to_owned(),
            form: None,
        }
    }
}

/// Runs `tool` against `base` + each of `paths` in turn for `duration`. An `https` base is
/// verified against `ca` by the in-process client (wrk verifies no certificate).
pub async fn run(
    tool: Tool,
    base: &str,
    paths: &[String],
    connections: usize,
    duration: Duration,
    dir: &Path,
    ca: Option<&Path>,
) -> Res<LoadResult> {
    let requests: Vec<Req> = paths.iter().map(|p| Req::get(p)).collect();
    run_requests(tool, base, &requests, connections, duration, dir, ca).await
}

/// [`run`] with any mix of GETs and form POSTs.
pub async fn run_requests(
    tool: Tool,
    base: &str,
    requests: &[Req],
    connections: usize,
    duration: Duration,
    dir: &Path,
    ca: Option<&Path>,
) -> Res<LoadResult> {
    match tool {
        Tool::Wrk => wrk(base, requests, connections, duration, dir).await,
        Tool::InProcess => in_process(base, requests, connections, duration, ca).await,
    }
}

/// `wrk -t2 -c<connections> -d<duration>` with a Lua script that rotates over `requests` and
/// prints its summary as JSON (microsecond percentiles straight from wrk's histogram).
pub async fn wrk(
    base: &str,
    requests: &[Req],
    connections: usize,
    duration: Duration,
    dir: &Path,
) -> Res<LoadResult> {
    // Lua's %q-style quoting is Rust's Debug for these ASCII paths and form bodies.
    let quoted: Vec<String> = requests
        .iter()
        .map(|r| match &r.form {
            None => format!("  wrk.format(\"GET\", {:?}),", r.path),
            Some(b) => format!(
                "  wrk.format(\"POST\", {:?}, {{[\"Content-Type\"] = \"application/x-www-form-urlencoded\"}}, {b:?}),",
                r.path
            ),
        })
        .collect();
    let script = format!(
        r#"local reqs
local n = 0
init = function(args)
  reqs = {{
{}
  }}
end
request = function()
  n = n + 1
  return reqs[(n % #reqs) + 1]
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCHJSON {{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,"status":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.status, e.connect, e.read, e.write, e.timeout))
end
"#,
        quoted.join("\n")
    );
    let script_path = dir.join("wrk-paths.lua");
    std::fs::write(&script_path, script).map_err(|e| e.to_string())?;
    let threads = connections.clamp(1, 2);
    let args = vec![
        format!("-t{threads}"),
        format!("-c{connections}"),
        format!("-d{}s", duration.as_secs().max(1)),
        "--timeout=10s".to_owned(),
        "-s".to_owned(),
        script_path.display().to_string(),
        base.to_owned(),
    ];
    let name = format!("wrk-{}", std::process::id());
    let mut p = Proc::spawn(dir, &name, Path::new("wrk"), &args, &[])?;
    let deadline = Instant::now() + duration + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = p.exited() {
            break s;
        }
        if Instant::now() > deadline {
            p.kill();
            return Err(format!("wrk did not finish:\n{}", p.log_tail(20)));
        }
        tokio::time::sleep(Duration::from_millis(200)).await; // poll interval
    };
    let out = std::fs::read_to_string(p.log_path()).map_err(|e| e.to_string())?;
    let json = out
        .lines()
        .find_map(|l| l.strip_prefix("BENCHJSON "))
        .ok_or_else(|| format!("wrk ({status}) printed no summary:\n{out}"))?;
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("{e}: {json}"))?;
    let n = |k: &str| v[k].as_f64().unwrap_or(0.0);
    let seconds = n("duration_us") / 1e6;
    let requests = n("requests") as u64;
    Ok(LoadResult {
        tool: "wrk".into(),
        connections,
        seconds,
        requests,
        rps: requests as f64 / seconds.max(1e-9),
        p50_ms: n("p50_us") / 1000.0,
        p99_ms: n("p99_us") / 1000.0,
        max_ms: n("max_us") / 1000.0,
        errors: ["status", "connect", "read", "write", "timeout"]
            .iter()
            .map(|k| n(k) as u64)
            .sum(),
        late_ms: None,
    })
}

/// `connections` client loops in this process, each sending one request at a time.
pub async fn in_process(
    base: &str,
    requests: &[Req],
    connections: usize,
    duration: Duration,
    ca: Option<&Path>,
) -> Res<LoadResult> {
    client_loops(base, requests, connections, duration, ca, None).await
}

/// An open-loop load at `rate` requests per second over `connections` loops in this process:
/// request `i` is due at `i / rate` after the start, and each loop sends its share on time, so the
/// rate does not drop when answers slow down. Latency is measured per request, from sending to
/// the whole answer read; `late_ms` says how late the latest request was sent (how well the
/// generator kept the schedule; tokio's timer has 1 ms granularity).
pub async fn at_rate(
    base: &str,
    requests: &[Req],
    connections: usize,
    rate: f64,
    duration: Duration,
) -> Res<LoadResult> {
    client_loops(base, requests, connections, duration, None, Some(rate)).await
}

async fn client_loops(
    base: &str,
    requests: &[Req],
    connections: usize,
    duration: Duration,
    ca: Option<&Path>,
    rate: Option<f64>,
) -> Res<LoadResult> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10));
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
        builder =
            builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).map_err(|e| e.to_string())?);
    }
    let client = builder.build().map_err(|e| e.to_string())?;
    let urls: Arc<Vec<(String, Option<String>)>> = Arc::new(
        requests
            .iter()
            .map(|r| (format!("{base}{}", r.path), r.form.clone()))
            .collect(),
    );
    if urls.is_empty() {
        return Err("no URLs to load".into());
    }
    let started = Instant::now();
    let deadline = started + duration;
    let loops = connections.max(1);
    let mut tasks = Vec::new();
    for c in 0..loops {
        let (client, urls) = (client.clone(), urls.clone());
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors, mut i, mut late) = (Vec::new(), 0u64, c, 0f64);
            while Instant::now() < deadline {
                if let Some(rate) = rate {
                    let due = started + Duration::from_secs_f64(i as f64 / rate);
                    if due >= deadline {
                        break;
                    }
                    tokio::time::sleep_until(due.into()).await;
                    late = late.max(due.elapsed().as_secs_f64() * 1000.0);
                }
                let t = Instant::now();
                let (url, form) = &urls[i % urls.len()];
                let request = match form {
                    None => client.get(url),
                    Some(body) => client
                        .post(url)
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(body.clone()),
                };
                let ok = match request.send().await {
                    Ok(r) => r.status().as_u16() < 400 && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                if !ok {
                    errors += 1;
                }
                i += if rate.is_some() { loops } else { 1 };
            }
            (lat, errors, late)
        }));
    }
    let (mut all, mut errors, mut latest) = (Vec::new(), 0, 0f64);
    for t in tasks {
        let (lat, e, late) = t.await.map_err(|e| e.to_string())?;
        all.extend(lat);
        errors += e;
        latest = latest.max(late);
    }
    let seconds = if rate.is_some() {
        duration.as_secs_f64()
    } else {
        started.elapsed().as_secs_f64()
    };
    all.sort_by(f64::total_cmp);
    Ok(LoadResult {
        tool: match rate {
            Some(r) => format!("in-process, open loop at {r:.0} req/s"),
            None => "in-process".into(),
        },
        connections,
        seconds,
        requests: all.len() as u64,
        rps: all.len() as f64 / seconds,
        p50_ms: percentile(&all, 50.0),
        p99_ms: percentile(&all, 99.0),
        max_ms: all.last().copied().unwrap_or(f64::NAN),
        errors,
        late_ms: rate.map(|_| latest),
    })
}
