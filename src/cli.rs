//! Command-line interface: argument parsing and dispatch into the library. No logic of
//! its own beyond turning flags into configs and errors into exit codes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::server::{Config, Limits, Persist};
use crate::stack::ServerImpl;
use crate::stack::{StackInfo, StackOptions};

#[derive(Parser, Debug)]
#[command(
    name = "stompede",
    version,
    about = "Load-testing and benchmark harness for real-time chat on STOMP over WebSocket with Apache Kafka",
    long_about = "stompede ships a reference chat server (STOMP over WebSocket, Kafka between instances, \
PostgreSQL history), a local stack of real Kafka and PostgreSQL processes, and scenario-driven \
virtual users that measure end-to-end latency, Kafka consumer lag and DB write throughput.\n\n\
Typical session:\n  stompede stack up --brokers 1 --servers 2\n  stompede stack status\n  stompede stack down"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run one reference chat server instance.
    Server(ServerArgs),
    /// Start, inspect or stop the local stack (Kafka, PostgreSQL, servers).
    #[command(subcommand)]
    Stack(StackCommand),
    /// Run a scenario file and write its report (exit 0: SLOs hold, 1: an SLO failed,
    /// 2: bad scenario or usage, 3: the run could not be carried out).
    Run(RunArgs),
    /// Coordinate a run spread over worker processes on many machines: wait for
    /// --shards workers (`stompede worker`), give each its slice of the users, merge their
    /// results into one report (exit codes as `run`).
    #[command(
        long_about = "Coordinates one run over worker processes, typically one per machine or pod. \
The coordinator resolves the scenario's target, runs the Kafka and database samplers once, and waits \
(up to --wait) for --shards workers started with `stompede worker --coordinator HOST:PORT --shard K`. \
Each shard runs a contiguous slice of the virtual users on the coordinator's clock; at the end the \
coordinator adds their HdrHistograms (exact), settles delivery integrity over every shard's records \
(exact) and writes one report with a `shards` section (users, connections, deliveries, CPU and peak \
memory per shard).\n\n\
Latency is timed only between users on the same host (a worker names its host with $STOMPEDE_HOST, \
else its hostname); deliveries across hosts are counted for integrity, not timed.\n\n\
A shard that does not connect in time, dies, says nothing for --silence (it reports every second), \
or sends no final report is named in the report and \
fails the run (verdict shards_finished); its users count as not connected. Scenarios with [[faults]] \
cannot be sharded.\n\n\
Examples:\n  stompede coordinate scenarios/town-hall.toml --shards 4 --listen 0.0.0.0:7700\n  \
stompede worker --coordinator coordinator.example:7700 --shard 0\n\n\
See deploy/k8s/ for the same as a Kubernetes Indexed Job."
    )]
    Coordinate(CoordinateArgs),
    /// Run one shard of a coordinated run (see `coordinate`); with no --shard, the index
    /// comes from $JOB_COMPLETION_INDEX (a Kubernetes Indexed Job).
    Worker(WorkerArgs),
    /// CI regression gate: run a scenario N times and judge it against a recorded
    /// baseline (exit 0: pass, 1: regression or SLO failure, 2: usage or bad baseline,
    /// 3: could not run).
    #[command(
        long_about = "Runs the scenario N times (default 5) and judges the runs against a baseline of N runs \
recorded the same way. Per metric (latency p50, p99, p99.9, receipt p99, delivered/s, max Kafka lag, \
DB rows/s) a change is a regression only when a two-sided Mann-Whitney U test on the per-run values \
gives p < 0.05 AND the 95% bootstrap interval of the ratio of medians lies wholly beyond the \
tolerance; an improvement likewise; anything else is within noise. Integrity is exact (any lost or \
duplicated delivery fails) and the scenario's SLOs, including min_connected, max_unsent and \
harness_lag_ms, must hold in every run.\n\n\
A baseline recorded for another scenario, stack shape or machine size is flagged (a warning; with \
--strict, a refusal).\n\n\
Exit codes: 0 pass, 1 regression or SLO failure (or, when recording, a run that failed its SLOs or \
lost messages), 2 usage or bad baseline, 3 a run could not be carried out."
    )]
    Gate(GateArgs),
    /// Find the highest load that meets a scenario's SLOs (exit 0: a capacity was found,
    /// 1: even --from fails, 2: bad input, 3: could not run or harness-bound).
    Capacity(CapacityArgs),
    /// Run a scenario over a matrix of stack shapes (brokers, partitions, servers,
    /// persist, server implementation), reshaping the local stack between cells (exit 0: every run passed,
    /// 1: a run failed its SLOs or found no capacity, 2: bad input, 3: a run or the stack
    /// failed).
    Sweep(SweepArgs),
    /// Compare runs side by side from summary.json / capacity.json / sweep.json files (exit 0: written,
    /// 2: an input is unreadable or of another schema version, 3: could not write).
    Compare(CompareArgs),
}

/// Flags that reshape a local target (`[target]` brokers, partitions, servers, persist).
#[derive(Args, Debug, Clone, Default)]
pub struct ShapeArgs {
    /// Kafka brokers of the local stack: 1 or 3 (overrides target.brokers).
    #[arg(long, value_parser = parse_brokers)]
    pub brokers: Option<u8>,
    /// Partitions of the chat topic (overrides target.partitions).
    #[arg(long)]
    pub partitions: Option<u32>,
    /// Reference server instances (overrides target.servers).
    #[arg(long)]
    pub servers: Option<u32>,
    /// Persistence strategy: producer or consumer (overrides target.persist).
    #[arg(long, value_enum)]
    pub persist: Option<Persist>,
    /// Server implementation: stompede (the reference server) or spring (the Spring Boot
    /// peer of peers/spring-chat) (overrides target.server_impl).
    #[arg(long, value_enum)]
    pub server_impl: Option<ServerImpl>,
    /// Spring peer only: every instance in one fan-out consumer group (overrides
    /// target.shared_fanout_group); the report then splits the loss by the partitions
    /// each instance held.
    #[arg(long)]
    pub shared_fanout_group: bool,
}

