"""PyTorch peer of `ferrolab bench lm`: training throughput of the same language model.

The model is ferrolab's `Lm` (crates/models/src/lm.rs), written the way a PyTorch user would:
LLaMA-style decoder with pre-norm RMSNorm, half-split RoPE, grouped-query attention through
F.scaled_dot_product_attention(is_causal=True), SwiGLU, untied or tied head. One step =
forward + cross-entropy + backward + global-norm clip + AdamW (decay on matrices only), the
same work as one `ferrolab train` step. Batches are random windows of a fixed random token
stream. Prints `tokens_per_s_median=` and `peak_rss_MiB=`.

    python bench/lm_train_torch.py RUNCONFIG.json [--threads N] [--warmup W] [--steps S]

RUNCONFIG.json is a ferrolab `train.json` (written by `ferrolab bench lm`).
"""
import argparse, json, math, resource, statistics, time

import torch
import torch.nn as nn
import torch.nn.functional as F


# `ferrolab bench` interleaves the two engines' steps (FERROLAB_LOCKSTEP=1): bench/lockstep.py
import lockstep

ap = argparse.ArgumentParser()
ap.add_argument("config")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--warmup", type=int, default=3)
ap.add_argument("--steps", type=int, default=10)
args = ap.parse_args()
run = json.load(open(args.config))
m = run["model"]
torch.set_num_threads(args.threads)
torch.manual_seed(0)

V, C, F_, L = m["vocab_size"], m["hidden_size"], m["intermediate_size"], m["num_hidden_layers"]
H, HKV = m["num_attention_heads"], m["num_key_value_heads"]
D = C // H
B, T = run["batch_size"], run["seq_len"]
EPS, THETA, STD = m["rms_norm_eps"], m["rope_theta"], m["initializer_range"]


def rope_tables(t):
    inv = THETA ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
    ang = torch.arange(t, dtype=torch.float64)[:, None] * inv[None, :]
    cos, sin = ang.cos().float(), ang.sin().float()
    return torch.cat([cos, cos], -1), torch.cat([sin, sin], -1)  # (T, D)


def rotate_half(x):
    x1, x2 = x[..., : D // 2], x[..., D // 2 :]
    return torch.cat([-x2, x1], -1)


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.q_proj = nn.Linear(C, H * D, bias=False)
        self.k_proj = nn.Linear(C, HKV * D, bias=False)
        self.v_proj = nn.Linear(C, HKV * D, bias=False)
        self.o_proj = nn.Linear(H * D, C, bias=False)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, H, D).transpose(1, 2)
        k = self.k_proj(x).view(b, t, HKV, D).transpose(1, 2)
        v = self.v_proj(x).view(b, t, HKV, D).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=HKV != H)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, C))


class Layer(nn.Module):
    def __init__(self):
        super().__init__()
        self.input_layernorm = nn.RMSNorm(C, eps=EPS)
        self.self_attn = Attention()
        self.post_attention_layernorm = nn.RMSNorm(C, eps=EPS)
        self.gate_proj = nn.Linear(C, F_, bias=False)
        self.up_proj = nn.Linear(C, F_, bias=False)
        self.down_proj = nn.Linear(F_, C, bias=False)

    def forward(self, x, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class Lm(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed_tokens = nn.Embedding(V, C)
        self.layers = nn.ModuleList(Layer() for _ in range(L))
        self.norm = nn.RMSNorm(C, eps=EPS)
        self.lm_head = None if m.get("tie_word_embeddings") else nn.Linear(C, V, bias=False)
        for p in self.parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, 0.0, STD)
        cos, sin = rope_tables(T)
        self.register_buffer("cos", cos)
        self.register_buffer("sin", sin)

    def forward(self, ids, targets):
        x = self.embed_tokens(ids)
        for layer in self.layers:
            x = layer(x, self.cos, self.sin)
        x = self.norm(x)
        logits = self.lm_head(x) if self.lm_head is not None else x @ self.embed_tokens.weight.T
        return F.cross_entropy(logits.view(-1, V), targets.view(-1))


model = Lm()
decay = [p for p in model.parameters() if p.dim() >= 2]
no_decay = [p for p in model.parameters() if p.dim() < 2]
opt = torch.optim.AdamW(
    [{"params": decay, "weight_decay": run["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
    lr=run["max_lr"], betas=(run["beta1"], run["beta2"]), eps=1e-8,
)
stream = torch.randint(0, V, (1 << 20,))
gen = torch.Generator().manual_seed(1)
times, losses = [], []
for step in range(args.warmup + args.steps):
    starts = torch.randint(0, stream.numel() - T - 1, (B,), generator=gen)
    ids = torch.stack([stream[s : s + T] for s in starts])
    tg = torch.stack([stream[s + 1 : s + T + 1] for s in starts])
    lockstep.wait()
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss = model(ids, tg)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), run["grad_clip"] or float("inf"))  # 0: none
    opt.step()
    dt = time.perf_counter() - t0
    lockstep.report(dt * 1e3)
    losses.append(loss.item())
    if step >= args.warmup:
        times.append(dt)
nparams = sum(p.numel() for p in model.parameters())
med = statistics.median(times)
print(f"torch {torch.__version__} threads={torch.get_num_threads()} params={nparams} B={B} T={T}")
print(f"init_loss={losses[0]:.4f} (ln V={math.log(V):.4f}) final_loss={losses[-1]:.4f}")
print(f"step_ms_median={med * 1e3:.1f} tokens_per_s_median={B * T / med:.0f}")
print(f"peak_rss_MiB={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}")
