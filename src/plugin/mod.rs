//! `kubectl agentauth`: the kubectl plugin (binary `kubectl-agentauth`).
//!
//! kubectl runs `kubectl-agentauth` from `PATH` for `kubectl agentauth ...`. Commands:
//! - `status <account>`: state, Connection, Secret (name and existence only), timings, scopes, link
//!   expiry (never the link), the last Events; `-o json` prints the status as JSON;
//! - `link <account>`: only the current authorization link, to send to the user;
//! - `reauthorize <account> [--wait]`: sets `agentauth.dev/reauthorize` to the current time, and
//!   with `--wait` prints the new link once the operator issued it;
//! - `connect <connection> <identifier> [--cluster] [--wait]`: gets or creates (server-side apply,
//!   a deterministic name) the account of that user and prints its state and link, waiting for
//!   the link, and with `--wait` until the user authorized.
//!
//! [`format`] decides what is printed (pure, unit-tested); `cluster` makes the requests.

mod cli;
mod cluster;
mod error;
pub mod format;

use std::io::Write;

pub use cli::{Cli, Command, GlobalArgs, OutputFormat};
pub use error::Error;
use kube::ResourceExt as _;

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
        Command::Connect {
            connection,
            identifier,
            cluster,
            wait,
            timeout,
            output,
        } => {
            let kind = if cluster {
                crate::api::ConnectionKind::ClusterConnection
            } else {
                crate::api::ConnectionKind::Connection
            };
            check_connect_args(&connection, &identifier)?;
            let (account, created) = match target.find_account(&connection, kind, &identifier).await? {
                Some(a) => (a, false),
                None => {
                    let name = target.free_name(&connection, &identifier).await?;
                    let manifest = format::account_manifest(&name, &connection, kind, &identifier);
                    (target.apply_account(&name, &manifest).await?, true)
                }
            };
            let name = account.name_any();
            let link_wait = timeout.unwrap_or(cli::LINK_TIMEOUT);
            let account = if format::settled(&account) {
                account
            } else {
                target
                    .wait_account(&name, "the authorization link", link_wait, format::settled)
                    .await?
            };
            let print = |out: &mut dyn Write, a: &crate::api::ConnectedAccount, first: bool| match output {
                OutputFormat::Json => writeln!(out, "{}", format::connect_json(a, &ns, created)),
                OutputFormat::Text if first => write!(out, "{}", format::connect_text(a, created)),
                OutputFormat::Text => writeln!(out, "state:   ACTIVE"),
            };
            print(out, &account, true)?;
            if wait && !format::is_active(&account) {
                if let Some(why) = format::stuck(&account, &ns) {
                    return Err(Error::Stuck(why));
                }
                let active_wait = timeout.unwrap_or(cli::ACTIVE_TIMEOUT);
                writeln!(
                    err,
                    "waiting up to {} for the user to authorize {name}",
                    cli::show(active_wait)
                )?;
                out.flush()?;
                let done = |a: &crate::api::ConnectedAccount| {
                    format::is_active(a) || format::stuck(a, &ns).is_some()
                };
                let account = target.wait_account(&name, "ACTIVE", active_wait, done).await?;
                if let Some(why) = format::stuck(&account, &ns) {
                    return Err(Error::Stuck(why));
                }
                print(out, &account, false)?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// What the API server would refuse anyway, said before any request.
fn check_connect_args(connection: &str, identifier: &str) -> Result<(), Error> {
    let dns = !connection.is_empty()
        && connection.len() <= 253
        && connection
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && connection.starts_with(|c: char| c.is_ascii_alphanumeric())
        && connection.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !dns {
        return Err(Error::InvalidArgument(format!(
            "`{connection}` is not a Connection name (lowercase letters, digits, `-` and `.`)"
        )));
    }
    if identifier.trim().is_empty() || identifier.chars().any(char::is_control) {
        return Err(Error::InvalidArgument(
            "the identifier must be non-empty text without control characters".into(),
        ));
    }
    Ok(())
}