impl ShapeArgs {
    pub fn overrides(&self) -> crate::load::target::ShapeOverrides {
        crate::load::target::ShapeOverrides {
            brokers: self.brokers.map(u32::from),
            partitions: self.partitions,
            servers: self.servers,
            persist: self.persist,
            server_impl: self.server_impl,
            shared_fanout_group: self.shared_fanout_group.then_some(true),
        }
    }
}

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  stompede run scenarios/smoke.toml\n  stompede run scenarios/town-hall.toml --duration 30s --rate 5\n\nThe scenario format is documented in scenarios/README.md."
)]
pub struct RunArgs {
    /// The scenario file (TOML).
    pub scenario: PathBuf,
    /// Where reports go: <out>/<scenario>-<UTC timestamp>/.
    #[arg(long, default_value = "reports")]
    pub out: PathBuf,
    /// Override the measured duration, e.g. 30s or 2m.
    #[arg(long, value_parser = parse_duration_arg)]
    pub duration: Option<Duration>,
    /// Override the warm-up, e.g. 5s.
    #[arg(long, value_parser = parse_duration_arg)]
    pub warmup: Option<Duration>,
    /// Override the open-model rate (messages/s, per room or per sender as the scenario says).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Override the number of virtual users.
    #[arg(long)]
    pub users: Option<u32>,
    /// No live status line (warnings are still counted and listed at the end).
    #[arg(long)]
    pub quiet: bool,
    /// Time between Kafka lag and database samples, e.g. 1s or 250ms (at least 1ms).
    #[arg(long, value_parser = parse_sample_interval, default_value = "1s")]
    pub sample_interval: Duration,
    /// Spread the users over N shards, merged into one report. `run`: N worker processes
    /// on this machine (each connects from its own loopback address; chosen by itself
    /// when the users exceed the files one process may open). `coordinate`: the number of
    /// workers that will connect.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=crate::shard::MAX_SHARDS as i64))]
    pub shards: Option<u32>,
    #[command(flatten)]
    pub shape: ShapeArgs,
    #[command(flatten)]
    pub dir: StackDirArgs,
}

#[derive(Args, Debug)]
pub struct CoordinateArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Address to listen on for workers.
    #[arg(long, default_value = "0.0.0.0:7700")]
    pub listen: SocketAddr,
    /// How long to wait for every worker to connect; missing shards fail the run.
    #[arg(long, value_parser = parse_duration_arg, default_value = "5m")]
    pub wait: Duration,
    /// A worker that sends nothing this long during the run (it reports every second),
    /// or leaves a counter round unanswered this long, is taken for lost and fails the run.
    #[arg(long, value_parser = parse_duration_arg, default_value = "30s")]
    pub silence: Duration,
}

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// The coordinator, HOST:PORT (it listens on 7700 unless told otherwise).
    #[arg(long)]
    pub coordinator: String,
    /// This worker's shard index, from 0 (default: $JOB_COMPLETION_INDEX).
    #[arg(long, env = "JOB_COMPLETION_INDEX")]
    pub shard: u32,
}

#[derive(Args, Debug)]
#[command(
    group(clap::ArgGroup::new("mode").required(true).args(["baseline", "record_baseline"])),
    after_help = "Examples:\n  \
stompede gate scenarios/smoke.toml --record-baseline ci/baseline.json\n  \
stompede gate scenarios/smoke.toml --baseline ci/baseline.json --junit gate.xml --markdown gate.md\n  \
stompede gate scenarios/smoke.toml --baseline ci/baseline.json --tolerance p50=10%,p99=15%,throughput=5%\n\n\
Tolerance metrics and defaults: p50=10%, p99=15%, p999=25%, receipt_p99=15%, throughput=5%, \
max_lag=100%, db_rows=10%.\n\
When $GITHUB_STEP_SUMMARY is set, the markdown summary is appended to it."
)]
pub struct GateArgs {
    /// The scenario file (TOML); keep it short (a few seconds measured) for CI.
    pub scenario: PathBuf,
    /// Judge the runs against this baseline file.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// Record a baseline into this file instead of judging.
    #[arg(long, value_name = "FILE")]
    pub record_baseline: Option<PathBuf>,
    /// Runs on this side (at least 5).
    #[arg(long, default_value_t = crate::campaign::gate::DEFAULT_RUNS)]
    pub runs: usize,
    /// Runs made first and not judged (the first runs on a fresh stack are slower).
    #[arg(long, default_value_t = crate::campaign::gate::DEFAULT_WARMUP_RUNS)]
    pub warmup_runs: usize,
    /// Tolerances over the defaults, e.g. p50=10%,p99=15%,throughput=5%.
    #[arg(
        long,
        value_name = "METRIC=PCT,...",
        conflicts_with = "record_baseline"
    )]
    pub tolerance: Option<String>,
    /// Write JUnit XML here (one testcase per metric, integrity and SLO).
    #[arg(long, value_name = "FILE", conflicts_with = "record_baseline")]
    pub junit: Option<PathBuf>,
    /// Write the markdown summary here.
    #[arg(long, value_name = "FILE", conflicts_with = "record_baseline")]
    pub markdown: Option<PathBuf>,
    /// Refuse a baseline recorded for another scenario, stack shape or machine size.
    #[arg(long, conflicts_with = "record_baseline")]
    pub strict: bool,
    /// Where each run's report goes: <out>/<scenario>-<UTC timestamp>/.
    #[arg(long, default_value = "reports")]
    pub out: PathBuf,
    /// Override the measured duration of every run, e.g. 3s.
    #[arg(long, value_parser = parse_duration_arg)]
    pub duration: Option<Duration>,
    /// Override the warm-up of every run, e.g. 1s.
    #[arg(long, value_parser = parse_duration_arg)]
    pub warmup: Option<Duration>,
    /// No live status line during the runs.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub dir: StackDirArgs,
}

