//! `kubectl agentauth`: the kubectl plugin (binary `kubectl-agentauth`).
//!
//! kubectl runs `kubectl-agentauth` from `PATH` for `kubectl agentauth ...`. Commands:
//! - `status <account>`: state, Connection, Secret (name and existence only), timings, scopes, link
//!   expiry (never the link), the last Events; `-o json` prints the status as JSON;
//! - `link <account>`: only the current authorization link, to send to the user;
//! - `reauthorize <account> [--wait]`: sets `agentauth.dev/reauthorize` to the current time, and
//!   with `--wait` prints the new link once the operator issued it.
//!
//! [`format`] decides what is printed (pure, unit-tested); `cluster` makes the requests.

mod cli;
mod cluster;
mod error;
pub mod format;

use std::io::Write;

pub use cli::{Cli, Command, GlobalArgs, OutputFormat};
pub use error::Error;

/// Runs one command: results on `out`, notes and warnings on `err`. The caller prints a returned
/// error on stderr and exits with status 1.
pub async fn run(cli: Cli, out: &mut dyn Write, err: &mut dyn Write) -> Result<(), Error> {
    let target = cluster::connect(&cli.global).await?;
    let ns = target.namespace.clone();
    match cli.command {
        Command::Status { account, output } => {
            let account = target.account(&account).await?;
            match output {
                OutputFormat::Json => writeln!(out, "{}", format::status_json(&account)?)?,
                OutputFormat::Text => {
                    let (connection, secret_exists, events) = futures::join!(
                        target.connection(&account),
                        target.secret_exists(&account),
                        target.events(&account),
                    );
                    let view = format::StatusView {
                        account: &account,
                        namespace: &ns,
                        connection,
                        secret_exists,
                        events,
                    };
                    write!(out, "{}", format::status_text(&view, jiff::Timestamp::now()))?;
                }
            }
        }
        Command::Link { account } => {
            let account = target.account(&account).await?;
            let link = format::current_link(&account, &ns)?;
            if let Some(warning) = format::link_warning(&account, jiff::Timestamp::now()) {
                writeln!(err, "{warning}")?;
            }
            writeln!(out, "{link}")?;
        }
        Command::Reauthorize {
            account,
            wait,
            timeout,
        } => {
            let current = target.account(&account).await?;
            format::check_reauthorizable(&current)?;
            let value = jiff::Timestamp::now().to_string();
            target.request_reauthorization(&account, &value).await?;
            if !wait {
                writeln!(out, "{}", format::reauthorize_requested(&account, &ns, &value))?;
                return Ok(());
            }
            writeln!(
                err,
                "reauthorization of {account} requested; waiting up to {} for the new link",
                cli::show(timeout)
            )?;
            let link = target.wait_for_link(&account, &value, timeout).await?;
            writeln!(out, "{link}")?;
        }
    }
    out.flush()?;
    Ok(())
}
