"""PyTorch peer of `ferrolab bench lm` for a DeepSeek-V3-style model: training throughput.

The model is written the way a PyTorch user would (no torch.compile):
- MLA attention (optional low-rank query, compressed KV with one shared RoPE key, q/k head size
  nope+rope, v head size v_head_dim) through F.scaled_dot_product_attention(is_causal=True);
- DeepSeekMoE layers after the first `first_k_dense_replace` dense SwiGLU layers: sigmoid (or softmax
  for moe_balance="aux_loss") router with group-limited top-k, a selection-only bias updated after each
  step for "aux_free", routed experts dispatched by sorting token-slots by expert, plus shared experts;
- balance loss (sequence-wise for aux_free+seq_aux, batch-wise for aux_loss, none otherwise), D MTP modules sharing
  embedding and head.
One step = forward + loss + backward + global-norm clip + AdamW (decay on matrices only) + the aux-free
bias update. Batches are random windows of a fixed random token stream. Prints `tokens_per_s_median=`
and `peak_rss_MiB=`; `init_loss`/`final_loss` are the main next-token cross-entropy (the total with
MTP and balance terms is printed on its own line).

    python bench/v3_train_torch.py RUNCONFIG.json [--threads N] [--warmup W] [--steps S]

RUNCONFIG.json is a ferrolab `train.json` whose "model" holds DeepseekV3 config keys plus ferrolab's
moe_balance / bias_update_speed / mtp_loss_weight / aux_loss_alpha / seq_aux / rope_interleave.
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

V, C, L = m["vocab_size"], m["hidden_size"], m["num_hidden_layers"]
FD, FM = m["intermediate_size"], m.get("moe_intermediate_size") or m["intermediate_size"]
H = m["num_attention_heads"]
QL, KVL = m.get("q_lora_rank") or 0, m["kv_lora_rank"]
NOPE, ROPE, VD = m["qk_nope_head_dim"], m["qk_rope_head_dim"], m["v_head_dim"]
E, NS, K = m.get("n_routed_experts") or 0, m.get("n_shared_experts") or 0, m.get("num_experts_per_tok") or 1
G, TG = m.get("n_group") or 1, m.get("topk_group") or 1
SCALE, NORM_TOPK = m.get("routed_scaling_factor", 1.0), m.get("norm_topk_prob", True)
FKD, D = m.get("first_k_dense_replace") or 0, m.get("num_nextn_predict_layers") or 0
BAL = m.get("moe_balance", "aux_free")
ALPHA, SEQ_AUX = m.get("aux_loss_alpha") or 0.0, m.get("seq_aux", True)
GAMMA, LAM = m.get("bias_update_speed") or 0.0, m.get("mtp_loss_weight") or 0.0
INTERLEAVE = m.get("rope_interleave", True)
B, T = run["batch_size"], run["seq_len"]
EPS, THETA, STD = m["rms_norm_eps"], m["rope_theta"], m["initializer_range"]
assert BAL in ("none", "aux_loss", "aux_free"), BAL
assert E == 0 or E % G == 0, "n_routed_experts must divide into n_group groups"


def rope_tables(t):
    inv = THETA ** (-torch.arange(0, ROPE, 2, dtype=torch.float64) / ROPE)
    ang = torch.arange(t, dtype=torch.float64)[:, None] * inv[None, :]
    return ang.cos().float(), ang.sin().float()  # (T, ROPE/2): one angle per rotated pair


def apply_rope(x, cos, sin):
    # Interleaved pairs (2i, 2i+1) or half-split pairs (i, i+R/2) at frequency theta^(-2i/R). The
    # interleaved result is written de-interleaved ([rotated evens | rotated odds]); q and k get the same
    # channel permutation, so q.k is exactly that of the in-place rotation, without an extra copy.
    if INTERLEAVE:
        a, b = x[..., 0::2], x[..., 1::2]
    else:
        a, b = x[..., : ROPE // 2], x[..., ROPE // 2 :]
    return torch.cat([a * cos - b * sin, b * cos + a * sin], -1)


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        if QL:
            self.q_a_proj = nn.Linear(C, QL, bias=False)
            self.q_a_layernorm = nn.RMSNorm(QL, eps=EPS)
            self.q_b_proj = nn.Linear(QL, H * (NOPE + ROPE), bias=False)
        else:
            self.q_proj = nn.Linear(C, H * (NOPE + ROPE), bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(C, KVL + ROPE, bias=False)
        self.kv_a_layernorm = nn.RMSNorm(KVL, eps=EPS)
        self.kv_b_proj = nn.Linear(KVL, H * (NOPE + VD), bias=False)
        self.o_proj = nn.Linear(H * VD, C, bias=False)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x))) if QL else self.q_proj(x)
        q_nope, q_pe = q.view(b, t, H, NOPE + ROPE).transpose(1, 2).split([NOPE, ROPE], -1)
        c, k_pe = self.kv_a_proj_with_mqa(x).split([KVL, ROPE], -1)
        kv = self.kv_b_proj(self.kv_a_layernorm(c)).view(b, t, H, NOPE + VD).transpose(1, 2)
        k_nope, v = kv.split([NOPE, VD], -1)
        k_pe = apply_rope(k_pe.unsqueeze(1), cos, sin).expand(b, H, t, ROPE)  # one key shared by heads
        q = torch.cat([q_nope, apply_rope(q_pe, cos, sin)], -1)
        k = torch.cat([k_nope, k_pe], -1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=(NOPE + ROPE) ** -0.5)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, H * VD))


class Mlp(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.gate_proj = nn.Linear(C, width, bias=False)
        self.up_proj = nn.Linear(C, width, bias=False)
        self.down_proj = nn.Linear(width, C, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class MoE(nn.Module):
    def __init__(self):
        super().__init__()
        self.gate = nn.Linear(C, E, bias=False)
        self.register_buffer("e_score_correction_bias", torch.zeros(E))  # not trained by gradient
        self.experts = nn.ModuleList(Mlp(FM) for _ in range(E))
        self.shared_experts = Mlp(FM * NS) if NS > 0 else None
        self.load = None  # tokens routed to each expert in the last forward

    def forward(self, x):
        b, t, c = x.shape
        xf = x.reshape(-1, c)
        n = xf.shape[0]
        logits = self.gate(xf)
        if BAL == "aux_loss":
            s = logits.softmax(-1)
            choice = s.detach()
        else:
            s = logits.sigmoid()
            choice = s.detach() + self.e_score_correction_bias
        if G > 1:  # group-limited routing: group score = sum of its top-2, keep topk_group groups
            grouped = choice.view(n, G, E // G)
            gidx = grouped.topk(min(2, E // G), -1).values.sum(-1).topk(TG, -1).indices
            keep = torch.zeros(n, G, dtype=torch.bool).scatter_(1, gidx, True)
            choice = grouped.masked_fill(~keep[:, :, None], float("-inf")).view(n, E)
        idx = choice.topk(K, -1).indices  # (N, K)
        w = s.gather(1, idx)
        if NORM_TOPK:
            w = w / (w.sum(-1, keepdim=True) + 1e-20)
        w = w * SCALE

        # dispatch: sort the N*K token-slots by expert, run each expert on its rows only
        flat = idx.flatten()
        order = flat.argsort()
        counts = torch.bincount(flat, minlength=E)
        rows_all, w_all = order // K, w.flatten()[order]
        out = torch.zeros_like(xf)
        start = 0
        for e, cnt in enumerate(counts.tolist()):
            if cnt == 0:
                continue
            rows = rows_all[start : start + cnt]
            y = self.experts[e](xf.index_select(0, rows)) * w_all[start : start + cnt, None]
            out = out.index_add(0, rows, y)
            start += cnt
        if self.shared_experts is not None:
            out = out + self.shared_experts(xf)
        self.load = counts

        aux = x.new_zeros(())
        # as ferrolab: aux_free without seq_aux has no balance loss
        if ALPHA > 0 and (BAL == "aux_loss" or (BAL == "aux_free" and SEQ_AUX)):
            if BAL == "aux_loss":  # batch-wise over all N tokens
                f = counts.to(x.dtype) * (E / (K * n))
                aux = ALPHA * (f * s.mean(0)).sum()
            else:  # sequence-wise (aux_free + seq_aux)
                p = (s / s.sum(-1, keepdim=True)).view(b, t, E).mean(1)  # (B, E)
                cnt = torch.zeros(b, E, dtype=x.dtype).scatter_add_(
                    1, idx.view(b, t * K), torch.ones(b, t * K, dtype=x.dtype)
                )
                aux = ALPHA * ((cnt * (E / (K * t))) * p).sum(-1).mean()
        return out.view(b, t, c), aux


class Layer(nn.Module):
    def __init__(self, i):
        super().__init__()
        self.input_layernorm = nn.RMSNorm(C, eps=EPS)
        self.self_attn = Attention()
        self.post_attention_layernorm = nn.RMSNorm(C, eps=EPS)
        self.mlp = MoE() if i >= FKD and E > 0 else Mlp(FD)

    def forward(self, x, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        h = self.mlp(self.post_attention_layernorm(x))
        if isinstance(h, tuple):
            return x + h[0], h[1]
        return x + h, None


class Mtp(nn.Module):
    def __init__(self, i):
        super().__init__()
        self.enorm = nn.RMSNorm(C, eps=EPS)
        self.hnorm = nn.RMSNorm(C, eps=EPS)
        self.eh_proj = nn.Linear(2 * C, C, bias=False)  # input [enorm(emb) ; hnorm(h)]
        self.block = Layer(i)
        self.shared_head_norm = nn.RMSNorm(C, eps=EPS)


class V3(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed_tokens = nn.Embedding(V, C)
        self.layers = nn.ModuleList(Layer(i) for i in range(L))
        self.norm = nn.RMSNorm(C, eps=EPS)
        self.mtp = nn.ModuleList(Mtp(L + k) for k in range(D))
        self.lm_head = None if m.get("tie_word_embeddings") else nn.Linear(C, V, bias=False)
        for p in self.parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, 0.0, STD)
        cos, sin = rope_tables(T)
        self.register_buffer("cos", cos)
        self.register_buffer("sin", sin)

    def head(self, x):
        return self.lm_head(x) if self.lm_head is not None else x @ self.embed_tokens.weight.T

    def forward(self, ids, targets):
        aux = []
        h = self.embed_tokens(ids)
        for layer in self.layers:
            h, a = layer(h, self.cos, self.sin)
            if a is not None:
                aux.append(a)
        main = F.cross_entropy(self.head(self.norm(h)).view(-1, V), targets.reshape(-1))
        mtp = []
        for k, mod in enumerate(self.mtp, start=1):
            tok = F.pad(targets[:, k - 1 :], (0, k - 1), value=0)  # t_{i+k}; 0 past the window
            h = mod.eh_proj(torch.cat([mod.enorm(self.embed_tokens(tok)), mod.hnorm(h)], -1))
            h, a = mod.block(h, self.cos, self.sin)
            if a is not None:
                aux.append(a)
            tg = F.pad(targets[:, k:], (0, k), value=-100)  # t_{i+k+1}; ignored past the window
            mtp.append(F.cross_entropy(self.head(mod.shared_head_norm(h)).view(-1, V), tg.reshape(-1)))
        l_mtp = (LAM / D) * sum(mtp) if D else main.new_zeros(())
        l_bal = sum(aux) if aux else main.new_zeros(())
        return main + l_mtp + l_bal, main, l_mtp, l_bal

    def moe_layers(self):
        return [mod for mod in self.modules() if isinstance(mod, MoE)]


model = V3()
decay = [p for p in model.parameters() if p.dim() >= 2]
no_decay = [p for p in model.parameters() if p.dim() < 2]
opt = torch.optim.AdamW(
    [{"params": decay, "weight_decay": run["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
    lr=run["max_lr"], betas=(run["beta1"], run["beta2"]), eps=1e-8,
)
moes = model.moe_layers()
stream = torch.randint(0, V, (1 << 20,))
gen = torch.Generator().manual_seed(1)
times, losses, totals = [], [], []
for step in range(args.warmup + args.steps):
    starts = torch.randint(0, stream.numel() - T - 1, (B,), generator=gen)
    ids = torch.stack([stream[s : s + T] for s in starts])
    tg = torch.stack([stream[s + 1 : s + T + 1] for s in starts])
    lockstep.wait()
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss, main, l_mtp, l_bal = model(ids, tg)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), run.get("grad_clip", 1.0) or float("inf"))  # 0: none
    opt.step()
    if BAL == "aux_free" and GAMMA > 0:
        with torch.no_grad():
            for moe in moes:
                load = moe.load.float()
                moe.e_score_correction_bias += GAMMA * torch.sign(load.mean() - load)
    dt = time.perf_counter() - t0
    lockstep.report(dt * 1e3)
    losses.append(main.item())
    totals.append((loss.item(), l_mtp.item(), l_bal.item()))
    if step >= args.warmup:
        times.append(dt)
nparams = sum(p.numel() for p in model.parameters())
med = statistics.median(times)
maxvio = [((mo.load.max() - mo.load.float().mean()) / mo.load.float().mean()).item() for mo in moes]
print(f"torch {torch.__version__} threads={torch.get_num_threads()} params={nparams} B={B} T={T}")
print(f"init_loss={losses[0]:.4f} (ln V={math.log(V):.4f}) final_loss={losses[-1]:.4f}")
print(
    f"init_total={totals[0][0]:.4f} final_total={totals[-1][0]:.4f} final_mtp={totals[-1][1]:.4f} "
    f"final_balance={totals[-1][2]:.3g} moe_layers={len(moes)} last_maxvio_batch="
    + ",".join(f"{v:.2f}" for v in maxvio)
)
print(f"step_ms_median={med * 1e3:.1f} tokens_per_s_median={B * T / med:.0f}")
print(f"peak_rss_MiB={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}")