#[derive(Args, Debug)]
#[command(
    after_help = "How it searches: each step is a whole run at one constant load (its own ramp-up and \
warm-up, then --step measured). The load doubles from --from until a step fails, then the gap \
between the highest passing and the lowest failing load is halved until it is within \
--resolution. A step passes only when every SLO holds, deliveries arriving while measuring reach \
99 % of those offered, nothing is lost, the Kafka lag is not growing (a slope over the step's \
samples) and the harness kept its schedule; a step where the harness was the limit ends the \
search as \"harness-bound\", never as a capacity.\n\n\
A local target is brought up once for every step (or the running stack is used, if its shape \
matches). Reports land in <out>/capacity-<scenario>-<UTC timestamp>/: capacity.json, \
capacity.html, charts, and each step's own report under steps/.\n\n\
Examples:\n  stompede capacity scenarios/town-hall.toml\n  \
stompede capacity scenarios/town-hall.toml --from 4 --step 20s --resolution 10% --confirm 2\n  \
stompede capacity scenarios/group-chat.toml --over users --from 500 --max 8000"
)]
pub struct CapacityArgs {
    /// The scenario file (TOML); it must use the open model.
    pub scenario: PathBuf,
    /// What to vary: the open-model rate (as the scenario counts it: per room or per
    /// sender), or the number of users (room memberships scale with them).
    #[arg(long, value_enum, default_value = "rate")]
    pub over: OverArg,
    /// First load (default: the scenario's own rate or user count).
    #[arg(long)]
    pub from: Option<f64>,
    /// Highest load to try (default: 1024 × --from).
    #[arg(long)]
    pub max: Option<f64>,
    /// Stop when the failing and passing loads are this close, e.g. 5% or 10%.
    #[arg(long, value_parser = parse_percent, default_value = "5%")]
    pub resolution: f64,
    /// Measured time per step, e.g. 30s.
    #[arg(long, value_parser = parse_duration_arg, default_value = "30s")]
    pub step: Duration,
    /// Warm-up per step (default: the scenario's).
    #[arg(long, value_parser = parse_duration_arg)]
    pub warmup: Option<Duration>,
    /// Run the final value this many more times; a failure sends the search below it.
    #[arg(long, default_value_t = 0)]
    pub confirm: u32,
    /// Where reports go: <out>/capacity-<scenario>-<UTC timestamp>/.
    #[arg(long, default_value = "reports")]
    pub out: PathBuf,
    /// No live status line during each step.
    #[arg(long)]
    pub quiet: bool,
    /// Time between Kafka lag and database samples, e.g. 1s or 250ms.
    #[arg(long, value_parser = parse_sample_interval, default_value = "1s")]
    pub sample_interval: Duration,
    #[command(flatten)]
    pub shape: ShapeArgs,
    #[command(flatten)]
    pub dir: StackDirArgs,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Cells are every combination of the --set values over the scenario's own [target] shape. \
The sweep starts a stack of its own (a stack already running in the state directory is refused) and \
reshapes it between cells, restarting only what must change: another broker count restarts the \
whole stack; another partition count stops the servers, deletes and recreates the chat topic and \
starts them again; another server count, persist strategy or server implementation restarts the servers. Before each run \
the shape is read back from the brokers' metadata and each server's /metrics; a stack that reads \
back otherwise ends the sweep. Every run starts from an empty topic and history table and freshly \
started servers.\n\n\
With one repeat the cells run in matrix order, the broker count changing least often. With \
--repeat N every round runs each cell once in a shuffled order (--seed fixes it), so drift on a \
shared machine spreads over every cell; each figure shows the median and the range of the repeats.\n\n\
Output <out>/sweep-<scenario>-<UTC timestamp>/: sweep.json (rewritten after every run), sweep.html \
(a row per cell, best highlighted; latency curves overlaid; p99 and capacity bars), charts, and \
each run's own report.\n\n\
Examples:\n  stompede sweep scenarios/group-chat.toml --set partitions=1,3,6,12 --set brokers=1,3\n  \
stompede sweep scenarios/smoke.toml --set persist=producer,consumer --set servers=1,2,4 --repeat 3\n  \
stompede sweep scenarios/town-hall.toml --set server_impl=stompede,spring\n  \
stompede sweep scenarios/town-hall.toml --set partitions=1,6 --capacity --step 10s --resolution 10%"
)]
pub struct SweepArgs {
    /// The scenario file (TOML); its target must be the local stack.
    pub scenario: PathBuf,
    /// An axis and its values, e.g. partitions=1,3,6 (axes: brokers, partitions, servers,
    /// persist, server_impl). Repeat for more axes.
    #[arg(long = "set", value_name = "NAME=V1,V2,...", value_parser = crate::campaign::sweep::parse_set, required = true)]
    pub set: Vec<crate::report::sweep::Axis>,
    /// Runs per cell; rounds of every cell, each round in a shuffled order.
    #[arg(long, default_value_t = 1)]
    pub repeat: u32,
    /// Seed of the shuffled order (default: drawn, and recorded in sweep.json).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Each cell is a capacity search (with the settings below) instead of one run.
    #[arg(long)]
    pub capacity: bool,
    /// With --capacity: what to vary (see `stompede capacity --help`).
    #[arg(long, value_enum, default_value = "rate", requires = "capacity")]
    pub over: OverArg,
    /// With --capacity: first load (default: the scenario's).
    #[arg(long, requires = "capacity")]
    pub from: Option<f64>,
    /// With --capacity: highest load to try (default: 1024 × --from).
    #[arg(long, requires = "capacity")]
    pub max: Option<f64>,
    /// With --capacity: stop when failing and passing loads are this close.
    #[arg(long, value_parser = parse_percent, default_value = "5%", requires = "capacity")]
    pub resolution: f64,
    /// With --capacity: measured time per step.
    #[arg(long, value_parser = parse_duration_arg, default_value = "30s", requires = "capacity")]
    pub step: Duration,
    /// With --capacity: warm-up per step (default: the scenario's).
    #[arg(long, value_parser = parse_duration_arg, requires = "capacity")]
    pub warmup: Option<Duration>,
    /// With --capacity: extra runs of each cell's final value.
    #[arg(long, default_value_t = 0, requires = "capacity")]
    pub confirm: u32,
    /// Where reports go: <out>/sweep-<scenario>-<UTC timestamp>/.
    #[arg(long, default_value = "reports")]
    pub out: PathBuf,
    /// No live status line during each run.
    #[arg(long)]
    pub quiet: bool,
    /// Time between Kafka lag and database samples, e.g. 1s or 250ms.
    #[arg(long, value_parser = parse_sample_interval, default_value = "1s")]
    pub sample_interval: Duration,
    #[command(flatten)]
    pub dir: StackDirArgs,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum OverArg {
    Rate,
    Users,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Each input is a summary.json of `stompede run`, a capacity.json of `stompede capacity` \
(its knee step is compared), a sweep.json of `stompede sweep` (one entry per cell: its run with the \
median p99), or a report directory holding one. The first input is the \
reference for relative columns. Writes <out>/compare-<UTC timestamp>/ with comparison.json, \
compare.html and compare-latency.png.\n\n\
Examples:\n  stompede compare reports/town-hall-20250101T120000Z reports/town-hall-20250102T120000Z\n  \
stompede compare reports/capacity-town-hall-*/capacity.json"
)]
pub struct CompareArgs {
    /// Two or more summary.json / capacity.json / sweep.json files or report directories
    /// (one sweep alone is enough: its cells are compared).
    #[arg(required = true, num_args = 1..)]
    pub inputs: Vec<PathBuf>,
    /// Where the comparison goes: <out>/compare-<UTC timestamp>/.
    #[arg(long, default_value = "reports")]
    pub out: PathBuf,
}

