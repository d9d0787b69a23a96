//! Interleaved side-by-side timing of two benchmark processes.
//!
//! A shared 2-vCPU machine has slow phases lasting seconds: longer than one training step but
//! shorter than a whole run, so runs made one after the other can each catch a different
//! phase. Here both engines' processes are alive at once and run one step at a time in turn
//! (ferrolab, peer, peer, ferrolab, ...), with the other process blocked on its stdin, so that
//! neighbouring steps of the two see the same machine.
//!
//! The protocol, for a process started with `FERROLAB_LOCKSTEP=1`: before every step (warm-up
//! included) read one line from stdin; after it, print `lockstep_ms=<milliseconds>` on stdout
//! and flush. Everything else it prints is kept and returned. [`Lockstep`] is our side of it;
//! the PyTorch scripts in `bench/` carry the same few lines.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// The environment variable that switches a benchmark process to interleaved steps.
pub const ENV: &str = "FERROLAB_LOCKSTEP";

/// A benchmark process's side of the protocol (inactive unless [`ENV`] is `1`).
pub struct Lockstep {
    on: bool,
}

impl Lockstep {
    /// Reads [`ENV`].
    pub fn from_env() -> Lockstep {
        Lockstep {
            on: std::env::var(ENV).is_ok_and(|v| v == "1"),
        }
    }

    /// Waits for the driver's turn signal (returns at once when inactive).
    pub fn wait(&self) -> Result<()> {
        if self.on {
            let mut line = String::new();
            let n = std::io::stdin()
                .read_line(&mut line)
                .context("reading the interleaving driver's signal")?;
            if n == 0 {
                bail!("the interleaving driver closed stdin before the run ended");
            }
        }
        Ok(())
    }

    /// Reports one step's time to the driver (nothing when inactive).
    pub fn report(&self, ms: f64) {
        if self.on {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "lockstep_ms={ms:.3}");
            let _ = out.flush();
        }
    }
}

/// A process driven step by step.
struct Driven {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    out: BufReader<ChildStdout>,
    times: Vec<f64>,
    text: String,
    done: bool,
    reaped: bool,
}

impl Driven {
    fn spawn(name: &str, cmd: &mut Command) -> Result<Driven> {
        let mut child = cmd
            .env(ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let stdin = child.stdin.take();
        let out = BufReader::new(child.stdout.take().context("no stdout pipe")?);
        Ok(Driven {
            name: name.into(),
            child,
            stdin,
            out,
            times: Vec::new(),
            text: String::new(),
            done: false,
            reaped: false,
        })
    }

    /// Lets the process run its next step and returns whether it did (false once it has
    /// finished and closed its output).
    fn step(&mut self) -> Result<bool> {
        if self.done {
            return Ok(false);
        }
        if let Some(si) = self.stdin.as_mut() {
            // a process that has already run its last step may have exited: then the write
            // fails and the read below meets the end of its output
            if writeln!(si, "go").and_then(|_| si.flush()).is_err() {
                self.stdin = None;
            }
        }
        let mut line = String::new();
        loop {
            line.clear();
            let n = self
                .out
                .read_line(&mut line)
                .with_context(|| format!("reading {}'s output", self.name))?;
            if n == 0 {
                self.done = true;
                return Ok(false);
            }
            if let Some(v) = line.trim().strip_prefix("lockstep_ms=") {
                let ms: f64 = v
                    .parse()
                    .with_context(|| format!("{} reported a bad step time {v:?}", self.name))?;
                self.times.push(ms);
                return Ok(true);
            }
            self.text.push_str(&line);
        }
    }

    fn finish(&mut self) -> Result<Run> {
        drop(self.stdin.take());
        while self.step()? {}
        let status = self
            .child
            .wait()
            .with_context(|| format!("waiting for {}", self.name))?;
        self.reaped = true;
        if !status.success() {
            bail!(
                "{} failed ({status}); its error output, if any, is above",
                self.name
            );
        }
        Ok(Run {
            times: std::mem::take(&mut self.times),
            text: std::mem::take(&mut self.text),
        })
    }
}

impl Drop for Driven {
    /// A process left behind by an error is stopped, not left waiting on its stdin.
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What one driven process gave: every step's time in order (warm-up included) and the rest
/// of its output.
pub struct Run {
    /// Milliseconds per step, in order.
    pub times: Vec<f64>,
    /// Everything else it printed.
    pub text: String,
}

/// Runs `ours` and `peer` step by step in turn until both have finished, pausing `gap` before
/// each step so that the other process's threads have gone idle. The first step of each pair
/// alternates between the two.
pub fn run(ours: &mut Command, peer: &mut Command, gap: Duration) -> Result<(Run, Run)> {
    let mut d = [
        Driven::spawn("ferrolab", ours)?,
        Driven::spawn("peer", peer)?,
    ];
    let mut i = 0usize;
    loop {
        let order = if i.is_multiple_of(2) { [0, 1] } else { [1, 0] };
        let mut any = false;
        for k in order {
            if !d[k].done {
                std::thread::sleep(gap);
                any |= d[k].step()?;
            }
        }
        if !any {
            break;
        }
        i += 1;
    }
    let [o, p] = &mut d;
    Ok((o.finish()?, p.finish()?))
}

/// Step times of the timed steps (index `warmup` on) that both runs have, as pairs.
pub fn timed_pairs(ours: &Run, peer: &Run, warmup: usize) -> Vec<(f64, f64)> {
    ours.times
        .iter()
        .zip(&peer.times)
        .skip(warmup)
        .map(|(&o, &p)| (o, p))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shell stand-in for a benchmark process: `n` steps of the protocol, then a summary.
    fn fake(n: usize, ms: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c").arg(format!(
            "echo start; i=0; while [ $i -lt {n} ]; do read x || exit 3; echo lockstep_ms={ms}; i=$((i+1)); done; echo summary=1"
        ));
        c
    }

    #[test]
    fn drives_both_to_the_end_and_keeps_their_output() {
        let (o, p) = run(&mut fake(5, "2.5"), &mut fake(3, "4"), Duration::ZERO).unwrap();
        assert_eq!(o.times, vec![2.5; 5]);
        assert_eq!(p.times, vec![4.0; 3]);
        assert_eq!(o.text, "start\nsummary=1\n");
        assert_eq!(p.text, "start\nsummary=1\n");
        assert_eq!(timed_pairs(&o, &p, 1), vec![(2.5, 4.0); 2]);
    }

    #[test]
    fn a_failing_process_is_an_error_naming_it() {
        let mut bad = Command::new("sh");
        bad.arg("-c").arg("read x; echo lockstep_ms=1; exit 7");
        let e = run(&mut fake(2, "1"), &mut bad, Duration::ZERO)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("peer failed"), "{e}");
        let mut junk = Command::new("sh");
        junk.arg("-c").arg("read x; echo lockstep_ms=fast");
        let e = run(&mut junk, &mut fake(1, "1"), Duration::ZERO)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("bad step time"), "{e}");
    }
}
