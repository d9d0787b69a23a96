//! DeepSeekMoE (arXiv 2401.06066, V3: arXiv 2412.19437 section 2.1.2): shared experts plus
//! fine-grained routed SwiGLU experts, the V3 gate (sigmoid scores, group-limited top-k on
//! score + bias, weights from the unbiased scores) and three balancing policies
//! ([`Balance`]).
//!
//! HF names under a layer's `mlp`: `gate.weight` `(N_r, C)`, `gate.e_score_correction_bias`
//! `(N_r)` (a buffer: saved, never trained by gradient), `experts.J.{gate,up,down}_proj.weight`,
//! `shared_experts.{gate,up,down}_proj.weight` (one SwiGLU `n_shared_experts` times as wide).
//!
//! Letters: B batch, T tokens, N = B T, C width, E = N_r routed experts, K experts per token.

use ferrolab_nn::{Init, Vars};
use ferrolab_tensor::{linear, moe_experts, Error, ExpertWeights, Result, Tensor};

use super::config::{Balance, V3Config};
use crate::lm::SwiGlu;

/// The router: one score per routed expert.
#[derive(Clone)]
pub struct Gate {
    /// `(E, C)`.
    pub weight: Tensor,
    /// `(E)`: added to the scores for selection only (auxiliary-loss-free balancing).
    pub e_score_correction_bias: Tensor,
}

/// One DeepSeekMoE feed-forward.
#[derive(Clone)]
pub struct Moe {
    /// Router.
    pub gate: Gate,
    /// Routed experts.
    pub experts: Vec<SwiGlu>,
    /// Shared experts (fused into one SwiGLU), if any.
    pub shared_experts: Option<SwiGlu>,
    top_k: usize,
    n_group: usize,
    topk_group: usize,
    norm_topk_prob: bool,
    scaling: f32,
    balance: Balance,
    alpha: f32,
    seq_aux: bool,
    gamma: f32,
}

/// What one MoE forward produced.
pub struct MoeOutput {
    /// `(B, T, C)`.
    pub y: Tensor,
    /// The balance loss of this layer with its coefficient applied, if the policy has one.
    pub balance_loss: Option<Tensor>,
    /// Token-slots routed to each expert in this call (sums to N K).
    pub loads: Vec<u64>,
}

/// MaxVio (V3 paper, section 4.5.2): `(max load - mean load) / mean load`; 0 for no tokens.
pub fn max_vio(loads: &[u64]) -> f64 {
    let n = loads.len().max(1) as f64;
    let mean = loads.iter().sum::<u64>() as f64 / n;
    if mean == 0.0 {
        return 0.0;
    }
    (loads.iter().copied().max().unwrap_or(0) as f64 - mean) / mean
}

/// Expert choice for `n` tokens from selection scores `sel` `(n, e)`: group-limited top-k
/// (groups ranked by the sum of their two best scores, `topk_group` kept, the rest masked),
/// then the `k` best experts, best first; ties go to the lower index. Returns `(n, k)`.
pub fn route(sel: &[f32], e: usize, k: usize, n_group: usize, topk_group: usize) -> Vec<usize> {
    let n = sel.len() / e.max(1);
    let per = e / n_group.max(1);
    let mut out = Vec::with_capacity(n * k);
    let mut order: Vec<usize> = Vec::with_capacity(e);
    let mut masked = vec![0f32; e];
    let desc = |s: &[f32], a: usize, b: usize| s[b].total_cmp(&s[a]).then(a.cmp(&b));
    for row in sel.chunks_exact(e) {
        masked.copy_from_slice(row);
        if n_group > 1 && topk_group < n_group {
            let mut gs: Vec<(usize, f32)> = (0..n_group)
                .map(|g| {
                    let grp = &row[g * per..(g + 1) * per];
                    let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
                    for &v in grp {
                        if v > a {
                            (a, b) = (v, a);
                        } else if v > b {
                            b = v;
                        }
                    }
                    (g, a + b)
                })
                .collect();
            gs.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
            for &(g, _) in &gs[topk_group..] {
                masked[g * per..(g + 1) * per].fill(f32::NEG_INFINITY);
            }
        }
        order.clear();
        order.extend(0..e);
        order.select_nth_unstable_by(k - 1, |&a, &b| desc(&masked, a, b));
        let top = &mut order[..k];
        top.sort_by(|&a, &b| desc(&masked, a, b));
        out.extend_from_slice(top);
    }
    out
}