/// `5%` or `5` → 0.05.
fn parse_percent(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let v: f64 = t
        .strip_suffix('%')
        .unwrap_or(t)
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage; write e.g. 5%"))?;
    if !(v > 0.0 && v < 100.0) {
        return Err("must be between 0% and 100%, e.g. 5%".into());
    }
    Ok(v / 100.0)
}

fn parse_sample_interval(s: &str) -> Result<Duration, String> {
    let d = crate::scenario::parse_duration(s)?;
    if d < crate::load::samplers::MIN_SAMPLE_INTERVAL {
        return Err("must be at least 1ms".into());
    }
    if d > Duration::from_secs(3600) {
        return Err("must be at most 1h".into());
    }
    Ok(d)
}

fn parse_brokers(s: &str) -> Result<u8, String> {
    match s.trim() {
        "1" => Ok(1),
        "3" => Ok(3),
        _ => Err(
            "must be 1 (one combined node) or 3 (a 3-voter quorum, RF 3, min.insync.replicas 2)"
                .into(),
        ),
    }
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    crate::scenario::parse_duration(s)
}

/// Exit codes of `stompede run`.
pub mod exit {
    pub const PASSED: u8 = 0;
    pub const SLO_FAILED: u8 = 1;
    pub const BAD_INPUT: u8 = 2;
    pub const RUN_FAILED: u8 = 3;
}

/// How `run_with` carries a run out.
enum Mode {
    /// One process, or local shards when given (or needed).
    Local,
    /// Workers elsewhere connect to this listener.
    Coordinate {
        listener: TcpListener,
        wait: Duration,
        silence: Duration,
    },
}

pub async fn run(args: RunArgs) -> u8 {
    run_with(args, Mode::Local).await
}

/// `stompede coordinate`.
pub async fn coordinate(args: CoordinateArgs) -> u8 {
    if args.run.shards.is_none() {
        eprintln!("error: coordinate needs --shards N: how many workers will connect (each runs 1/N of the users)");
        return exit::BAD_INPUT;
    }
    let listener = match TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "error: cannot listen on {} for workers: {e} (choose another --listen address)",
                args.listen
            );
            return exit::RUN_FAILED;
        }
    };
    let bound = listener.local_addr().unwrap_or(args.listen);
    if !args.run.quiet {
        eprintln!(
            "waiting up to {:?} for {} workers on {bound} (stompede worker --coordinator THIS_HOST:{} --shard K)",
            args.wait,
            args.run.shards.unwrap_or(1),
            bound.port()
        );
    }
    run_with(
        args.run,
        Mode::Coordinate {
            listener,
            wait: args.wait,
            silence: args.silence,
        },
    )
    .await
}

