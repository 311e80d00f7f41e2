//! The `hotplugd` binary: parse the command line, set up logging, run the
//! command, map the outcome to an exit status (documented in `--help` and
//! the README).

use std::io::Write;
use std::process::ExitCode;

use hotplugd::app::{self, AppError};
use hotplugd::cli::{self, Command};
use hotplugd::runner::default_builtins;
use hotplugd::sys::log::{self as logsink, LogTarget, Sink};

/// Exit statuses; see `hotplugd --help`.
const EXIT_CONFIG: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_SYSTEM: u8 = 3;
const EXIT_TIMEOUT: u8 = 4;

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
    // Before anything is opened: take --ready-fd (exit 3 if it is not
    // open) and mark inherited descriptors close-on-exec.
    let ready_fd = match &cli.command {
        Command::Run(o) => o.ready_fd,
        _ => None,
    };
    let inherited = match app::Inherited::claim(ready_fd) {
        Ok(i) => i,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "hotplugd: error: {e}");
            return ExitCode::from(EXIT_SYSTEM);
        }
    };
    if let Err(e) = init_logging(cli.verbose, &cli.log_target) {
        let _ = writeln!(std::io::stderr(), "hotplugd: --log-target: {e}");
        return ExitCode::from(EXIT_SYSTEM);
    }
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
        Command::Run(opts) => app::run_with(opts, default_builtins(), inherited),
        Command::Check(opts) => app::check(opts, &default_builtins()),
        Command::Replay(opts) => app::replay(opts, default_builtins()),
        Command::TestBuiltin(opts) => app::test_builtin(opts),
        Command::Info(opts) => hotplugd::tools::info::run(opts),
        Command::Test(opts) => hotplugd::tools::test::run(opts, &default_builtins()),
        Command::Trigger(opts) => hotplugd::tools::trigger::run(opts),
        Command::Settle(opts) => hotplugd::tools::settle::run(opts),
        Command::Wait(opts) => hotplugd::tools::wait::run(opts),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::from(match e {
                AppError::Config(_) => EXIT_CONFIG,
                AppError::System(_) => EXIT_SYSTEM,
                AppError::Timeout(_) => EXIT_TIMEOUT,
            })
        }
    }
}

/// One record per line: `hotplugd: LEVEL: message` on stderr, with a
/// priority prefix for kmsg and syslog. `RUST_LOG` wins over `-v`.
fn init_logging(verbose: u8, target: &LogTarget) -> std::io::Result<()> {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let sink = Sink::open(target)?;
    let env = env_logger::Env::default().default_filter_or(default);
    let pid = std::process::id();
    let mut b = env_logger::Builder::from_env(env);
    b.target(env_logger::Target::Pipe(Box::new(sink)));
    match target {
        LogTarget::Stderr => {
            b.format(|buf, r| writeln!(buf, "hotplugd: {}: {}", level(r.level()), r.args()))
        }
        LogTarget::Kmsg => b.format(move |buf, r| {
            let sev = logsink::severity(r.level());
            writeln!(
                buf,
                "<{sev}>hotplugd[{pid}]: {}: {}",
                level(r.level()),
                r.args()
            )
        }),
        LogTarget::Syslog(_) => b.format(move |buf, r| {
            let pri = logsink::FACILITY_DAEMON | logsink::severity(r.level());
            write!(buf, "<{pri}>")?;
            logsink::rfc3164_time(buf)?;
            writeln!(buf, " hotplugd[{pid}]: {}: {}", level(r.level()), r.args())
        }),
    };
    b.init();
    Ok(())
}

fn level(l: log::Level) -> &'static str {
    match l {
        log::Level::Error => "error",
        log::Level::Warn => "warn",
        log::Level::Info => "info",
        log::Level::Debug => "debug",
        log::Level::Trace => "trace",
    }
}
