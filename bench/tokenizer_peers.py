"""Peer figures for the tokenizer benchmark: tiktoken encode and HF tokenizers training.

Adapted from shared/bench/tokenizer_peers.py: also trains on a train split and reports bytes per
token on a held-out split, so the compression of both trainers is compared on the same text.

usage: python3 tokenizer_peers.py CORPUS.txt CL100K_BASE.tiktoken [TRAIN.txt HELDOUT.txt]
needs: pip install tiktoken tokenizers
Run single-threaded: RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false (the bench sets both).
"""
import os
import sys
import time

import tiktoken
from tiktoken.load import load_tiktoken_bpe
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

corpus, rank_file = sys.argv[1], sys.argv[2]
train_file = sys.argv[3] if len(sys.argv) > 3 else corpus
held_file = sys.argv[4] if len(sys.argv) > 4 else None
text = open(corpus, encoding="utf-8").read()
nbytes = len(text.encode())

CL100K_PAT = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
enc = tiktoken.Encoding("cl100k_local", pat_str=CL100K_PAT,
                        mergeable_ranks=load_tiktoken_bpe(rank_file),
                        special_tokens={"<|endoftext|>": 100257})
enc.encode_ordinary(text[:100000])  # warm-up
best = float("inf")
for _ in range(3):
    t = time.perf_counter()
    enc.encode_ordinary(text)
    best = min(best, time.perf_counter() - t)
ids = enc.encode_ordinary(text)
print(f"tiktoken_cl100k_encode_mb_s={nbytes / best / 1e6:.2f} tokens={len(ids)} bytes={nbytes}")

tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
trainer = trainers.BpeTrainer(vocab_size=32000, show_progress=False,
                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
t = time.perf_counter()
tok.train([train_file], trainer)
print(f"hf_tokenizers_train_32k_s={time.perf_counter() - t:.2f} "
      f"rayon_threads={os.environ.get('RAYON_NUM_THREADS', 'default')}")
if held_file:
    held = open(held_file, encoding="utf-8").read()
    n = len(tok.encode(held, add_special_tokens=False).ids)
    print(f"hf_heldout_bytes_per_token={len(held.encode()) / n:.4f} tokens={n}")
out = os.environ.get("FERROLAB_HF_OUT")
if out:
    tok.save(out)