/// `stompede worker`: exit 0 when its part was run and reported, 3 otherwise.
pub async fn worker(args: WorkerArgs) -> u8 {
    let host = crate::shard::host_name();
    match crate::shard::worker::work(&args.coordinator, args.shard, &host).await {
        Ok(()) => exit::PASSED,
        Err(e) => {
            eprintln!("error: shard {}: {e}", args.shard);
            exit::RUN_FAILED
        }
    }
}

async fn run_with(args: RunArgs, mode: Mode) -> u8 {
    let mut scenario = match crate::scenario::Scenario::from_file(&args.scenario) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::BAD_INPUT;
        }
    };
    let overrides = crate::scenario::Overrides {
        duration: args.duration,
        rate: args.rate,
        users: args.users,
        warmup: args.warmup,
    };
    if let Err(e) = scenario.apply_overrides(&overrides) {
        eprintln!("error: {e}");
        return exit::BAD_INPUT;
    }
    if let Err(e) = args.shape.overrides().apply(&mut scenario) {
        eprintln!("error: {e}");
        return exit::BAD_INPUT;
    }
    let server_exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: cannot find the stompede binary to start servers with: {e}");
            return exit::RUN_FAILED;
        }
    };
    let options = crate::load::RunOptions {
        out: args.out,
        state_dir: args.dir.state_dir,
        server_exe,
        progress: !args.quiet,
        sample_interval: args.sample_interval,
    };
    let shards = args.shards.or_else(|| {
        let needed = crate::shard::shards_needed(u64::from(scenario.users.count));
        if let Some(n) = needed {
            eprintln!(
                "{} users need more files than one process may open: running {n} local shards",
                scenario.users.count
            );
        }
        needed
    });
    let run = async {
        match (mode, shards) {
            (
                Mode::Coordinate {
                    listener,
                    wait,
                    silence,
                },
                shards,
            ) => {
                let shards = shards.unwrap_or(1);
                let launch = crate::shard::coordinator::Launch {
                    shards,
                    listener,
                    patience: wait,
                    silence,
                    sources: vec![None; shards as usize],
                };
                crate::shard::coordinator::coordinate(scenario, &options, launch).await
            }
            (Mode::Local, Some(n)) if n > 1 => crate::shard::run_local(scenario, &options, n).await,
            (Mode::Local, _) => crate::load::run(scenario, &options).await,
        }
    };
    tokio::pin!(run);
    let outcome = tokio::select! {
        outcome = &mut run => outcome,
        _ = termination() => {
            eprintln!("interrupted: stopping (a stack this run started is taken down)");
            return exit::RUN_FAILED;
        }
    };
    match outcome {
        Ok(outcome) => {
            print!("{}", crate::report::console_table(&outcome.summary));
            println!(
                "report: {}",
                outcome.dir.join(crate::report::HTML_FILE).display()
            );
            if outcome.summary.passed {
                exit::PASSED
            } else {
                for v in outcome.summary.slo.iter().filter(|v| !v.passed) {
                    eprintln!(
                        "SLO failed: {} = {} {}, limit {} {}",
                        v.name,
                        v.measured,
                        v.unit,
                        v.bound.symbol(),
                        v.limit
                    );
                }
                exit::SLO_FAILED
            }
        }
        Err(e)
            if e.is_bad_input()
                || matches!(&e, crate::load::LoadError::Target(t) if t.is_bad_input()) =>
        {
            eprintln!("error: {e}");
            exit::BAD_INPUT
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::RUN_FAILED
        }
    }
}

/// `stompede gate`: records a baseline or judges against one.
pub async fn gate(args: GateArgs) -> u8 {
    let gate = crate::campaign::gate::cli(
        crate::campaign::gate::CliRequest {
            scenario: args.scenario,
            baseline: args.baseline,
            record_baseline: args.record_baseline,
            runs: args.runs,
            warmup_runs: args.warmup_runs,
            tolerance: args.tolerance,
            junit: args.junit,
            markdown: args.markdown,
            strict: args.strict,
            overrides: crate::scenario::Overrides {
                duration: args.duration,
                warmup: args.warmup,
                ..Default::default()
            },
        },
        crate::load::RunOptions {
            out: args.out,
            state_dir: args.dir.state_dir,
            server_exe: std::env::current_exe().unwrap_or_else(|_| "stompede".into()),
            progress: !args.quiet,
            sample_interval: Duration::from_secs(1),
        },
    );
    tokio::pin!(gate);
    tokio::select! {
        code = &mut gate => code,
        _ = termination() => {
            eprintln!("interrupted: stopping (a stack the gate started is taken down)");
            exit::RUN_FAILED
        }
    }
}

