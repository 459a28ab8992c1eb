//! The `c19` binary: `c19 agent` (and `c19 --config FILE`, as C19 0.1 deployments run it),
//! `c19 operator` and `c19 crd`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use c19::config::Config;
use c19::logging::{self, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "c19",
    version,
    about = "The C19 gossip state agent and its Kubernetes operator"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Agent config file (C19 0.1 format), used when no subcommand is given.
    #[arg(long, env = "C19_CONFIG", default_value = "config.yaml")]
    config: PathBuf,
    /// Log format: human-readable text or one JSON object per line.
    #[arg(
        long,
        global = true,
        env = "C19_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an agent: the app API on 3097 and the peer API on 4097.
    Agent {
        /// Agent config file (C19 0.1 format).
        #[arg(long, env = "C19_CONFIG", default_value = "config.yaml")]
        config: PathBuf,
    },
    /// Run the operator: C19Groups become pods with the agent as a native sidecar.
    Operator(Box<c19::operator::run::OperatorArgs>),
    /// Print the C19Group CustomResourceDefinition as YAML (`c19 crd | kubectl apply -f -`).
    Crd {
        /// Apply it to the cluster (server-side, as field manager c19-crd) instead, and wait
        /// until it is established: how the Helm chart upgrades the CRD.
        #[arg(long)]
        apply: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    match cli.command {
        Some(Command::Agent { config }) => agent(config),
        Some(Command::Operator(args)) => operator(*args),
        Some(Command::Crd { apply: false }) => {
            print!("{}", c19::operator::crd::crd_yaml());
            ExitCode::SUCCESS
        }
        Some(Command::Crd { apply: true }) => {
            let runtime = tokio::runtime::Runtime::new().expect("starting the tokio runtime");
            match runtime.block_on(c19::operator::install::apply_crd()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e, 1),
            }
        }
        None => agent(cli.config),
    }
}

fn agent(path: PathBuf) -> ExitCode {
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => return fail(&e, 2),
    };
    let runtime = tokio::runtime::Runtime::new().expect("starting the tokio runtime");
    match runtime.block_on(c19::runtime::run_agent(config, c19::runtime::termination())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e, e.exit_code()),
    }
}

fn operator(args: c19::operator::run::OperatorArgs) -> ExitCode {
    let runtime = tokio::runtime::Runtime::new().expect("starting the tokio runtime");
    match runtime.block_on(c19::operator::run::run(args, c19::runtime::termination())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e, e.exit_code()),
    }
}

fn fail(e: &dyn std::fmt::Display, code: u8) -> ExitCode {
    eprintln!("c19: {e}");
    ExitCode::from(code)
}
