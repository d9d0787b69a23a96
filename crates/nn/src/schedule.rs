//! Learning-rate schedules: the multiplier of the peak learning rate at each step.

/// A learning-rate schedule over a run of `total` steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LrSchedule {
    /// The peak rate throughout.
    Constant,
    /// Linear warm-up to the peak over `warmup` steps (step `i` < `warmup`, counted from 0,
    /// takes `(i + 1) / warmup` of it, so the first step is not wasted at rate 0), then cosine
    /// decay to `min_ratio * peak` at step `total`.
    WarmupCosine {
        /// Warm-up steps.
        warmup: usize,
        /// Total steps.
        total: usize,
        /// Final rate as a fraction of the peak.
        min_ratio: f32,
    },
    /// DeepSeek LLM's multi-step schedule: linear warm-up over `warmup` steps, the peak until
    /// 80% of `total`, then x0.316 until 90%, then x0.1 (DeepSeek LLM, section 2.3).
    MultiStep {
        /// Warm-up steps (DeepSeek LLM: 2000).
        warmup: usize,
        /// Total steps.
        total: usize,
    },
}

impl LrSchedule {
    /// The factor applied to the peak rate at `step` (0-based).
    pub fn factor(&self, step: usize) -> f32 {
        match *self {
            LrSchedule::Constant => 1.0,
            LrSchedule::WarmupCosine {
                warmup,
                total,
                min_ratio,
            } => {
                if step < warmup {
                    (step + 1) as f32 / warmup as f32
                } else if step >= total {
                    min_ratio
                } else {
                    let p = (step - warmup) as f32 / (total - warmup).max(1) as f32;
                    min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + (std::f32::consts::PI * p).cos())
                }
            }
            LrSchedule::MultiStep { warmup, total } => {
                if step < warmup {
                    (step + 1) as f32 / warmup as f32
                } else if (step as f64) < 0.8 * total as f64 {
                    1.0
                } else if (step as f64) < 0.9 * total as f64 {
                    0.316
                } else {
                    0.1
                }
            }
        }
    }

    /// The rate at `step` for a peak rate `peak`.
    pub fn lr(&self, peak: f32, step: usize) -> f32 {
        peak * self.factor(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multistep_matches_deepseek_llm() {
        let s = LrSchedule::MultiStep {
            warmup: 10,
            total: 100,
        };
        assert!((s.factor(0) - 0.1).abs() < 1e-6);
        assert_eq!(s.factor(9), 1.0);
        assert_eq!(s.factor(79), 1.0);
        assert_eq!(s.factor(80), 0.316);
        assert_eq!(s.factor(89), 0.316);
        assert_eq!(s.factor(90), 0.1);
        assert_eq!(s.factor(99), 0.1);
    }

    #[test]
    fn cosine_ends_at_min_and_is_monotone_after_warmup() {
        let s = LrSchedule::WarmupCosine {
            warmup: 5,
            total: 50,
            min_ratio: 0.1,
        };
        assert!((s.factor(4) - 1.0).abs() < 1e-6);
        assert!((s.factor(5) - 1.0).abs() < 1e-6);
        assert!((s.factor(50) - 0.1).abs() < 1e-6);
        let mid = s.factor(5 + 45 / 2);
        assert!((mid - 0.55).abs() < 0.02, "{mid}");
        for k in 5..49 {
            assert!(s.factor(k + 1) <= s.factor(k));
        }
    }
}