pub async fn capacity(args: CapacityArgs) -> u8 {
    use crate::campaign::capacity::{self, CapacityOptions};
    use crate::report::capacity::{step_header, step_row};
    use crate::report::{Outcome, Over};
    let mut scenario = match crate::scenario::Scenario::from_file(&args.scenario) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::BAD_INPUT;
        }
    };
    if let Err(e) = args.shape.overrides().apply(&mut scenario) {
        eprintln!("error: {e}");
        return exit::BAD_INPUT;
    }
    let server_exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: cannot find the stompede binary to start servers with: {e}");
            return exit::RUN_FAILED;
        }
    };
    let over = match args.over {
        OverArg::Rate => Over::Rate,
        OverArg::Users => Over::Users,
    };
    let options = CapacityOptions {
        over,
        from: args.from,
        max: args.max,
        resolution: args.resolution,
        step: args.step,
        warmup: args.warmup,
        confirm: args.confirm,
        out: args.out.clone(),
        run: crate::load::RunOptions {
            out: args.out,
            state_dir: args.dir.state_dir,
            server_exe,
            progress: !args.quiet,
            sample_interval: args.sample_interval,
        },
    };
    let mut printed_header = false;
    let mut on_step = move |step: &crate::report::CapacityStep| {
        if !printed_header {
            print!("{}", step_header(over));
            printed_header = true;
        }
        print!("{}", step_row(over, step));
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
    };
    let search = capacity::search(scenario, &options, &mut on_step);
    tokio::pin!(search);
    let outcome = tokio::select! {
        outcome = &mut search => outcome,
        _ = termination() => {
            eprintln!("interrupted: stopping (a stack this search started is taken down)");
            return exit::RUN_FAILED;
        }
    };
    match outcome {
        Ok(outcome) => {
            println!("{}", outcome.report.answer);
            println!(
                "report: {}",
                outcome
                    .dir
                    .join(crate::report::capacity::CAPACITY_HTML)
                    .display()
            );
            match outcome.report.outcome {
                Outcome::Capacity | Outcome::AtLeastMax => exit::PASSED,
                Outcome::NoCapacity => exit::SLO_FAILED,
                Outcome::HarnessBound => exit::RUN_FAILED,
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            if e.is_bad_input() {
                exit::BAD_INPUT
            } else {
                exit::RUN_FAILED
            }
        }
    }
}

pub async fn sweep(args: SweepArgs) -> u8 {
    use crate::campaign::capacity::CapacityOptions;
    use crate::campaign::sweep::{self, SweepOptions};
    use crate::report::Over;
    let scenario = match crate::scenario::Scenario::from_file(&args.scenario) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::BAD_INPUT;
        }
    };
    let server_exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: cannot find the stompede binary to start servers with: {e}");
            return exit::RUN_FAILED;
        }
    };
    let run = crate::load::RunOptions {
        out: args.out.clone(),
        state_dir: args.dir.state_dir,
        server_exe,
        progress: !args.quiet,
        sample_interval: args.sample_interval,
    };
    let capacity = args.capacity.then(|| CapacityOptions {
        over: match args.over {
            OverArg::Rate => Over::Rate,
            OverArg::Users => Over::Users,
        },
        from: args.from,
        max: args.max,
        resolution: args.resolution,
        step: args.step,
        warmup: args.warmup,
        confirm: args.confirm,
        out: args.out.clone(),
        run: run.clone(),
    });
    let options = SweepOptions {
        axes: args.set,
        repeat: args.repeat,
        seed: args.seed,
        capacity,
        out: args.out,
        run,
    };
    let mut on_run = |s: &crate::report::sweep::Sweep, e: crate::report::sweep::Execution| {
        let cell = &s.cells[e.cell];
        let Some(r) = cell.runs.last() else { return };
        let figures = match (&r.error, &r.capacity, &r.summary) {
            (Some(err), _, _) => format!("could not run: {err}"),
            (None, Some(c), _) => c.answer.clone(),
            (None, None, Some(sum)) => format!(
                "delivered {}/s, p50 {} ms, p99 {} ms, lost {}, {}",
                crate::report::format_rate(sum.throughput.delivered_per_s),
                crate::report::format_number(sum.latency.corrected.p50_us as f64 / 1000.0),
                crate::report::format_number(sum.latency.corrected.p99_us as f64 / 1000.0),
                crate::report::format_count(sum.integrity.lost),
                if r.passed() { "PASS" } else { "FAIL" }
            ),
            _ => "no figures".into(),
        };
        println!(
            "[{}/{}] {} #{} ({}): {figures}",
            s.order.len(),
            s.cells.len() * s.repeat as usize,
            cell.label,
            e.repeat,
            r.reshape
        );
    };
    let run_sweep = sweep::sweep(scenario, &options, &mut on_run);
    tokio::pin!(run_sweep);
    let outcome = tokio::select! {
        outcome = &mut run_sweep => outcome,
        _ = termination() => {
            eprintln!("interrupted: the sweep's stack is stopped; sweep.json keeps the runs finished so far");
            return exit::RUN_FAILED;
        }
    };
    match outcome {
        Ok(outcome) => {
            let s = &outcome.sweep;
            print!("{}", crate::report::sweep::console_table(s));
            println!(
                "report: {}",
                outcome.dir.join(crate::report::sweep::SWEEP_HTML).display()
            );
            let runs: Vec<&crate::report::sweep::CellRun> =
                s.cells.iter().flat_map(|c| c.runs.iter()).collect();
            if let Some(why) = &outcome.down_error {
                eprintln!("error: the sweep's stack could not be taken down: {why}");
            }
            if let Some(why) = &s.stopped {
                eprintln!("error: {why}");
                exit::RUN_FAILED
            } else if outcome.down_error.is_some() || runs.iter().any(|r| r.error.is_some()) {
                exit::RUN_FAILED
            } else if runs.iter().all(|r| r.passed()) {
                exit::PASSED
            } else {
                exit::SLO_FAILED
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            if e.is_bad_input() {
                exit::BAD_INPUT
            } else {
                exit::RUN_FAILED
            }
        }
    }
}