impl Moe {
    /// A MoE layer registered under `vars` (the layer's `mlp`).
    pub fn new(vars: &Vars, cfg: &V3Config, init: Init) -> Result<Moe> {
        let (c, e) = (cfg.hidden_size, cfg.n_routed_experts);
        let g = vars.pp("gate");
        let gate = Gate {
            weight: g.var("weight", &[e, c], init)?,
            e_score_correction_bias: g.buffer("e_score_correction_bias", &[e], Init::Zeros)?,
        };
        let ev = vars.pp("experts");
        let experts = (0..e)
            .map(|j| SwiGlu::new(&ev.pp(j.to_string()), c, cfg.moe_intermediate_size, init))
            .collect::<Result<Vec<_>>>()?;
        let shared_experts = if cfg.n_shared_experts > 0 {
            Some(SwiGlu::new(
                &vars.pp("shared_experts"),
                c,
                cfg.moe_intermediate_size * cfg.n_shared_experts,
                init,
            )?)
        } else {
            None
        };
        Ok(Moe {
            gate,
            experts,
            shared_experts,
            top_k: cfg.num_experts_per_tok,
            n_group: cfg.n_group,
            topk_group: cfg.topk_group,
            norm_topk_prob: cfg.norm_topk_prob,
            scaling: cfg.routed_scaling_factor,
            balance: cfg.moe_balance,
            alpha: cfg.aux_loss_alpha,
            seq_aux: cfg.seq_aux,
            gamma: cfg.bias_update_speed,
        })
    }

    /// The gate scores `(N, E)` (sigmoid, or softmax for the auxiliary-loss baseline).
    fn scores(&self, x: &Tensor) -> Result<Tensor> {
        let logits = linear(x, &self.gate.weight, None)?;
        match self.balance {
            Balance::AuxLoss => logits.softmax(-1),
            Balance::None | Balance::AuxFree => Ok(logits.sigmoid()),
        }
    }

    /// # Shapes
    /// `x` `(B, T, C)` -> `y` `(B, T, C)`.
    pub fn forward(&self, x: &Tensor) -> Result<MoeOutput> {
        let [b, t, c] = x.dims::<3>("Moe")?;
        let (n, e, k) = (b * t, self.experts.len(), self.top_k);
        let x2 = x.reshape(&[n, c])?;
        let scores = self.scores(&x2)?; // (N, E)
        let sv = scores.to_vec();
        let idx = if self.balance == Balance::AuxLoss {
            route(&sv, e, k, self.n_group, self.topk_group)
        } else {
            let bias = self.gate.e_score_correction_bias.to_vec();
            let bad = bias.iter().filter(|b| !b.is_finite()).count();
            if bad > 0 {
                // the logits would stay finite while the experts were chosen arbitrarily
                return Err(Error::Invalid {
                    op: "Moe",
                    msg: format!(
                        "gate.e_score_correction_bias (the routing bias) holds {bad} NaN or \
                         infinite value(s) of {e}: the experts cannot be chosen; the weights \
                         were damaged"
                    ),
                });
            }
            let sel: Vec<f32> = sv
                .chunks_exact(e)
                .flat_map(|r| r.iter().zip(&bias).map(|(s, b)| s + b))
                .collect();
            route(&sel, e, k, self.n_group, self.topk_group)
        };
        let mut loads = vec![0u64; e];
        idx.iter().for_each(|&j| loads[j] += 1);
        // weights from the unbiased scores of the chosen experts, gradient to the gate
        let mut w = scores.gather(1, &idx, &[n, k])?; // (N, K)
        if self.norm_topk_prob {
            w = w.div(&w.sum_dim(1, true)?.add_scalar(1e-20))?;
        }
        if self.scaling != 1.0 {
            w = w.mul_scalar(self.scaling);
        }
        let ex: Vec<ExpertWeights> = self
            .experts
            .iter()
            .map(|s| ExpertWeights {
                gate: &s.gate_proj.weight,
                up: &s.up_proj.weight,
                down: &s.down_proj.weight,
            })
            .collect();
        let mut y = moe_experts(&x2, &w, &idx, &ex)?; // (N, C)
        if let Some(sh) = &self.shared_experts {
            y = y.add(&sh.forward(&x2)?)?;
        }
        let balance_loss = self.balance_loss(&scores, &idx, b, t)?;
        Ok(MoeOutput {
            y: y.reshape(&[b, t, c])?,
            balance_loss,
            loads,
        })
    }

