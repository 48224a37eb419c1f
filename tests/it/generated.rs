//! The man pages and shell completions are generated from the clap
//! definition and checked in. This test fails when they are stale; run it
//! with SESSIONPIPE_UPDATE_GENERATED=1 to rewrite them.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;
use sessionpipe::cli::Cli;

fn generated() -> Vec<(PathBuf, Vec<u8>)> {
    let mut cmd = Cli::command();
    cmd.build();
    let mut out = Vec::new();
    man_pages(&cmd, "sessionpipe", &mut out);
    for (shell, file) in [
        (Shell::Bash, "sessionpipe.bash"),
        (Shell::Zsh, "_sessionpipe"),
        (Shell::Fish, "sessionpipe.fish"),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "sessionpipe", &mut buf);
        out.push((Path::new("completions").join(file), buf));
    }
    out
}

/// One page per command: `sessionpipe.1`, `sessionpipe-run.1`, ...
fn man_pages(cmd: &clap::Command, name: &str, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    let page = cmd.clone().name(name.to_owned());
    let man = clap_mangen::Man::new(page);
    let mut buf = Vec::new();
    man.render_title(&mut buf).unwrap();
    man.render_name_section(&mut buf).unwrap();
    man.render_synopsis_section(&mut buf).unwrap();
    man.render_description_section(&mut buf).unwrap();
    man.render_options_section(&mut buf).unwrap();
    if cmd.has_subcommands() {
        man.render_subcommands_section(&mut buf).unwrap();
    }
    if let Some(after) = cmd.get_after_long_help() {
        buf.extend_from_slice(after_help_sections(&after.to_string()).as_bytes());
    }
    if cmd.get_version().is_some() {
        man.render_version_section(&mut buf).unwrap();
    }
    out.push((Path::new("man").join(format!("{name}.1")), buf));
    for sub in cmd.get_subcommands() {
        if sub.get_name() != "help" {
            man_pages(sub, &format!("{name}-{}", sub.get_name()), out);
        }
    }
}

/// Turns the `HEADING:` blocks of the long help into man sections, kept
/// preformatted as `--help` shows them.
fn after_help_sections(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if let Some(heading) = line.strip_suffix(':').filter(|h| !h.starts_with(' ')) {
            if !out.is_empty() {
                out.push_str(".fi\n");
            }
            out.push_str(&format!(".SH \"{heading}\"\n.nf\n"));
        } else {
            let escaped = line.replace('\\', "\\e").replace('-', "\\-");
            let escaped = if escaped.starts_with('.') || escaped.starts_with('\'') {
                format!("\\&{escaped}")
            } else {
                escaped
            };
            out.push_str(&escaped);
            out.push('\n');
        }
    }
    if !out.is_empty() {
        out.push_str(".fi\n");
    }
    out
}

#[test]
fn man_pages_and_completions_are_up_to_date() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let update = std::env::var_os("SESSIONPIPE_UPDATE_GENERATED").is_some();
    let mut stale = Vec::new();
    for (rel, content) in generated() {
        let path = root.join(&rel);
        if update {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &content).unwrap();
        } else if std::fs::read(&path).ok().as_deref() != Some(&content[..]) {
            stale.push(rel.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "stale generated files {stale:?}: run SESSIONPIPE_UPDATE_GENERATED=1 cargo test --test it generated"
    );
}

#[test]
fn the_main_page_documents_every_exit_code_environment_files_and_crontab() {
    let page =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("man/sessionpipe.1"))
            .unwrap();
    let (_, exit_status) = page
        .split_once(".SH \"EXIT STATUS\"")
        .expect("an EXIT STATUS section");
    for (code, _) in sessionpipe::exit::TABLE {
        assert!(
            exit_status.contains(&format!("\n  {code:<4}")),
            "exit code {code} missing from EXIT STATUS"
        );
    }
    for needle in [
        "SESSION_DATA_DIR",
        "SESSIONPIPE_CONFIG",
        "/etc/sessionpipe/config.toml",
        "sessionpipe run \\-\\-due",
    ] {
        assert!(page.contains(needle), "{needle} missing from the man page");
    }
}

#[test]
fn the_configuration_in_the_help_is_a_config_file_sessionpipe_accepts() {
    let env = crate::util::Env::new();
    let help = env.cmd().arg("--help").output().unwrap().stdout;
    let help = String::from_utf8(help).unwrap();
    let (_, section) = help.split_once("CONFIGURATION:\n").unwrap();
    let section = section.split("\n\n").nth(1).unwrap();
    // Keys start in the third column; what follows them, and the lines
    // that go on in the right-hand column, explain them.
    let toml: String = section
        .lines()
        .filter(|l| !l.starts_with("   "))
        .map(|l| l.trim().split("  ").next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(toml.contains("[processors.NAME]"), "{toml}");
    let toml = toml.replace("[processors.NAME]", "[processors.x]");
    std::fs::write(&env.config, toml).unwrap();
    std::fs::write(env.path("users.csv"), "alice,a@example.com\n").unwrap();
    env.cmd().arg("list").assert().success();
}