pub fn compare(args: CompareArgs) -> u8 {
    match crate::campaign::compare::compare(&args.inputs, &args.out) {
        Ok(outcome) => {
            print!(
                "{}",
                crate::report::compare::console_table(&outcome.comparison)
            );
            println!(
                "report: {}",
                outcome
                    .dir
                    .join(crate::report::compare::COMPARE_HTML)
                    .display()
            );
            exit::PASSED
        }
        Err(e) => {
            eprintln!("error: {e}");
            if e.is_bad_input() {
                exit::BAD_INPUT
            } else {
                exit::RUN_FAILED
            }
        }
    }
}

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Address for STOMP over WebSocket (path /ws-stomp). Port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Kafka bootstrap servers, comma separated.
    #[arg(long, env = "STOMPEDE_KAFKA", default_value = "127.0.0.1:9092")]
    pub kafka: String,
    /// PostgreSQL URL for chat history.
    #[arg(
        long,
        env = "STOMPEDE_DB",
        default_value = "postgres://stompede@127.0.0.1:5432/stompede"
    )]
    pub db: String,
    /// This instance's id; its fan-out consumer group is stompede-fanout-<id>.
    #[arg(long, default_value = "s1")]
    pub instance_id: String,
    /// Where history is written: after the Kafka ack (producer) or by a consumer group (consumer).
    #[arg(long, value_enum, default_value_t = Persist::Producer)]
    pub persist: Persist,
    /// Kafka topic for chat messages (must exist).
    #[arg(long, default_value = "chat.messages")]
    pub topic: String,
    /// Address for /metrics (Prometheus) and /healthz.
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    /// Largest STOMP frame accepted, in bytes.
    #[arg(long, default_value_t = Limits::default().max_frame_size)]
    pub max_frame_size: usize,
    /// Outbound frames queued per session before it is disconnected as a slow consumer.
    #[arg(long, default_value_t = Limits::default().session_queue)]
    pub session_queue: usize,
    /// Most open WebSocket sessions; further connections are refused.
    #[arg(long, default_value_t = Limits::default().max_connections)]
    pub max_connections: usize,
    /// Heart-beat the server offers and expects, in milliseconds (0 disables).
    #[arg(long, default_value_t = 10_000)]
    pub heartbeat_ms: u64,
    /// How long to keep retrying Kafka at start while it answers "not ready yet"
    /// (coordinator loading, no leader, unknown topic, broker unreachable), e.g. 60s.
    #[arg(long, default_value = "60s", value_parser = parse_duration_arg)]
    pub kafka_start_timeout: Duration,
}

#[derive(Subcommand, Debug)]
pub enum StackCommand {
    /// Start Kafka, PostgreSQL and server instances; returns when all are ready.
    Up(StackUpArgs),
    /// Stop exactly the processes `up` started and remove scratch data.
    Down(StackDirArgs),
    /// Show the running stack's endpoints.
    Status(StackStatusArgs),
    /// Measure each part of the running stack alone with its own tool, beside the
    /// reference server's code driving the same part: Kafka's ProducerPerformance against
    /// the server's producer, Kafka's EndToEndLatency against the server's producer and
    /// fan-out consumer, pgbench's 500-row inserts against the server's database writer
    /// (fed as each persistence mode feeds it). Uses scratch topics and a scratch
    /// database, removed at the end; run it on a stack with nothing else running.
    ///
    /// Example: stompede stack up && stompede stack baseline
    Baseline(StackBaselineArgs),
}

#[derive(Args, Debug)]
pub struct StackBaselineArgs {
    /// Records each producer sends (Kafka's and the server's).
    #[arg(long, default_value_t = 2_000_000)]
    pub records: u64,
    /// Records sent one at a time by each end-to-end latency measurement.
    #[arg(long, default_value_t = 10_000)]
    pub messages: u32,
    /// Rows the server's database writer writes in each of its two modes.
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: u64,
    /// How long pgbench runs.
    #[arg(long, default_value = "10s", value_parser = parse_duration_arg)]
    pub pgbench_time: Duration,
    /// Rounds of each throughput measurement (Kafka produce, PostgreSQL inserts); the
    /// tool and the server's code take turns to go first, and the median is reported
    /// beside each round's figure.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Print the figures as JSON (progress still goes to standard error).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub dir: StackDirArgs,
}

#[derive(Args, Debug)]
pub struct StackUpArgs {
    /// Kafka brokers: 1 (one combined node) or 3 (3-voter quorum, RF 3, min.insync.replicas 2).
    #[arg(long, default_value_t = 1, value_parser = parse_brokers)]
    pub brokers: u8,
    /// Partitions of the chat topic.
    #[arg(long, default_value_t = 3)]
    pub partitions: u32,
    /// Reference server instances to start.
    #[arg(long, default_value_t = 2)]
    pub servers: u32,
    /// Persistence strategy of the servers.
    #[arg(long, value_enum, default_value_t = Persist::Producer)]
    pub persist: Persist,
    /// Which chat server the instances run. `spring` builds peers/spring-chat with Maven
    /// on first use (cached under ~/.cache/stompede/spring-chat, rebuilt when its sources
    /// change) and starts one JVM per instance; it persists on the producer side and sends
    /// no RECEIPTs.
    #[arg(long, value_enum, default_value_t = ServerImpl::Stompede)]
    pub server_impl: ServerImpl,
    /// Spring peer only: start every instance in one fan-out consumer group instead of one
    /// each. Each instance then consumes only its share of the partitions, and subscribers
    /// on the other instances miss those rooms' messages: the classic misconfiguration,
    /// reproduced on purpose.
    #[arg(long)]
    pub shared_fanout_group: bool,
    /// Kafka topic for chat messages.
    #[arg(long, default_value = "chat.messages")]
    pub topic: String,
    #[command(flatten)]
    pub dir: StackDirArgs,
}

