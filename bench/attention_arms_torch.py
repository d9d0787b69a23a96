"""Cross-check of `ferrolab experiment attention` in PyTorch + transformers.

Trains HF `DeepseekV3ForCausalLM` (every layer dense: MLA + SwiGLU) and HF `LlamaForCausalLM`
(MHA, and GQA with 2 KV heads) with the experiment arms' shapes and hyperparameters (AdamW 0.9 /
0.95, weight decay 0.1 on matrices, clip 1.0, DeepSeek multi-step schedule, batch 8 x 256) on
the State of the Union corpus tokenized with an arm's own `tokenizer.json`, and prints each
arm's held-out loss. The split is approximately ferrolab's (last 10% of the joined text); the
batches are not the same draws, so compare the gaps between arms, not single values.

    python bench/attention_arms_torch.py RUN_DIR STEPS LR mla mha gqa

RUN_DIR is any arm of a ferrolab experiment (for its tokenizer.json); needs torch,
transformers and tokenizers; the corpus is read from the ferrolab data cache
(`ferrolab data fetch sotu`, or FERROLAB_DATA).
"""
import glob, math, os, sys, time
import torch
from tokenizers import Tokenizer
from transformers import LlamaConfig, LlamaForCausalLM, DeepseekV3Config, DeepseekV3ForCausalLM

torch.set_num_threads(2)
run = sys.argv[1]  # an arm dir holding tokenizer.json
steps, B, T, lr = int(sys.argv[2]), 8, 256, float(sys.argv[3])
cache = os.environ.get("FERROLAB_DATA", os.path.expanduser("~/.cache/ferrolab"))
files = sorted(glob.glob(os.path.join(cache, "sotu", "*.txt")))
if not files:
    sys.exit(f"no corpus under {cache}/sotu: run `ferrolab data fetch sotu` first")
text = "\n\n".join(open(f, encoding="utf-8").read() for f in files)
cut = int(len(text) * 0.9)
tok = Tokenizer.from_file(os.path.join(run, "tokenizer.json"))
tr = torch.tensor(tok.encode(text[:cut]).ids)
va = torch.tensor(tok.encode(text[cut:]).ids)
print("tokens", len(tr), len(va), flush=True)

def make(arm):
    common = dict(vocab_size=2048, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                  num_attention_heads=4, max_position_embeddings=256, rms_norm_eps=1e-6,
                  rope_theta=10000.0, tie_word_embeddings=False, initializer_range=0.02)
    if arm == "mla":
        c = DeepseekV3Config(**common, q_lora_rank=None, kv_lora_rank=96, qk_nope_head_dim=48,
                             qk_rope_head_dim=16, v_head_dim=64, first_k_dense_replace=4,
                             n_routed_experts=8, num_key_value_heads=4, rope_interleave=True,
                             num_nextn_predict_layers=0, moe_intermediate_size=176)
        return DeepseekV3ForCausalLM(c)
    kv = 4 if arm == "mha" else 2
    return LlamaForCausalLM(LlamaConfig(**common, num_key_value_heads=kv))

def lr_at(s):
    warm = max(1, round(steps * 0.105))
    if s < warm: return lr * (s + 1) / warm
    if s < 0.8 * steps: return lr
    if s < 0.9 * steps: return lr * 0.316
    return lr * 0.1

for arm in sys.argv[4:]:
    torch.manual_seed(1234)
    m = make(arm)
    dec = [p for p in m.parameters() if p.dim() >= 2]
    nod = [p for p in m.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": dec, "weight_decay": 0.1}, {"params": nod, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95))
    g = torch.Generator().manual_seed(7)
    t0 = time.time()
    for s in range(steps):
        for grp in opt.param_groups: grp["lr"] = lr_at(s)
        ix = torch.randint(0, len(tr) - T - 1, (B,), generator=g)
        x = torch.stack([tr[i:i + T] for i in ix]); y = torch.stack([tr[i + 1:i + T + 1] for i in ix])
        loss = torch.nn.functional.cross_entropy(m(input_ids=x).logits.view(-1, 2048), y.view(-1))
        opt.zero_grad(); loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0); opt.step()
    m.eval()
    with torch.no_grad():
        n = (len(va) - 1) // T
        ls = []
        for i in range(0, min(n, 64), 8):
            x = torch.stack([va[j * T:(j + 1) * T] for j in range(i, min(i + 8, n))])
            y = torch.stack([va[j * T + 1:(j + 1) * T + 1] for j in range(i, min(i + 8, n))])
            ls.append(torch.nn.functional.cross_entropy(m(input_ids=x).logits.reshape(-1, 2048), y.reshape(-1)).item())
    print(f"{arm}: params {sum(p.numel() for p in m.parameters())} train_loss {loss.item():.4f} val_loss {sum(ls)/len(ls):.4f} ({time.time()-t0:.0f} s)", flush=True)
