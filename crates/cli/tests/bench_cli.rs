//! `ferrolab bench`: the interleaved side-by-side protocol, run as processes (a shell script
//! stands in for the PyTorch peer, so no Python is needed).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn bench(args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrolab"))
        .arg("bench")
        .args(args)
        .envs(env.iter().copied())
        .env_remove("FERROLAB_PYTHON")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

/// The stdout of a run that must have succeeded (else its output is shown).
fn stdout_of_success(out: &Output) -> String {
    let so = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{so}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    so
}

/// A `--peer-cmd` that runs this build of ferrolab as its own peer.
fn self_peer() -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/self_peer.sh");
    format!(
        "FERROLAB_PEER_BIN={} sh {} \"$@\"",
        env!("CARGO_BIN_EXE_ferrolab"),
        script.display()
    )
}

const SMALL: [&str; 7] = [
    "train-step",
    "--layers",
    "1",
    "--warmup",
    "1",
    "--steps",
    "2",
];

#[test]
fn a_lockstep_process_runs_one_step_per_line_and_reports_each() {
    let out = bench(&SMALL, &[("FERROLAB_LOCKSTEP", "1")], b"go\ngo\ngo\n");
    let so = stdout_of_success(&out);
    let times: Vec<f64> = so
        .lines()
        .filter_map(|l| l.strip_prefix("lockstep_ms="))
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(times.len(), 3, "{so}");
    assert!(times.iter().all(|&t| t > 0.0), "{times:?}");
    assert!(so.contains("step_ms_median="), "{so}");

    // without the variable nothing is read or reported
    let plain = bench(&SMALL, &[], b"");
    let sp = String::from_utf8_lossy(&plain.stdout);
    assert!(
        plain.status.success() && !sp.contains("lockstep_ms="),
        "{sp}"
    );
}

#[test]
fn a_lockstep_process_whose_driver_goes_away_stops_with_an_error() {
    let out = bench(&SMALL, &[("FERROLAB_LOCKSTEP", "1")], b"go\n");
    assert!(!out.status.success());
    let se = String::from_utf8_lossy(&out.stderr);
    assert!(se.contains("closed stdin"), "{se}");
}

/// A stand-in interpreter: `-c ...` (the torch check) succeeds, anything else runs as a shell
/// script.
fn fake_python(dir: &Path) -> String {
    let p = dir.join("python");
    std::fs::write(
        &p,
        "#!/bin/sh\nif [ \"$1\" = \"-c\" ]; then exit 0; fi\nexec sh \"$@\"\n",
    )
    .unwrap();
    let mut perm = std::fs::metadata(&p).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&p, perm).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn peer_steps_are_interleaved_and_paired() {
    let dir = ferrolab_data::TempFolder::new("bench-cli").unwrap();
    let py = fake_python(&dir);
    // the peer's contract: 3 warm-up + 20 steps, each after a line on stdin; a step "takes"
    // 1000 ms, far longer than our 1-layer step, so every pair has ours faster
    let peer = dir.join("peer.sh");
    std::fs::write(
        &peer,
        "i=0; while [ $i -lt 23 ]; do read x || exit 3; echo lockstep_ms=1000; i=$((i+1)); done\n\
         echo 'step_ms median=1000.0'; echo peak_rss_MiB=4000.0\n",
    )
    .unwrap();
    let out = bench(
        &[
            "train-step",
            "--layers",
            "1",
            "--peer",
            "--rounds",
            "2",
            "--python",
            &py,
            "--peer-script",
            peer.to_str().unwrap(),
        ],
        &[],
        b"",
    );
    let so = stdout_of_success(&out);
    let last = so.lines().last().unwrap();
    assert!(last.contains("peer_step_ms_median=1000.0"), "{last}");
    assert!(last.contains("pairs=40 ours_faster_pairs=40"), "{last}");
    assert!(last.contains("peer_peak_rss_mib=4000.0"), "{last}");
    let field = |k: &str| -> f64 {
        last.split_whitespace()
            .find_map(|w| w.strip_prefix(k)?.parse().ok())
            .unwrap()
    };
    let ours = field("step_ms_median=");
    assert!(
        (field("time_ratio=") - ours / 1000.0).abs() < 1e-3,
        "{last}"
    );

    // a peer that breaks off is an error naming it
    std::fs::write(&peer, "read x; echo lockstep_ms=5; exit 9\n").unwrap();
    let out = bench(
        &[
            "train-step",
            "--layers",
            "1",
            "--peer",
            "--rounds",
            "1",
            "--python",
            &py,
            "--peer-script",
            peer.to_str().unwrap(),
        ],
        &[],
        b"",
    );
    assert!(!out.status.success());
    let se = String::from_utf8_lossy(&out.stderr);
    assert!(se.contains("peer failed"), "{se}");
}

#[test]
fn ferrolab_can_be_its_own_peer_through_a_peer_command() {
    let cmd = self_peer();
    let out = bench(
        &[
            "lm",
            "--preset",
            "llama-tiny",
            "--set",
            "batch_size=2",
            "--set",
            "seq_len=32",
            "--rounds",
            "1",
            "--warmup",
            "1",
            "--steps",
            "2",
            "--peer-cmd",
            &cmd,
        ],
        &[],
        b"",
    );
    let so = stdout_of_success(&out);
    // the peer ran the same resolved configuration: the same parameter count and batch
    let params: Vec<&str> = so
        .lines()
        .filter(|l| l.contains("ferrolab threads="))
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("params=")))
        .collect();
    assert_eq!(params.len(), 2, "{so}");
    assert_eq!(params[0], params[1], "{so}");
    assert_eq!(so.matches("B=2 T=32").count(), 2, "{so}");
    let last = so.lines().last().unwrap();
    assert!(last.contains("pairs=2 "), "{last}");
    assert!(
        last.contains("memory_ratio=") && !last.contains("memory_ratio=inf"),
        "{last}"
    );
}

