//! The roles the driver starts on the hosts. Each reads commands from stdin, one
//! per line, and writes events to stdout, one per line, stamped with the wall
//! clock in nanoseconds since the Unix epoch. A role exits when its stdin closes
//! (the driver ended), so none outlives the run.
//!
//! | role | command | answer |
//! |---|---|---|
//! | watcher | `expect K` | `ready K`, later `seen K <ns>` when node K is first selected |
//! | watcher | `expect-gone K` | `watching-gone K`, later `gone K <ns>` when K is no longer selected |
//! | registrar | `register K` | `registered K <ns before register> <ns the call took>` |
//! | registrar | `deregister K` | `deregistered K` |
//! | node | (none) | `registered K` once its node is registered |
//!
//! Every role first prints `ready` once it is set up (the watcher: once it
//! selects the registrar's base node, so its cache follows the service).

use std::io::BufRead as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use micro::registry::{from_name, Endpoint, Node, Ownership, RegisterOptions, Registry, Service};
use micro::selector::{CacheSelector, SelectOptions, Selector, Strategy};
use tokio::sync::mpsc;

use crate::{Args, Role};

/// The service every node of the bench belongs to.
pub const SERVICE: &str = "bench-etcd";
/// The node metadata key the selections filter on.
const TRIAL: &str = "trial";
/// The trial number of the base node the registrar keeps registered.
pub const BASE: u64 = u64::MAX;
/// How often the watcher looks at its selection.
const POLL: Duration = Duration::from_millis(1);

/// Nanoseconds since the Unix epoch: a clock every process of the machine shares.
pub fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

pub async fn run(role: Role, etcd: &str, args: &Args) -> anyhow::Result<()> {
    let registry = from_name("etcd", &[etcd.to_string()], Ownership::Process)
        .with_context(|| format!("the etcd registry at {etcd}"))?;
    match role {
        Role::Watcher => watcher(registry).await,
        Role::Registrar => registrar(registry, args).await,
        Role::Node => {
            let trial = args.trial.context("--role node needs --trial")?;
            node(registry, trial, args).await
        }
    }
}

fn service(trial: u64) -> Service {
    let id = if trial == BASE {
        "base".to_string()
    } else {
        trial.to_string()
    };
    Service {
        name: SERVICE.into(),
        version: "latest".into(),
        endpoints: vec![Endpoint {
            name: "Bench.Call".into(),
            ..Default::default()
        }],
        nodes: vec![Node {
            id: format!("{SERVICE}-{id}-{}", std::process::id()),
            // Never dialled: the bench only selects.
            address: format!("127.0.0.1:{}", 1 + trial % 60_000),
            metadata: [(TRIAL.to_string(), id)].into_iter().collect(),
        }],
        ..Default::default()
    }
}

/// Lines of stdin, on a thread of their own; the channel closes at EOF.
fn stdin_lines() -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn parse(line: &str) -> anyhow::Result<(&str, u64)> {
    let mut words = line.split_whitespace();
    let (Some(verb), Some(k), None) = (words.next(), words.next(), words.next()) else {
        bail!("bad command {line:?}");
    };
    Ok((
        verb,
        k.parse()
            .with_context(|| format!("bad trial in {line:?}"))?,
    ))
}

/// Whether the selector selects node `trial` now (from its cache).
async fn selects(selector: &CacheSelector, trial: u64) -> anyhow::Result<bool> {
    let id = if trial == BASE {
        "base".to_string()
    } else {
        trial.to_string()
    };
    let filter = [(TRIAL.to_string(), id)];
    match selector
        .select(SERVICE, SelectOptions::new().node_metadata(&filter))
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if e.code() == 404 => Ok(false),
        Err(e) => bail!("selecting: {e}"),
    }
}

async fn watcher(registry: Arc<dyn Registry>) -> anyhow::Result<()> {
    let selector = CacheSelector::new(registry, Strategy::Random);
    // Follow the service: the first selection reads it and starts the watch.
    let start = Instant::now();
    while !selects(&selector, BASE).await? {
        if start.elapsed() > Duration::from_secs(30) {
            bail!("the registrar's base node was not selected within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("ready");
    let mut commands = stdin_lines();
    let mut appear: Vec<u64> = Vec::new();
    let mut vanish: Vec<u64> = Vec::new();
    loop {
        loop {
            match commands.try_recv() {
                Ok(line) => match parse(&line)? {
                    ("expect", k) => {
                        appear.push(k);
                        println!("ready {k}");
                    }
                    ("expect-gone", k) => {
                        vanish.push(k);
                        println!("watching-gone {k}");
                    }
                    _ => bail!("watcher: unknown command {line:?}"),
                },
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => return Ok(()),
            }
        }
        let mut i = 0;
        while i < appear.len() {
            if selects(&selector, appear[i]).await? {
                println!("seen {} {}", appear[i], now_ns());
                appear.swap_remove(i);
            } else {
                i += 1;
            }
        }
        let mut i = 0;
        while i < vanish.len() {
            if selects(&selector, vanish[i]).await? {
                i += 1;
            } else {
                println!("gone {} {}", vanish[i], now_ns());
                vanish.swap_remove(i);
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn registrar(registry: Arc<dyn Registry>, args: &Args) -> anyhow::Result<()> {
    let ttl = RegisterOptions { ttl: args.ttl() };
    let base = service(BASE);
    registry.register(&base, ttl).await?;
    // Renewed as a service renews its registration.
    let renew = {
        let registry = registry.clone();
        let base = base.clone();
        let interval = args.interval();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                if let Err(e) = registry.register(&base, ttl).await {
                    eprintln!("registrar: renewing the base node: {e}");
                }
            }
        })
    };
    println!("ready");
    let mut commands = stdin_lines();
    // The trial nodes live for the trial only; a long TTL spares their renewal.
    let long = RegisterOptions {
        ttl: Duration::from_secs(60),
    };
    while let Some(line) = commands.recv().await {
        match parse(&line)? {
            ("register", k) => {
                let record = service(k);
                let t0 = now_ns();
                let start = Instant::now();
                registry.register(&record, long).await?;
                println!("registered {k} {t0} {}", start.elapsed().as_nanos());
            }
            ("deregister", k) => {
                registry.deregister(&service(k)).await?;
                println!("deregistered {k}");
            }
            _ => bail!("registrar: unknown command {line:?}"),
        }
    }
    renew.abort();
    registry.deregister(&base).await?;
    Ok(())
}

async fn node(registry: Arc<dyn Registry>, trial: u64, args: &Args) -> anyhow::Result<()> {
    let ttl = RegisterOptions { ttl: args.ttl() };
    let record = service(trial);
    registry.register(&record, ttl).await?;
    println!("registered {trial}");
    let mut commands = stdin_lines();
    let mut ticker = tokio::time::interval(args.interval());
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if let Err(e) = registry.register(&record, ttl).await {
                    eprintln!("node {trial}: renewing: {e}");
                }
            }
            line = commands.recv() => {
                if line.is_none() {
                    // The driver is gone: leave as a stopping service would.
                    registry.deregister(&record).await?;
                    return Ok(());
                }
            }
        }
    }
}
