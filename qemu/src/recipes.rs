//! The server recipes of `docs/servers.md`, run exactly as written: every fenced block whose
//! first line is `# recipe: <name>` is a recipe, run by `sh` with `SRV` (a directory) and
//! `PORT` set, so the documented commands cannot drift from what the tests check.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::command;
use crate::error::{Context, Error, Result};

/// The document the recipes come from, relative to the workspace root.
pub const DOC: &str = "docs/servers.md";

/// How long a server recipe may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// One `# recipe:` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    pub name: String,
    /// The block's lines after the marker, as written.
    pub script: String,
}

/// The recipes of a Markdown text, in document order.
pub fn parse(markdown: &str) -> Vec<Recipe> {
    let mut recipes = Vec::new();
    let mut lines = markdown.lines();
    while let Some(line) = lines.next() {
        if !line.starts_with("```") {
            continue;
        }
        let block: Vec<&str> = lines
            .by_ref()
            .take_while(|l| !l.starts_with("```"))
            .collect();
        if let Some(name) = block
            .first()
            .and_then(|l| l.strip_prefix("# recipe:"))
            .map(str::trim)
        {
            let mut script = block[1..].join("\n");
            script.push('\n');
            recipes.push(Recipe {
                name: name.to_string(),
                script,
            });
        }
    }
    recipes
}

/// The recipes of [`DOC`].
pub fn all() -> Result<Vec<Recipe>> {
    let path = crate::repo_root().join(DOC);
    let text = std::fs::read_to_string(&path).step(|| format!("read {}", path.display()))?;
    Ok(parse(&text))
}

/// The recipe called `name` in [`DOC`].
pub fn get(name: &str) -> Result<Recipe> {
    all()?
        .into_iter()
        .find(|r| r.name == name)
        .ok_or_else(|| Error::unexpected(format!("find recipe {name}"), format!("not in {DOC}")))
}

/// The environment a recipe runs in.
#[derive(Debug, Clone)]
pub struct Env {
    /// `SRV`: where the images are.
    pub srv: PathBuf,
    /// `PORT`: the NBD port.
    pub port: u16,
}

impl Recipe {
    fn command(&self, env: &Env, exec: bool) -> Command {
        let mut cmd = Command::new("sh");
        // A server recipe is one command: exec makes it the child, so killing the child
        // kills the server.
        let script = if exec {
            format!("exec {}", self.script)
        } else {
            self.script.clone()
        };
        cmd.args(["-eu", "-c", &script])
            .env("SRV", &env.srv)
            .env("PORT", env.port.to_string())
            .stdin(Stdio::null());
        cmd
    }

    /// Runs a preparation recipe to its end.
    pub fn run(&self, env: &Env) -> Result<()> {
        command::run(
            &format!("recipe {} of {DOC}", self.name),
            &mut self.command(env, false),
        )
        .map(drop)
    }

    /// Starts a server recipe and waits until `PORT` accepts connections on 127.0.0.1.
    pub fn serve(&self, env: &Env) -> Result<RecipeServer> {
        let mut server = RecipeServer {
            recipe: self.clone(),
            env: env.clone(),
            log: env.srv.join(format!("{}.log", self.name)),
            child: None,
        };
        server.start()?;
        Ok(server)
    }
}

/// A running server recipe; killed and reaped on drop.
#[derive(Debug)]
pub struct RecipeServer {
    recipe: Recipe,
    env: Env,
    /// The server's stderr (appended to across restarts).
    pub log: PathBuf,
    child: Option<Child>,
}

impl RecipeServer {
    fn start(&mut self) -> Result<()> {
        let step = format!("start recipe {} of {DOC}", self.recipe.name);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .step(|| format!("{step}: open {}", self.log.display()))?;
        let mut cmd = self.recipe.command(&self.env, true);
        cmd.stdout(Stdio::null()).stderr(log);
        let mut child = cmd.spawn().step(|| step.clone())?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.env.port));
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().step(|| format!("{step}: wait"))? {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                return Err(Error::unexpected(
                    step,
                    format!("exited with {status} before listening; log:\n{log}"),
                ));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                self.child = Some(child);
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::unexpected(
                    step,
                    format!("port {} not open after {START_TIMEOUT:?}", self.env.port),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the server (SIGKILL, as a crash) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts the same recipe again on the same port.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.start()
    }

    /// The recipe's directory.
    pub fn srv(&self) -> &Path {
        &self.env.srv
    }
}

impl Drop for RecipeServer {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_with_a_marker_are_recipes() {
        let md = "text\n```sh\n# recipe: a\necho 1 \\\n  2\n```\n\n```sh\necho no\n```\n\
                  ```\n# recipe:  b \nx\n```\n";
        assert_eq!(
            parse(md),
            [
                Recipe {
                    name: "a".into(),
                    script: "echo 1 \\\n  2\n".into()
                },
                Recipe {
                    name: "b".into(),
                    script: "x\n".into()
                }
            ]
        );
    }
}