#[derive(Args, Debug)]
pub struct StackDirArgs {
    /// Where the stack keeps its state, logs and scratch data.
    #[arg(long, env = "STOMPEDE_STATE", default_value = ".stompede")]
    pub state_dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct StackStatusArgs {
    /// Print the endpoints as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub dir: StackDirArgs,
}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn termination() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

pub async fn server(args: ServerArgs) -> anyhow::Result<()> {
    // Every WebSocket session is a descriptor: use all the hard limit allows.
    match crate::limits::raise_nofile() {
        Some(l) => tracing::info!("open-file limit: {} (hard limit {})", l.soft, l.hard),
        None => tracing::warn!("cannot read the open-file limit (RLIMIT_NOFILE)"),
    }
    let mut config = Config::new(&args.kafka, &args.db, &args.instance_id);
    config.kafka_start_timeout = args.kafka_start_timeout;
    config.persist = args.persist;
    config.topic = args.topic;
    config.metrics_listen = args.metrics_listen;
    config.limits.max_frame_size = args.max_frame_size;
    config.limits.session_queue = args.session_queue;
    config.limits.max_connections = args.max_connections;
    let beat = Duration::from_millis(args.heartbeat_ms);
    config.limits.heartbeat = (beat, beat);
    let listener = TcpListener::bind(args.listen).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {}: {e} (is another server on that port? try --listen 127.0.0.1:0)",
            args.listen
        )
    })?;
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        termination().await;
        tracing::info!("shutting down: draining sends, the producer and the database queue (a second signal exits at once)");
        trigger.cancel();
        termination().await;
        tracing::error!("second signal: exiting without draining");
        std::process::exit(130);
    });
    crate::server::run(listener, config, shutdown, |_| {}).await?;
    Ok(())
}

pub async fn stack(command: StackCommand) -> anyhow::Result<()> {
    match command {
        StackCommand::Up(args) => {
            let server_exe = std::env::current_exe().map_err(|e| {
                anyhow::anyhow!("cannot find the stompede binary to start servers with: {e}")
            })?;
            let options = StackOptions {
                brokers: args.brokers,
                partitions: args.partitions,
                servers: args.servers,
                persist: args.persist,
                server_impl: args.server_impl,
                shared_fanout_group: args.shared_fanout_group,
                topic: args.topic,
                state_dir: args.dir.state_dir,
                server_exe,
                detach: true,
            };
            let stack = crate::stack::up(&options).await?;
            print!("{}", describe(stack.info()));
            println!("stop it with: stompede stack down");
            Ok(())
        }
        StackCommand::Down(dir) => Ok(crate::stack::down(&dir.state_dir).await?),
        StackCommand::Baseline(args) => {
            let options = crate::stack::baseline::BaselineOptions {
                state_dir: args.dir.state_dir,
                records: args.records,
                messages: args.messages,
                rows: args.rows,
                pgbench_time: args.pgbench_time,
                rounds: args.rounds,
            };
            let baseline = crate::stack::baseline::run(&options).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&baseline)?);
            } else {
                print!("{}", crate::stack::baseline::describe(&baseline));
            }
            Ok(())
        }
        StackCommand::Status(args) => match crate::stack::status(&args.dir.state_dir)? {
            Some(info) if args.json => {
                println!("{}", serde_json::to_string_pretty(&info)?);
                Ok(())
            }
            Some(info) => {
                print!("{}", describe(&info));
                Ok(())
            }
            None if args.json => {
                println!("null");
                Ok(())
            }
            None => {
                println!(
                    "no stack running (state dir {}); start one with: stompede stack up",
                    args.dir.state_dir.display()
                );
                Ok(())
            }
        },
    }
}

/// The endpoints of a stack, for people.
fn describe(info: &StackInfo) -> String {
    let alive = |a: Option<bool>| match a {
        Some(false) => " (not running)",
        _ => "",
    };
    let mut out = String::new();
    out += &format!(
        "kafka       {} (Apache Kafka {}, {} broker(s))\n",
        info.kafka_bootstrap,
        info.kafka_version,
        info.brokers.len()
    );
    for b in &info.brokers {
        out += &format!(
            "  broker {}  127.0.0.1:{}  pid {}{}  log {}\n",
            b.node_id,
            b.port,
            b.pid,
            alive(b.alive),
            b.log.display()
        );
    }
    out += &format!(
        "topic       {} ({} partitions, replication factor {}, min.insync.replicas {})\n",
        info.topic, info.partitions, info.replication_factor, info.min_insync_replicas
    );
    out += &format!(
        "postgres    {}  pid {}{}  log {}\n",
        info.postgres.url,
        info.postgres.pid,
        alive(info.postgres.alive),
        info.postgres.log.display()
    );
    for s in &info.servers {
        out += &format!(
            "server {:<4} {}  metrics {}  pid {}{}  log {}\n",
            s.instance_id,
            s.ws_url,
            s.metrics_url,
            s.pid,
            alive(s.alive),
            s.log.display()
        );
    }
    out += &format!("persist     {}\n", info.persist.as_str());
    out += &format!(
        "servers     {}{}\n",
        info.server_impl.as_str(),
        if info.shared_fanout_group {
            format!(
                ", one shared fan-out group ({})",
                info.fanout_groups().join("")
            )
        } else {
            String::new()
        }
    );
    out
}