#[test]
fn a_bad_run_configuration_is_named() {
    let dir = ferrolab_data::TempFolder::new("bench-cfg").unwrap();
    let p = dir.join("run.json");
    std::fs::write(&p, "{\"preset\": 3}").unwrap();
    let out = bench(
        &["lm", "--ours-only", "--run-config", p.to_str().unwrap()],
        &[],
        b"",
    );
    assert!(!out.status.success());
    let se = String::from_utf8_lossy(&out.stderr);
    assert!(se.contains("is not a run configuration"), "{se}");
}

#[test]
fn the_training_step_benchmark_takes_a_peer_command_too() {
    let cmd = self_peer();
    let out = bench(
        &[
            "train-step",
            "--layers",
            "1",
            "--peer",
            "--rounds",
            "1",
            "--peer-cmd",
            &cmd,
        ],
        &[],
        b"",
    );
    let so = stdout_of_success(&out);
    // both sides ran the 1-layer model
    assert_eq!(so.matches("layers=1 batch=8 seq=128").count(), 2, "{so}");
    let last = so.lines().last().unwrap();
    assert!(last.contains("pairs=20 "), "{last}");
    assert!(!last.contains("memory_ratio=inf"), "{last}");
}

#[test]
fn a_side_by_side_lm_run_with_few_warm_up_steps_is_warned_about() {
    let dir = ferrolab_data::TempFolder::new("bench-warm").unwrap();
    let py = fake_python(&dir);
    // a peer that stops at once: the run fails, after the warning (or its absence) is printed
    let peer = dir.join("peer.sh");
    std::fs::write(&peer, "exit 4\n").unwrap();
    let run = |warmup: &str| {
        let out = bench(
            &[
                "lm",
                "--preset",
                "llama-tiny",
                "--set",
                "batch_size=2",
                "--set",
                "seq_len=32",
                "--rounds",
                "1",
                "--warmup",
                warmup,
                "--steps",
                "2",
                "--python",
                &py,
                "--peer-script",
                peer.to_str().unwrap(),
            ],
            &[],
            b"",
        );
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let se = run("1");
    assert!(
        se.contains("warning: --warmup 1") && se.contains("overstates"),
        "{se}"
    );
    assert!(se.contains("peer failed"), "{se}");
    let se = run("3");
    assert!(!se.contains("warning:"), "{se}");
}

#[test]
fn zero_steps_and_impossible_thread_counts_are_refused() {
    for (args, want) in [
        (
            &["lm", "--ours-only", "--steps", "0", "--warmup", "0"][..],
            "--steps",
        ),
        (&["train-step", "--threads", "0"][..], "--threads"),
        (&["train-step", "--threads", "100000"][..], "per core"),
        (&["lm", "--ours-only", "--threads", "0"][..], "--threads"),
        (&["lm", "--threads", "0"][..], "error: --threads"),
        (&["train-step", "--seq", "1000000"][..], "GiB"),
        (&["train-step", "--layers", "0"][..], "--layers"),
    ] {
        let out = bench(args, &[], b"");
        let se = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {se}");
        assert!(
            se.contains(want) && !se.contains("panicked") && !se.contains("ferrolab failed"),
            "{args:?}: {se}"
        );
    }
    // each zero is named, and only those
    let out = bench(
        &["train-step", "--layers", "0", "--seq", "0", "--batch", "0"],
        &[],
        b"",
    );
    let se = String::from_utf8_lossy(&out.stderr);
    assert!(
        se.contains("--batch, --seq and --layers must be at least 1") && !se.contains("--steps"),
        "{se}"
    );
    // a new `steps` scales the preset's warm-up as `train` does (a warm-up of 50 past 80% of
    // 7 steps was refused)
    let out = bench(
        &[
            "lm",
            "--ours-only",
            "--preset",
            "llama-tiny",
            "--set",
            "steps=7",
            "--set",
            "model.num_hidden_layers=1",
            "--set",
            "batch_size=1",
            "--set",
            "seq_len=16",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--threads",
            "1",
        ],
        &[],
        b"",
    );
    stdout_of_success(&out);
    // options of the side-by-side run without --peer did nothing without a word
    for opt in [
        &["--rounds", "5"][..],
        &["--sequential"][..],
        &["--peer-cmd", "true"][..],
    ] {
        let args: Vec<&str> = ["train-step"].iter().chain(opt).copied().collect();
        let out = bench(&args, &[], b"");
        let se = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{opt:?}: {se}");
        assert!(se.contains("--peer"), "{opt:?}: {se}");
    }
    // --rounds 0 is a usage error that says what is wanted
    for sub in ["lm", "train-step"] {
        let out = bench(&[sub, "--rounds", "0"], &[], b"");
        let se = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{se}");
        assert!(se.contains("--rounds") && se.contains("at least 1"), "{se}");
    }
}