    /// The policy's balance loss, coefficient applied (`None` when it has none or alpha is 0).
    fn balance_loss(
        &self,
        scores: &Tensor,
        idx: &[usize],
        b: usize,
        t: usize,
    ) -> Result<Option<Tensor>> {
        let (e, k) = (self.experts.len(), self.top_k);
        if self.alpha == 0.0 {
            return Ok(None);
        }
        match self.balance {
            Balance::None => Ok(None),
            Balance::AuxFree if !self.seq_aux => Ok(None),
            // sequence-wise: f_i = E / (K T) * count in the sequence, P_i = mean over the
            // sequence of the normalised scores; alpha * sum_i f_i P_i, averaged over sequences
            Balance::AuxFree => {
                let mut f = vec![0f32; b * e];
                let scale = e as f32 / (k * t) as f32;
                for (p, &j) in idx.iter().enumerate() {
                    f[(p / k / t) * e + j] += scale;
                }
                let sn = scores.div(&scores.sum_dim(1, true)?)?; // (N, E)
                let p = sn.reshape(&[b, t, e])?.mean_dim(1, false)?; // (B, E)
                let l = p.mul(&Tensor::from_vec(f, &[b, e])?)?.sum_all();
                Ok(Some(l.mul_scalar(self.alpha / b as f32)))
            }
            // Switch/GShard over the whole batch: f_i = E / (K N) * count, P_i = mean score
            Balance::AuxLoss => {
                let n = b * t;
                let mut f = vec![0f32; e];
                let scale = e as f32 / (k * n) as f32;
                idx.iter().for_each(|&j| f[j] += scale);
                let p = scores.mean_dim(0, false)?; // (E)
                let l = p.mul(&Tensor::from_vec(f, &[e])?)?.sum_all();
                Ok(Some(l.mul_scalar(self.alpha)))
            }
        }
    }

    /// The auxiliary-loss-free update after an optimizer step, with `loads` the token-slots
    /// per expert over the whole step: `b_i += gamma * sign(mean load - load_i)`. Nothing for
    /// the other policies.
    pub fn update_bias(&self, loads: &[u64]) -> Result<()> {
        if self.balance != Balance::AuxFree || self.gamma == 0.0 {
            return Ok(());
        }
        let e = self.experts.len();
        if loads.len() != e {
            return Err(Error::Invalid {
                op: "Moe::update_bias",
                msg: format!("{} loads for {e} experts", loads.len()),
            });
        }
        let mean = loads.iter().sum::<u64>() as f64 / e as f64;
        let gamma = self.gamma;
        self.gate.e_score_correction_bias.update_data(|bias| {
            for (bv, &l) in bias.iter_mut().zip(loads) {
                let d = mean - l as f64;
                if d > 0.0 {
                    *bv += gamma;
                } else if d < 0.0 {
                    *bv -= gamma;
                }
            }
        })
    }

