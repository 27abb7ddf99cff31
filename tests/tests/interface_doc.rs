//! `docs/interface.md` must stay true to the code where that is cheap to check: every `err`
//! word a node can send, every `ctl status` field and counter, every subcommand and long
//! flag of the built `goose`, and every link of the repository's Markdown staying inside the
//! repository and landing on a heading that exists.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use flock_tests::procs::{goose_binary, Flock, Timing};
use goose_core::service::ServiceStats;
use goose_core::text;
use goose_core::Stats;

/// The repository's root: this crate lives in `tests/`.
fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

fn interface_doc() -> String {
    let path = repo_root().join("docs/interface.md");
    fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// Every word a node can send after `err`: one enum in the core, which the service writes
/// and the clients read.
fn err_words() -> BTreeSet<String> {
    text::Reason::ALL
        .iter()
        .map(|reason| reason.as_str().to_owned())
        .collect()
}

#[test]
fn every_err_word_is_documented() {
    let doc = interface_doc();
    let words = err_words();
    // The scan must find the service's words, not silently nothing: these are some of them.
    for known in [
        "forbidden",
        "busy",
        "transfer-first",
        "stale-nonce",
        "not-goose",
    ] {
        assert!(
            words.contains(known),
            "the scan lost `err {known}`: {words:?}"
        );
    }
    let missing: Vec<&String> = words
        .iter()
        .filter(|word| !doc.contains(&format!("`err {word}")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/interface.md (`err` words) lacks `err <word>` for {missing:?}"
    );
}

#[test]
fn every_status_field_and_counter_is_documented() {
    let doc = interface_doc();
    let mut keys: BTreeSet<String> = Stats::default()
        .counters()
        .iter()
        .chain(ServiceStats::default().counters().iter())
        .map(|(name, _)| (*name).to_owned())
        .collect();
    // What a real desktop node reports: the fields and its own counters too.
    let flock = Flock::start(1, Timing::DEFAULT);
    let status = flock.status(0);
    assert!(status.contains_key("lease_ms"), "{status:?}");
    keys.extend(status.into_keys());
    drop(flock);
    let missing: Vec<&String> = keys
        .iter()
        .filter(|key| !doc.contains(&format!("`{key}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/interface.md (`ctl status`) lacks {missing:?}"
    );
}

/// `goose <args>`'s standard output.
fn goose_output(args: &[&str]) -> String {
    let output = Command::new(goose_binary())
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("goose {args:?}: {error}"));
    assert!(output.status.success(), "goose {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The long flags a `--help` lists under "Options:" (without `--help` and `--version`).
fn long_flags(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|line| !line.starts_with("Options:"))
        .skip(1)
        .take_while(|line| line.starts_with(' '))
        .filter_map(|line| {
            let flag = line
                .split_whitespace()
                .find(|word| word.starts_with("--"))?;
            let flag = flag.trim_end_matches(',');
            (flag != "--help" && flag != "--version").then(|| flag.to_owned())
        })
        .collect()
}

/// Whether `doc` names `flag` as a whole flag (`--reply-rate` is not `--reply-rate-total`).
fn names_flag(doc: &str, flag: &str) -> bool {
    doc.match_indices(flag).any(|(at, _)| {
        doc[at + flag.len()..]
            .chars()
            .next()
            .is_none_or(|next| !(next.is_ascii_lowercase() || next == '-'))
    })
}

#[test]
fn every_subcommand_and_flag_is_documented() {
    let doc = interface_doc();
    let top = goose_output(&["--help"]);
    let subcommands: Vec<String> = top
        .lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| line.starts_with(' '))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect();
    assert!(
        subcommands.len() >= 6 && subcommands.iter().any(|name| name == "node"),
        "could not read the subcommands of `goose --help`:\n{top}"
    );
    let mut missing = Vec::new();
    for subcommand in &subcommands {
        let heading = format!("### `goose {subcommand}`");
        if !doc.lines().any(|line| line == heading) {
            missing.push(heading);
        }
        let flags = long_flags(&goose_output(&[subcommand, "--help"]));
        if subcommand == "node" {
            assert!(
                flags.len() >= 15 && flags.iter().any(|flag| flag == "--listen"),
                "could not read the flags of `goose node --help`: {flags:?}"
            );
        }
        for flag in flags {
            if !names_flag(&doc, &flag) {
                missing.push(format!("goose {subcommand} {flag}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/interface.md does not document {missing:?}"
    );
}

/// Every Markdown file of the repository, outside build output and hidden folders.
fn markdown_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name == "target" {
            continue;
        }
        if path.is_dir() {
            markdown_files(&path, found);
        } else if name.ends_with(".md") {
            found.push(path);
        }
    }
}

/// `text` without fenced code blocks, whose `# …` lines are no headings and whose brackets
/// are no links.
fn without_code_blocks(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|line| {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// The anchors GitHub gives a file's headings: lowercase, spaces to hyphens, punctuation
/// other than `-` and `_` dropped, `-1`, `-2` … for repeats.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut anchors = BTreeSet::new();
    for line in without_code_blocks(text) {
        let Some(title) = line.strip_prefix('#') else {
            continue;
        };
        let title = title.trim_start_matches('#');
        if !title.starts_with(' ') {
            continue;
        }
        let slug: String = title
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let mut anchor = slug.clone();
        let mut repeat = 0;
        while anchors.contains(&anchor) {
            repeat += 1;
            anchor = format!("{slug}-{repeat}");
        }
        anchors.insert(anchor);
    }
    anchors
}

/// The targets of the `[text](target)` links in `text`, outside code blocks.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in without_code_blocks(text) {
        for (at, _) in line.match_indices("](") {
            let rest = &line[at + 2..];
            if let Some(end) = rest.find(')') {
                let target = rest[..end].split_whitespace().next().unwrap_or("");
                targets.push(target.to_owned());
            }
        }
    }
    targets
}

/// `path` with `.` and `..` resolved without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut normal = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                normal.pop();
            }
            other => normal.push(other),
        }
    }
    normal
}

