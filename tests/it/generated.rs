//! The man pages and shell completions are generated from the clap
//! definition (the completion scripts are what `COMPLETE=<shell>
//! sessionpipe` prints) and checked in. This test fails when they are
//! stale; run it with SESSIONPIPE_UPDATE_GENERATED=1 to rewrite them.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use sessionpipe::cli::Cli;

fn generated() -> Vec<(PathBuf, Vec<u8>)> {
    let mut cmd = Cli::command();
    cmd.build();
    let mut out = Vec::new();
    man_pages(&cmd, "sessionpipe", &mut out);
    for (shell, file) in [
        ("bash", "sessionpipe.bash"),
        ("zsh", "_sessionpipe"),
        ("fish", "sessionpipe.fish"),
    ] {
        let script = std::process::Command::new(assert_cmd::cargo::cargo_bin("sessionpipe"))
            .env("COMPLETE", shell)
            .output()
            .unwrap();
        assert!(script.status.success(), "{shell}");
        out.push((Path::new("completions").join(file), script.stdout));
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
    let toml = toml
        .replace("[processors.NAME]", "[processors.x]")
        .replace("[prices.\"MODEL\"]", "[prices.\"in-house\"]");
    std::fs::write(&env.config, toml).unwrap();
    std::fs::write(env.path("users.csv"), "alice,a@example.com\n").unwrap();
    env.cmd().arg("list").assert().success();
}

#[test]
fn bash_completes_processor_names_from_the_config() {
    let env = crate::util::Env::new();
    env.processors(&[("secrets-scan", "true")]);
    let bin_dir = assert_cmd::cargo::cargo_bin("sessionpipe")
        .parent()
        .unwrap()
        .to_owned();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("completions/sessionpipe.bash");
    let complete = |words: &str, cword: usize| {
        let out = std::process::Command::new("bash")
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
            .env("SESSIONPIPE_CONFIG", &env.config)
            .arg("-c")
            .arg(format!(
                "source '{}'; COMP_WORDS=({words}); COMP_CWORD={cword}; \
                 _clap_complete_sessionpipe sessionpipe \"${{COMP_WORDS[$COMP_CWORD]}}\"; \
                 printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                script.display()
            ))
            .output()
            .unwrap();
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let run = complete("sessionpipe run ''", 2);
    for name in ["usage", "verification", "secrets-scan"] {
        assert!(
            run.lines().any(|l| l.starts_with(name)),
            "{name} in {run:?}"
        );
    }
    let reset = complete("sessionpipe state reset sec", 3);
    assert!(
        reset.lines().any(|l| l.starts_with("secrets-scan")),
        "{reset:?}"
    );
    assert!(!reset.contains("usage"), "{reset:?}");
}