    /// The routing bias per expert.
    pub fn bias(&self) -> Vec<f32> {
        self.gate.e_score_correction_bias.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolab_tensor::rng;

    /// Weights large enough for the routing to depend on the input.
    const RANDOM: Init = Init::Normal {
        mean: 0.0,
        std: 0.5,
    };

    fn cfg(balance: Balance) -> V3Config {
        V3Config {
            hidden_size: 16,
            moe_intermediate_size: 8,
            n_routed_experts: 8,
            n_shared_experts: 1,
            num_experts_per_tok: 2,
            n_group: 4,
            topk_group: 2,
            routed_scaling_factor: 2.0,
            moe_balance: balance,
            aux_loss_alpha: 0.01,
            ..V3Config::tiny(32)
        }
    }

    #[test]
    fn group_limited_routing_follows_the_v3_rule() {
        // 8 experts in 4 groups of 2; group sums: g0 = 1.0, g1 = 0.3, g2 = 1.3, g3 = 0.95.
        // Groups g2 and g0 are kept: expert 4 (0.9) then expert 0 (0.8); expert 6 (0.9) ties
        // expert 4 but sits in g3, which is masked.
        let sel = [0.8, 0.2, 0.05, 0.25, 0.9, 0.4, 0.9, 0.05];
        assert_eq!(route(&sel, 8, 2, 4, 2), vec![4, 0]);
        // without groups expert 6 ties expert 4 and the lower index comes first
        assert_eq!(route(&sel, 8, 3, 1, 1), vec![4, 6, 0]);
    }

    #[test]
    fn a_routing_bias_that_is_not_finite_is_refused() {
        rng::manual_seed(5);
        let vars = Vars::new();
        let m = Moe::new(&vars, &cfg(Balance::AuxFree), RANDOM).unwrap();
        let x = Tensor::randn(&[1, 3, 16], 0.0, 1.0);
        assert!(m.forward(&x).is_ok());
        for v in [f32::NAN, f32::INFINITY] {
            m.gate
                .e_score_correction_bias
                .update_data(|b| b[3] = v)
                .unwrap();
            let err = match m.forward(&x) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("a routing bias of {v} was taken"),
            };
            assert!(
                err.contains("e_score_correction_bias") && err.contains("1 NaN or infinite"),
                "{err}"
            );
        }
    }