/// Why `target`, linked from `file`, is broken; `None` if it is fine.
fn broken_link(root: &Path, file: &Path, target: &str) -> Option<String> {
    if ["http://", "https://", "mailto:"]
        .iter()
        .any(|scheme| target.starts_with(scheme))
    {
        return None;
    }
    let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
    let linked = if path.is_empty() {
        file.to_path_buf()
    } else if path.starts_with('/') || path.contains("://") {
        return Some("not a path inside the repository".to_owned());
    } else {
        normalize(&file.parent().unwrap_or(root).join(path))
    };
    if !linked.starts_with(root) {
        return Some("outside the repository".to_owned());
    }
    if !linked.exists() {
        return Some("no such file".to_owned());
    }
    if anchor.is_empty() || linked.extension().is_none_or(|ext| ext != "md") {
        return None;
    }
    let text = fs::read_to_string(&linked).unwrap_or_default();
    (!anchors(&text).contains(anchor)).then(|| format!("no heading #{anchor}"))
}

#[test]
fn links_stay_inside_the_repository() {
    let root = normalize(&repo_root());
    let mut files = Vec::new();
    markdown_files(&root, &mut files);
    let readme = root.join("README.md");
    assert!(
        files.contains(&readme) && files.contains(&root.join("docs/interface.md")),
        "{files:?}"
    );
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text = fs::read_to_string(file).unwrap_or_default();
        for target in link_targets(&text) {
            checked += 1;
            if let Some(why) = broken_link(&root, file, &target) {
                let name = file.strip_prefix(&root).unwrap_or(file).display();
                broken.push(format!("{name}: ({target}): {why}"));
            }
        }
    }
    assert!(
        checked >= 20,
        "only {checked} links found: the scan is broken"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    let readme = fs::read_to_string(&readme).unwrap_or_default();
    assert!(
        readme.contains("](docs/interface.md)"),
        "README must link the interface document"
    );
}

#[test]
fn the_link_checker_catches_what_it_must() {
    let root = normalize(&repo_root());
    let readme = root.join("README.md");
    let interface = root.join("docs/interface.md");
    for (file, target) in [
        (&readme, "../shared/CONTRACT.md"),
        (&readme, "/etc/passwd"),
        (&readme, "docs/no-such-file.md"),
        (&readme, "docs/interface.md#no-such-heading"),
        (&interface, "#nowhere"),
    ] {
        assert!(
            broken_link(&root, file, target).is_some(),
            "{target} from {} passed",
            file.display()
        );
    }
    for (file, target) in [
        (&readme, "docs/interface.md#goose-node"),
        (&interface, "../README.md#limits"),
        (&interface, "#err-words"),
        (&readme, "https://example.org/x"),
    ] {
        assert_eq!(broken_link(&root, file, target), None, "{target}");
    }
}
