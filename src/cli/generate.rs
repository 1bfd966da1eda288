//! `snapsite generate`: man pages (the subcommands' and `snapsite.toml(5)`),
//! shell completions and the configuration reference, for packaging.

use anyhow::Context as _;

use super::Cli;

/// `snapsite generate`: man pages (one per subcommand, and the config
/// file's), completions, the configuration reference in Markdown.
pub(super) fn generate(
    man: Option<&std::path::Path>,
    completions: Option<&std::path::Path>,
    config_reference: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    use clap::CommandFactory;
    use snapsite::base::config_keys;
    let mut cmd = Cli::command();
    cmd.build();
    if let Some(dir) = man {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let write = |name: &str, c: clap::Command| -> anyhow::Result<()> {
            let path = dir.join(format!("{name}.1"));
            let mut out = Vec::new();
            clap_mangen::Man::new(c).render(&mut out)?;
            std::fs::write(&path, out).with_context(|| format!("write {}", path.display()))
        };
        write("snapsite", cmd.clone())?;
        for sub in cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        {
            let name = format!("snapsite-{}", sub.get_name());
            let display: &'static str = Box::leak(name.clone().into_boxed_str());
            write(&name, sub.clone().name(display).display_name(display))?;
        }
        let path = dir.join("snapsite.toml.5");
        std::fs::write(&path, config_keys::man_page(env!("CARGO_PKG_VERSION")))
            .with_context(|| format!("write {}", path.display()))?;
    }
    if let Some(dir) = completions {
        use clap_complete::Shell;
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        for sh in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            clap_complete::generate_to(sh, &mut cmd, "snapsite", dir)?;
        }
    }
    if let Some(path) = config_reference {
        std::fs::write(path, config_keys::markdown())
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}