    #[test]
    fn routed_output_equals_the_dense_sum_over_chosen_experts() {
        rng::manual_seed(5);
        let vars = Vars::new();
        let c = cfg(Balance::AuxFree);
        let m = Moe::new(&vars, &c, RANDOM).unwrap();
        // bias pushes selection away from the best-scored experts
        m.gate
            .e_score_correction_bias
            .update_data(|b| b.copy_from_slice(&[0.3, -0.2, 0.0, 0.1, -0.3, 0.2, 0.0, 0.05]))
            .unwrap();
        let x = Tensor::randn(&[2, 3, 16], 0.0, 1.0);
        let out = m.forward(&x).unwrap();
        assert_eq!(out.loads.iter().sum::<u64>(), 2 * 3 * 2);
        // reference: every token, every expert computed densely, then combined by hand
        let xv = x.to_vec();
        let y = out.y.to_vec();
        let gw = m.gate.weight.to_vec();
        let bias = m.bias();
        for n in 0..6 {
            let xr = Tensor::from_vec(xv[n * 16..(n + 1) * 16].to_vec(), &[1, 16]).unwrap();
            let s: Vec<f32> = (0..8)
                .map(|j| {
                    let d: f32 = (0..16).map(|i| gw[j * 16 + i] * xv[n * 16 + i]).sum();
                    1.0 / (1.0 + (-d).exp())
                })
                .collect();
            let sel: Vec<f32> = s.iter().zip(&bias).map(|(a, b)| a + b).collect();
            // groups of 2: keep the 2 groups with the largest pair sums
            let mut g: Vec<(usize, f32)> =
                (0..4).map(|i| (i, sel[2 * i] + sel[2 * i + 1])).collect();
            g.sort_by(|a, b| b.1.total_cmp(&a.1));
            let mut cand: Vec<usize> = g[..2]
                .iter()
                .flat_map(|&(i, _)| [2 * i, 2 * i + 1])
                .collect();
            cand.sort_by(|&a, &b| sel[b].total_cmp(&sel[a]));
            let chosen = &cand[..2];
            let z: f32 = chosen.iter().map(|&j| s[j]).sum();
            let mut want = m
                .shared_experts
                .as_ref()
                .unwrap()
                .forward(&xr)
                .unwrap()
                .to_vec();
            for &j in chosen {
                let yj = m.experts[j].forward(&xr).unwrap().to_vec();
                for (w, v) in want.iter_mut().zip(yj) {
                    *w += 2.0 * s[j] / z * v;
                }
            }
            for (a, b) in y[n * 16..(n + 1) * 16].iter().zip(&want) {
                assert!((a - b).abs() < 1e-5, "token {n}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn bias_moves_towards_balance_and_only_for_aux_free() {
        let vars = Vars::new();
        let m = Moe::new(&vars, &cfg(Balance::AuxFree), Init::Zeros).unwrap();
        m.update_bias(&[10, 0, 2, 2, 2, 2, 2, 4]).unwrap(); // mean 3
        let b = m.bias();
        let g = 1e-3;
        assert_eq!(b, vec![-g, g, g, g, g, g, g, -g]);
        assert!(m.update_bias(&[1, 2]).is_err());
        // the bias is a buffer: no gradient, not trained
        assert!(!m.gate.e_score_correction_bias.requires_grad());
        let vars = Vars::new();
        let m = Moe::new(&vars, &cfg(Balance::AuxLoss), Init::Zeros).unwrap();
        m.update_bias(&[10, 0, 2, 2, 2, 2, 2, 4]).unwrap();
        assert!(m.bias().iter().all(|&v| v == 0.0));
    }

    #[test]
    fn balance_losses_match_their_formulas() {
        rng::manual_seed(8);
        for balance in [Balance::AuxFree, Balance::AuxLoss, Balance::None] {
            let vars = Vars::new();
            let c = cfg(balance);
            let m = Moe::new(&vars, &c, RANDOM).unwrap();
            let x = Tensor::randn(&[2, 5, 16], 0.0, 1.0);
            let out = m.forward(&x).unwrap();
            let Some(l) = out.balance_loss else {
                assert_eq!(balance, Balance::None);
                continue;
            };
            // recompute from scratch with plain loops
            let s = m.scores(&x.reshape(&[10, 16]).unwrap()).unwrap().to_vec();
            let sel: Vec<f32> = s.clone(); // bias is zero
            let idx = route(&sel, 8, 2, 4, 2);
            let (e, k) = (8.0f64, 2.0f64);
            let want = match balance {
                Balance::AuxFree => {
                    let mut tot = 0.0;
                    for b in 0..2 {
                        for i in 0..8 {
                            let cnt = (0..5)
                                .filter(|t| idx[(b * 5 + t) * 2..(b * 5 + t) * 2 + 2].contains(&i))
                                .count() as f64;
                            let f = e / (k * 5.0) * cnt;
                            let p: f64 = (0..5)
                                .map(|t| {
                                    let r = &s[(b * 5 + t) * 8..(b * 5 + t + 1) * 8];
                                    r[i] as f64 / r.iter().map(|&v| v as f64).sum::<f64>()
                                })
                                .sum::<f64>()
                                / 5.0;
                            tot += f * p;
                        }
                    }
                    0.01 * tot / 2.0
                }
                _ => {
                    let mut tot = 0.0;
                    for i in 0..8 {
                        let cnt = idx.iter().filter(|&&j| j == i).count() as f64;
                        let p: f64 = (0..10).map(|t| s[t * 8 + i] as f64).sum::<f64>() / 10.0;
                        tot += e / (k * 10.0) * cnt * p;
                    }
                    0.01 * tot
                }
            };
            let got = l.item().unwrap() as f64;
            assert!((got - want).abs() < 1e-6, "{balance:?}: {got} vs {want}");
        }
    }

    #[test]
    fn max_vio_is_relative_excess_of_the_busiest_expert() {
        assert_eq!(max_vio(&[2, 2, 2, 2]), 0.0);
        assert!((max_vio(&[5, 1, 1, 1]) - 1.5).abs() < 1e-12);
        assert_eq!(max_vio(&[0, 0]), 0.0);
    }
}
