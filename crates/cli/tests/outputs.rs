//! Files a user names as outputs: written whole or not at all, through a link to a file,
//! through the process's own standard output, and never over a model's own files.

use std::process::{Command, Stdio};

/// A scratch folder, removed when the test ends.
fn dir(name: &str) -> ferrolab_data::TempFolder {
    ferrolab_data::TempFolder::new(&format!("out-{name}")).unwrap()
}

fn corpus(d: &std::path::Path) -> std::path::PathBuf {
    let words = [
        "the", "union", "is", "strong", "and", "we", "shall", "prosper",
    ];
    let text: Vec<&str> = (0..5000)
        .map(|i| words[(i * 5 + i / 7) % words.len()])
        .collect();
    let p = d.join("corpus.txt");
    std::fs::write(&p, text.join(" ")).unwrap();
    p
}

/// Runs `cmd`, which must succeed.
fn ok(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn word2vec(input: &std::path::Path, output: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferrolab"));
    c.args(["word2vec", "train", "--input"]).arg(input);
    c.args([
        "--output",
        output,
        "--dim",
        "4",
        "--epochs",
        "1",
        "--min-count",
        "1",
    ]);
    c.args(["--threads", "1"]);
    c
}

#[cfg(unix)]
#[test]
fn standard_output_named_as_a_path_is_written_through_its_descriptor() {
    let d = dir("stdout");
    let input = corpus(&d);
    // `>> log`: what the file held stays, the vectors come after it (the file was replaced
    // by a new one, and what the shell wrote before was lost)
    let log = d.join("log.txt");
    std::fs::write(&log, "PREV\n").unwrap();
    let appending = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    ok(word2vec(&input, "/dev/stdout").stdout(Stdio::from(appending)));
    let text = std::fs::read_to_string(&log).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("PREV"));
    assert!(lines.next().unwrap().ends_with(" 4"), "{text}"); // "<words> <dim>"
    assert!(text.contains("union "), "{text}");
    // another name for the same standard output (a link to it): the same
    let other_name = d.join("out-link");
    std::os::unix::fs::symlink("/dev/stdout", &other_name).unwrap();
    let appending = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    ok(word2vec(&input, other_name.to_str().unwrap()).stdout(Stdio::from(appending)));
    let again = std::fs::read_to_string(&log).unwrap();
    assert!(again.starts_with(&text) && again.len() > text.len());
    assert!(other_name.is_symlink());
    // a link to a file is written through; the link stays
    let real = d.join("real.txt");
    std::fs::write(&real, "old").unwrap();
    let link = d.join("vectors.txt");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    ok(&mut word2vec(&input, link.to_str().unwrap()));
    assert!(link.is_symlink());
    assert!(std::fs::read_to_string(&real).unwrap().contains("union "));
}

#[cfg(unix)]
#[test]
fn logits_never_write_through_a_link_into_the_model_folder() {
    let d = dir("logits-link");
    let model = d.join("model");
    std::fs::create_dir_all(&model).unwrap();
    let weights = model.join("model.safetensors");
    std::fs::write(&weights, b"the weights").unwrap();
    let link = d.join("logits.safetensors");
    std::os::unix::fs::symlink(&weights, &link).unwrap();
    // the stderr of `logits --out OUT`, which must fail with status 1
    let refused = |out: &std::path::Path| {
        let o = Command::new(env!("CARGO_BIN_EXE_ferrolab"))
            .args(["logits", "--model"])
            .arg(&model)
            .args(["--ids", "1", "--out"])
            .arg(out)
            .output()
            .unwrap();
        let se = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(1), "{se}");
        se
    };
    let se = refused(&link);
    assert!(se.contains("is a file of the model directory"), "{se}");
    assert_eq!(std::fs::read(&weights).unwrap(), b"the weights");
    // the weights kept elsewhere and linked into the folder (an HF cache), named directly
    let blob = d.join("blob");
    std::fs::rename(&weights, &blob).unwrap();
    std::os::unix::fs::symlink(&blob, &weights).unwrap();
    refused(&blob);
    assert_eq!(std::fs::read(&blob).unwrap(), b"the weights");
}
