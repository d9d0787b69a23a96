#!/usr/bin/env python3
"""ferrolab word2vec side by side with gensim on one token file.

usage:
  python3 bench/word2vec_side_by_side.py --corpus TOKENS.txt [--settings sg-ns-1,cbow-hs-2,...]
      [--repeat N] [--ferrolab target/release/ferrolab] [--python PYTHON_WITH_GENSIM]
      [--peer ../shared/bench/word2vec_gensim.py] [--questions FILE] [--wordsim FILE]
      [--alpha A] [--seed S]

For each setting (model-loss-threads) and each repeat, ferrolab then gensim train on the same
file with skip-gram/CBOW, negative 5 or hierarchical softmax, window 5, dim 100, min-count 5,
sample 1e-3, 5 epochs, and both vector sets are evaluated the same way (ferrolab's evaluator,
gensim's semantics: analogies restricted to the 30,000 most frequent words, WordSim353
Spearman). The table reports seconds, words/s (corpus tokens x epochs / seconds, for both),
the time ratio gensim/ferrolab, analogy accuracy and Spearman.

Learning rate: gensim's default is 0.025 for both architectures (word2vec.c uses 0.05 for
CBOW), and the peer script keeps gensim's defaults, so ferrolab is run with --alpha 0.025 too
unless --alpha says otherwise.

gensim is optional: when `PYTHON -c "import gensim"` fails the peer columns say "n/a" and only
ferrolab runs. The evaluation files default to the ones shipped inside gensim's package
(gensim/test/test_data); without gensim, pass --questions and --wordsim or quality is skipped.
Timings on a shared machine drift: compare the two columns of one row, and repeat.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_ferrolab():
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    return os.path.join(target, "release", "ferrolab")


def default_python():
    venv = os.path.join(os.path.dirname(REPO), "venv", "bin", "python")
    return venv if os.path.exists(venv) else sys.executable


def gensim_dir(python):
    try:
        out = subprocess.run(
            [python, "-c", "import gensim, os; print(os.path.dirname(gensim.__file__))"],
            capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def fields(text):
    """key=value pairs of a tool's summary lines."""
    return dict(re.findall(r"(\w+)=([-+0-9.eE]+|\S+)", text))


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"command failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-2000:]}")
    return p.stdout


def count_tokens(path):
    n = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            n += len(line.split())
    return n


def ours(args, model, loss, threads, tokens, tmp):
    out = os.path.join(tmp, f"ours_{model}_{loss}_{threads}.bin")
    cmd = [args.ferrolab, "word2vec", "train", "--input", args.corpus, "--output", out,
           "--binary", "--model", model, "--loss", loss, "--negative", "5", "--window", "5",
           "--dim", "100", "--min-count", "5", "--sample", "1e-3", "--epochs", "5",
           "--alpha", str(args.alpha), "--threads", str(threads), "--seed", str(args.seed)]
    f = fields(run(cmd))
    seconds = float(f["seconds"])
    row = {"seconds": seconds, "wps": tokens * 5 / seconds}
    row.update(evaluate(args, out))
    return row


def evaluate(args, vectors):
    if not (args.questions and args.wordsim):
        return {"analogy": None, "spearman": None}
    f = fields(run([args.ferrolab, "word2vec", "eval", "--vectors", vectors, "--binary",
                    "--analogies", args.questions, "--similarity", args.wordsim]))
    return {"analogy": float(f["analogy_accuracy"]), "spearman": float(f["spearman"])}


def peer(args, model, loss, threads, tokens):
    f = fields(run([args.python, args.peer, args.corpus, args.questions, args.wordsim, model,
                    loss, str(threads)]))
    seconds = float(f["seconds"])
    return {"seconds": seconds, "wps": tokens * 5 / seconds,
            "analogy": float(f["analogy_accuracy"]), "spearman": float(f["spearman"])}


def fmt(x, spec, suffix=""):
    return "n/a" if x is None else format(x, spec) + suffix


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--settings", default="sg-ns-1,sg-hs-1,cbow-ns-1,cbow-hs-1,"
                    "sg-ns-2,sg-hs-2,cbow-ns-2,cbow-hs-2")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--ferrolab", default=default_ferrolab())
    ap.add_argument("--python", default=default_python())
    ap.add_argument("--peer", default=os.path.join(os.path.dirname(REPO), "shared", "bench",
                                                  "word2vec_gensim.py"))
    ap.add_argument("--questions")
    ap.add_argument("--wordsim")
    ap.add_argument("--alpha", type=float, default=0.025)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    gdir = gensim_dir(args.python)
    have_peer = gdir is not None and os.path.exists(args.peer)
    if not have_peer:
        print(f"gensim not importable with {args.python} (or no peer script at {args.peer}): "
              "running ferrolab only", file=sys.stderr)
    data = os.path.join(gdir, "test", "test_data") if gdir else None
    if data:
        args.questions = args.questions or os.path.join(data, "questions-words.txt")
        args.wordsim = args.wordsim or os.path.join(data, "wordsim353.tsv")
    if not (args.questions and args.wordsim):
        print("no --questions/--wordsim: quality columns skipped", file=sys.stderr)
    if not os.path.exists(args.ferrolab):
        sys.exit(f"{args.ferrolab} not found: cargo build --release -p ferrolab")

    tokens = count_tokens(args.corpus)
    print(f"corpus {args.corpus}: {tokens} tokens; alpha {args.alpha}; {args.repeat} run(s) "
          "per setting, ferrolab then gensim", file=sys.stderr)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for setting in args.settings.split(","):
            model, loss, threads = setting.split("-")
            threads = int(threads)
            for r in range(args.repeat):
                a = ours(args, model, loss, threads, tokens, tmp)
                b = peer(args, model, loss, threads, tokens) if have_peer else None
                rows.append((setting, r, a, b))
                print(f"{setting} run {r}: ours {a}  gensim {b}", file=sys.stderr, flush=True)

    print("| setting | run | ferrolab s | gensim s | ratio | ferrolab words/s | gensim words/s "
          "| analogy ferrolab / gensim | Spearman ferrolab / gensim |")
    print("|---|---|---|---|---|---|---|---|---|")
    for setting, r, a, b in rows:
        b = b or {"seconds": None, "wps": None, "analogy": None, "spearman": None}
        ratio = b["seconds"] / a["seconds"] if b["seconds"] else None
        ana_a = None if a["analogy"] is None else 100 * a["analogy"]
        ana_b = None if b["analogy"] is None else 100 * b["analogy"]
        print(f"| {setting} | {r} | {a['seconds']:.2f} | {fmt(b['seconds'], '.2f')} "
              f"| {fmt(ratio, '.2f', 'x')} | {a['wps']:.0f} | {fmt(b['wps'], '.0f')} "
              f"| {fmt(ana_a, '.2f', '%')} / {fmt(ana_b, '.2f', '%')} "
              f"| {fmt(a['spearman'], '.3f')} / {fmt(b['spearman'], '.3f')} |")
    if args.repeat > 1:
        print()
        print("| setting | median ratio |")
        print("|---|---|")
        for setting in args.settings.split(","):
            ratios = [b["seconds"] / a["seconds"] for s, _, a, b in rows if s == setting and b]
            if ratios:
                print(f"| {setting} | {statistics.median(ratios):.2f}x |")


if __name__ == "__main__":
    main()
