//! `goose node --config <file>`: a TOML file whose keys are the long flags of `goose node`
//! without their dashes (`listen = "10.0.0.1:9900"`, `peer = ["2=10.0.0.2:9900"]`,
//! `single = true`); flags on the command line override it, a repeatable flag given there
//! replacing the file's list.
//!
//! The file is not interpreted here: each key becomes the flag it names, and the command
//! line is parsed again with the file's flags first, so a key and its flag are checked by
//! the one same parser (clap's, with the value parsers in `main.rs`) and refused with the
//! same words. What this module checks is only what TOML adds: keys that name no flag,
//! values of a type no flag takes, and a flag given a list that takes one value.

use std::ffi::OsString;
use std::fs;
use std::path::Path;

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches};

/// The largest config file read: far above any real one, small enough that a wrong path
/// (a log, a disk image) is refused rather than read whole.
const CONFIG_FILE_SIZE_MAX: u64 = 1 << 20;

/// Which keys of the file a subcommand takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Keys {
    /// Every key must be one of its flags (`goose node`).
    All,
    /// Keys that are its flags; the others are skipped (`goose vip-release` reads the
    /// node's own file for the few flags it shares with `goose node`).
    OwnOnly,
}

/// The command line a subcommand (`goose node`) runs with: its own arguments as given
/// (`given`, everything after the subcommand's name), with the config file's flags before
/// them, leaving out every flag `matches` (the command line parsed alone) got from the
/// command line.
///
/// # Errors
///
/// A message naming the file: unreadable, not TOML, a key that is no flag of the subcommand
/// (or is `config`) when it takes [`Keys::All`], or a value of the wrong type.
pub(crate) fn merge(
    path: &Path,
    node: &clap::Command,
    matches: &ArgMatches,
    given: &[OsString],
    keys: Keys,
) -> Result<Vec<OsString>, String> {
    let shown = path.display();
    let size = fs::metadata(path)
        .map_err(|error| format!("--config {shown}: {error}"))?
        .len();
    if size > CONFIG_FILE_SIZE_MAX {
        return Err(format!(
            "--config {shown}: {size} bytes; a config file holds at most {CONFIG_FILE_SIZE_MAX}"
        ));
    }
    let text = fs::read_to_string(path).map_err(|error| format!("--config {shown}: {error}"))?;
    let table: toml::Table = text
        .parse()
        .map_err(|error| format!("--config {shown}: not TOML: {error}"))?;
    let mut merged = Vec::new();
    for (key, value) in &table {
        let long = key.replace('_', "-");
        let arg = node
            .get_arguments()
            .find(|arg| arg.get_long() == Some(long.as_str()) && !arg.is_hide_set())
            .filter(|arg| arg.get_id() != "config");
        let arg = match (arg, keys) {
            (Some(arg), _) => arg,
            (None, Keys::OwnOnly) => continue,
            (None, Keys::All) => {
                return Err(format!(
                    "--config {shown}: `{key}` is no flag of goose node (the keys are its long \
                     flags without the dashes, e.g. listen, peer, heartbeat-ms)"
                ))
            }
        };
        let from_command_line =
            matches.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine);
        if from_command_line {
            continue;
        }
        let flag = OsString::from(format!("--{long}"));
        let takes_values = arg.get_action().takes_values();
        let repeatable = matches!(arg.get_action(), ArgAction::Append);
        match value {
            toml::Value::Boolean(set) if !takes_values => {
                if *set {
                    merged.push(flag);
                }
            }
            toml::Value::Array(items) if repeatable => {
                for item in items {
                    merged.push(flag.clone());
                    merged.push(scalar(item).ok_or_else(|| wrong_type(&shown, key))?);
                }
            }
            value if takes_values => {
                merged.push(flag);
                merged.push(scalar(value).ok_or_else(|| wrong_type(&shown, key))?);
            }
            _ => return Err(wrong_type(&shown, key)),
        }
    }
    merged.extend(given.iter().cloned());
    Ok(merged)
}

/// A string or a number, as the text a flag takes.
fn scalar(value: &toml::Value) -> Option<OsString> {
    match value {
        toml::Value::String(text) => Some(OsString::from(text)),
        toml::Value::Integer(number) => Some(OsString::from(number.to_string())),
        _ => None,
    }
}

fn wrong_type(shown: &std::path::Display<'_>, key: &str) -> String {
    format!(
        "--config {shown}: `{key}` has a value its flag does not take (a string or a number; \
         a list for a flag that may be repeated; true or false for a flag without a value)"
    )
}
