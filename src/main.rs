//! The `hotplugd` binary: parse the command line, set up logging, run the
//! command, map the outcome to an exit status (documented in `--help` and
//! the README).

use std::io::Write;
use std::process::ExitCode;

use hotplugd::app::{self, AppError};
use hotplugd::cli::{self, Command};
use hotplugd::runner::default_builtins;

/// Exit statuses; see `hotplugd --help`.
const EXIT_CONFIG: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_SYSTEM: u8 = 3;

fn main() -> ExitCode {
    let cli = match cli::parse(std::env::args_os().skip(1)) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "hotplugd: {e}\n(`hotplugd --help` lists the commands and options)"
            );
            return ExitCode::from(EXIT_USAGE);
        }
    };
    init_logging(cli.verbose);
    let result = match &cli.command {
        Command::Help(text) => {
            let _ = std::io::stdout().write_all(text.as_bytes());
            Ok(())
        }
        Command::Version => {
            let _ = writeln!(std::io::stdout(), "hotplugd {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Monitor(opts) => app::monitor(opts),
        Command::Run(opts) => app::run(opts, default_builtins()),
        Command::Check(opts) => app::check(opts, &default_builtins()),
        Command::Replay(opts) => app::replay(opts, default_builtins()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::from(match e {
                AppError::Config(_) => EXIT_CONFIG,
                AppError::System(_) => EXIT_SYSTEM,
            })
        }
    }
}

/// `hotplugd: LEVEL: message` on stderr. `RUST_LOG` wins over `-v`.
fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let env = env_logger::Env::default().default_filter_or(default);
    env_logger::Builder::from_env(env)
        .format(|buf, record| {
            let level = match record.level() {
                log::Level::Error => "error",
                log::Level::Warn => "warn",
                log::Level::Info => "info",
                log::Level::Debug => "debug",
                log::Level::Trace => "trace",
            };
            writeln!(buf, "hotplugd: {level}: {}", record.args())
        })
        .init();
}
