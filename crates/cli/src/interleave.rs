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
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

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

/// How often a wait for a step that takes long is reported.
const WAIT_NOTICE: Duration = Duration::from_secs(60);

/// A process driven step by step.
struct Driven {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    /// Its output, line by line, from a reader thread (so that a wait can time out).
    lines: Receiver<std::io::Result<String>>,
    times: Vec<f64>,
    text: String,
    done: bool,
    reaped: bool,
    /// The longest wait for one step's time before the process is given up.
    limit: Duration,
}

impl Driven {
    fn spawn(name: &str, cmd: &mut Command, limit: Duration) -> Result<Driven> {
        // (it stays in this process's group, so that a Ctrl-C or `timeout` reaches it too)
        let mut child = cmd
            .env(ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let stdin = child.stdin.take();
        let mut out = BufReader::new(child.stdout.take().context("no stdout pipe")?);
        let (send, lines) = std::sync::mpsc::channel();
        // ends at the end of the output (the process exited or was killed)
        std::thread::spawn(move || loop {
            let mut line = String::new();
            match out.read_line(&mut line) {
                Ok(0) => break,
                r => {
                    if send.send(r.map(|_| line)).is_err() {
                        break;
                    }
                }
            }
        });
        Ok(Driven {
            name: name.into(),
            child,
            stdin,
            lines,
            times: Vec::new(),
            text: String::new(),
            done: false,
            reaped: false,
            limit,
        })
    }

    /// The next line of output (`None` at its end), waiting until `deadline` (the end of the
    /// step's limit, which began at `since`) and saying every minute that it is waiting.
    fn next_line(&mut self, since: Instant, deadline: Instant) -> Result<Option<String>> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left.min(WAIT_NOTICE)) {
                Ok(r) => {
                    return r
                        .map(Some)
                        .with_context(|| format!("reading {}'s output", self.name))
                }
                Err(RecvTimeoutError::Disconnected) => return Ok(None),
                Err(RecvTimeoutError::Timeout) if Instant::now() >= deadline => bail!(
                    "{} gave no step time for {:.1} s (step {}): it is stopped",
                    self.name,
                    self.limit.as_secs_f64(),
                    self.times.len() + 1
                ),
                Err(RecvTimeoutError::Timeout) => eprintln!(
                    "waiting for {}'s step {}: {:.0} s so far",
                    self.name,
                    self.times.len() + 1,
                    since.elapsed().as_secs_f64()
                ),
            }
        }
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
        // one limit for the whole step, whatever else the process prints meanwhile
        let since = Instant::now();
        let deadline = since + self.limit;
        loop {
            let Some(line) = self.next_line(since, deadline)? else {
                self.done = true;
                return Ok(false);
            };
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
/// alternates between the two. A process that gives no step time for `limit` (a peer that
/// hangs) is stopped, and that is an error naming it.
pub fn run(
    ours: &mut Command,
    peer: &mut Command,
    gap: Duration,
    limit: Duration,
) -> Result<(Run, Run)> {
    let mut d = [
        Driven::spawn("ferrolab", ours, limit)?,
        Driven::spawn("peer", peer, limit)?,
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
        let (o, p) = run(
            &mut fake(5, "2.5"),
            &mut fake(3, "4"),
            Duration::ZERO,
            LIMIT,
        )
        .unwrap();
        assert_eq!(o.times, vec![2.5; 5]);
        assert_eq!(p.times, vec![4.0; 3]);
        assert_eq!(o.text, "start\nsummary=1\n");
        assert_eq!(p.text, "start\nsummary=1\n");
        assert_eq!(timed_pairs(&o, &p, 1), vec![(2.5, 4.0); 2]);
    }

    const LIMIT: Duration = Duration::from_secs(60);

    /// A peer that never reports a step (it hung, printing now and then) is stopped after the
    /// limit, and named.
    #[test]
    fn a_process_that_hangs_is_given_up_after_the_limit() {
        let mut hung = Command::new("sh");
        hung.arg("-c").arg(
            "read x; echo warming up; echo $$ > \"$0\"; \
             exec sh -c 'while true; do echo still here; sleep 0.2; done'",
        );
        let scratch = ferrolab_data::TempFolder::new("hung").unwrap();
        let pid_file = scratch.join("pid");
        hung.arg(&pid_file);
        let t0 = Instant::now();
        let e = run(
            &mut fake(3, "1"),
            &mut hung,
            Duration::ZERO,
            Duration::from_secs(2),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            e.contains("peer gave no step time for 2.0 s (step 1)"),
            "{e}"
        );
        assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
        // the process was stopped
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // SAFETY: kill(2) with signal 0 only asks whether the process exists
        assert_eq!(
            unsafe { libc::kill(pid, 0) },
            -1,
            "process {pid} still runs"
        );
    }

    #[test]
    fn a_failing_process_is_an_error_naming_it() {
        let mut bad = Command::new("sh");
        bad.arg("-c").arg("read x; echo lockstep_ms=1; exit 7");
        let e = run(&mut fake(2, "1"), &mut bad, Duration::ZERO, LIMIT)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("peer failed"), "{e}");
        let mut junk = Command::new("sh");
        junk.arg("-c").arg("read x; echo lockstep_ms=fast");
        let e = run(&mut junk, &mut fake(1, "1"), Duration::ZERO, LIMIT)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("bad step time"), "{e}");
    }
}
