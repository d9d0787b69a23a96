//! The training loop: AdamW with DeepSeek LLM's settings and multi-step schedule, gradient
//! accumulation, clipping, held-out validation, snapshots, metrics and a progress bar.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use ferrolab_models::Model;
use ferrolab_nn::{clip_grad_norm, AdamW, AdamWConfig, LrSchedule, Optimizer, Vars};
use ferrolab_tensor::{no_grad, rng, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::config::{RunConfig, TokenizerKind};
use crate::data::{TokenData, Tokenizer};
use crate::error::{Result, TrainError};
use crate::run::{RunDir, State};

/// AdamW over two parameter groups: matrices (decayed) and vectors such as norm scales (not
/// decayed, as in DeepSeek LLM / LLaMA / nanoGPT practice).
pub struct GroupedAdamW {
    decay: AdamW,
    no_decay: AdamW,
}

impl GroupedAdamW {
    /// Splits `params` by rank: rank >= 2 get `cfg.weight_decay`, the rest none.
    pub fn new(params: Vec<(String, Tensor)>, cfg: AdamWConfig) -> GroupedAdamW {
        let (mats, vecs): (Vec<_>, Vec<_>) = params.into_iter().partition(|(_, t)| t.rank() >= 2);
        GroupedAdamW {
            decay: AdamW::new(mats, cfg),
            no_decay: AdamW::new(
                vecs,
                AdamWConfig {
                    weight_decay: 0.0,
                    ..cfg
                },
            ),
        }
    }
}

impl GroupedAdamW {
    /// The optimizer of a run: AdamW with the run's peak rate, betas and weight decay.
    pub fn for_run(params: Vec<(String, Tensor)>, cfg: &RunConfig) -> GroupedAdamW {
        GroupedAdamW::new(
            params,
            AdamWConfig {
                lr: cfg.max_lr,
                betas: (cfg.beta1, cfg.beta2),
                eps: 1e-8,
                weight_decay: cfg.weight_decay,
                decoupled: true,
            },
        )
    }
}

impl Optimizer for GroupedAdamW {
    fn step(&mut self) -> ferrolab_tensor::Result<()> {
        self.decay.step()?;
        self.no_decay.step()
    }
    fn lr(&self) -> f32 {
        self.decay.lr()
    }
    fn set_lr(&mut self, lr: f32) {
        self.decay.set_lr(lr);
        self.no_decay.set_lr(lr);
    }
    fn zero_grad(&self) {
        self.decay.zero_grad();
        self.no_decay.zero_grad();
    }
    fn state(&self) -> Vec<(String, Tensor)> {
        let prefix = |g: &str, v: Vec<(String, Tensor)>| {
            v.into_iter()
                .map(|(n, t)| (format!("{g}.{n}"), t))
                .collect::<Vec<_>>()
        };
        let mut s = prefix("decay", self.decay.state());
        s.extend(prefix("no_decay", self.no_decay.state()));
        s
    }
    fn load_state(&mut self, state: &BTreeMap<String, Tensor>) -> ferrolab_tensor::Result<()> {
        let group = |g: &str| -> BTreeMap<String, Tensor> {
            state
                .iter()
                .filter_map(|(n, t)| {
                    n.strip_prefix(&format!("{g}."))
                        .map(|k| (k.to_string(), t.clone()))
                })
                .collect()
        };
        // each group checks all its names and shapes before changing anything; a failure in
        // the second leaves the first loaded, and the caller (resume) then gives up the run
        self.decay.load_state(&group("decay"))?;
        self.no_decay.load_state(&group("no_decay"))
    }
}

/// How a call to [`Trainer::train`] ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// Steps done in total (the run's step).
    pub step: usize,
    /// Stopped by the stop flag (Ctrl-C) before the last step.
    pub interrupted: bool,
    /// Last held-out loss (nats per token) and bits per byte.
    pub val: Option<(f64, f64)>,
    /// Mean training throughput of this call.
    pub tokens_per_s: f64,
    /// Wall time of this call in seconds.
    pub seconds: f64,
    /// Micro-batches done of the step a stop request dropped (0: it stopped between steps).
    pub dropped_micro_batches: usize,
    /// Steps of this call skipped for a non-finite loss or gradient.
    pub skipped_steps: usize,
}

/// A run in progress.
pub struct Trainer {
    /// The resolved config.
    pub cfg: RunConfig,
    /// Its directory.
    pub run: RunDir,
    /// The model.
    pub model: Model,
    /// Its parameters.
    pub vars: Vars,
    /// Text <-> ids.
    pub tokenizer: Tokenizer,
    data: TokenData,
    opt: GroupedAdamW,
    schedule: LrSchedule,
    step: usize,
    tokens_seen: u64,
    /// Show a progress bar (off in tests).
    pub progress: bool,
}

impl Trainer {
    fn build(
        cfg: RunConfig,
        run: RunDir,
        tokenizer: Tokenizer,
        data: TokenData,
    ) -> Result<Trainer> {
        cfg.validate()?;
        if tokenizer.vocab_size() > cfg.model.vocab_size() {
            return Err(TrainError::Config {
                key: "model.vocab_size".into(),
                msg: format!(
                    "{} is smaller than the tokenizer's {} ids",
                    cfg.model.vocab_size(),
                    tokenizer.vocab_size()
                ),
            });
        }
        check_memory(&cfg)?;
        rng::manual_seed(cfg.seed);
        let vars = Vars::new();
        let model = Model::new(&vars, &cfg.model)?;
        let opt = GroupedAdamW::for_run(vars.all(), &cfg);
        let schedule = LrSchedule::MultiStep {
            warmup: cfg.warmup_steps,
            total: cfg.steps,
        };
        Ok(Trainer {
            tokenizer,
            cfg,
            run,
            model,
            vars,
            data,
            opt,
            schedule,
            step: 0,
            tokens_seen: 0,
            progress: true,
        })
    }

    /// Starts a new run in `dir`: its config files, tokenizer, text record and the snapshot of
    /// step 0 are written; `data` was encoded with `tokenizer`. A run that cannot be set up (a
    /// full disk) is removed again.
    pub fn create(
        dir: &std::path::Path,
        cfg: RunConfig,
        tokenizer: Tokenizer,
        data: TokenData,
    ) -> Result<Trainer> {
        cfg.validate()?;
        if tokenizer.kind() != cfg.tokenizer {
            return Err(TrainError::Config {
                key: "tokenizer".into(),
                msg: format!(
                    "the config says {:?} but a {:?} tokenizer was given",
                    cfg.tokenizer,
                    tokenizer.kind()
                ),
            });
        }
        check_memory(&cfg)?;
        if let Some(w) = eval_cost_warning(&cfg, data.val.len()) {
            crate::note!("{w}");
        }
        let existed = dir.exists();
        // the run is this process's once made (it holds the lock); one that cannot be set up
        // (a full disk, say) is removed, so that the same command can be run again
        let run = RunDir::create(dir, &cfg)?;
        let made = (|| {
            tokenizer.save(&run.path)?;
            run.write_corpus(&data.source)?;
            let t = Trainer::build(cfg, run.clone(), tokenizer, data)?;
            // the snapshot of step 0 (the largest write of the set-up): a run always has one
            // to resume from
            t.snapshot()?;
            Ok(t)
        })();
        if made.is_err() {
            RunDir::discard_new(dir, existed);
        }
        made
    }

    /// Continues the run in `dir` from its snapshot; `data` must be the same corpus, encoded
    /// with the run's tokenizer ([`Trainer::corpus_for_run`]).
    /// A text other than the recorded one (`corpus.json`) is refused.
    pub fn resume(dir: &std::path::Path, data: TokenData) -> Result<Trainer> {
        let (mut run, cfg) = RunDir::open(dir)?;
        // before anything is written: recovery, the metrics, a new corpus.json
        run.lock()?;
        for name in run.remove_stale_temporaries() {
            crate::note!("removed {name}, left by an interrupted snapshot");
        }
        let edits = config_edits(&run, &cfg)?;
        // a bad value is named before any "continues with the new values"
        cfg.validate()?;
        if let Some((step, taken)) = edits {
            if !taken.is_empty() {
                crate::note!(
                    "warning: train.json changed since the snapshot of step {step}: {}; the run \
                     continues with the new values",
                    crate::run::ConfigChange::list(&taken)
                );
            }
        }
        if let Some(w) = eval_cost_warning(&cfg, data.val.len()) {
            crate::note!("{w}");
        }
        let recorded = run.corpus()?;
        if let Some(rec) = &recorded {
            if rec.sha256 != data.source.sha256 {
                return Err(not_the_recorded_text(rec, &data.source));
            }
        }
        let tokenizer = Tokenizer::load(dir, cfg.tokenizer)?;
        let mut t = Trainer::build(cfg, run, tokenizer, data)?;
        t.run.recover()?;
        t.run.check_snapshot_complete()?;
        if t.run.has_snapshot() {
            let tok = t.tokenizer.id();
            let state = t.run.load_snapshot(&t.vars, &mut t.opt, &tok)?;
            rng::set_state(state.rng());
            t.step = state.step;
            t.tokens_seen = state.tokens_seen;
        }
        // (stopped between writing its config and its first snapshot: nothing was trained, so
        // it starts from step 0; the weights above come from the same seed)
        t.run.truncate_metrics(t.step)?;
        let recorded_gone = recorded.as_ref().is_none_or(|r| {
            r.origin != crate::data::SOTU_ORIGIN && !std::path::Path::new(&r.origin).exists()
        });
        if recorded_gone && recorded.as_ref().map(|r| &r.origin) != Some(&t.data.source.origin) {
            // the text was given again (--corpus) after corpus.json was lost or its file
            // moved: record where it is now, so later resumes read it without --corpus; only
            // now that the snapshot loaded, so a failed resume changes nothing
            t.run.write_corpus(&t.data.source)?;
        }
        Ok(t)
    }

    /// The text of a corpus: the file at `corpus`, or the State of the Union speeches
    /// (fetched on first use), with a name for errors.
    /// A file's origin is its absolute path, so that a run records where its text was.
    pub fn read_corpus(corpus: Option<&std::path::Path>) -> Result<(String, String)> {
        // `sotu` (what corpus.json records for it) names the default text (a file of that
        // name is `./sotu`)
        let corpus = corpus.filter(|p| p != &std::path::Path::new(crate::data::SOTU_ORIGIN));
        Ok(match corpus {
            Some(p) => {
                let text = TokenData::read_text(p)?;
                // recorded in corpus.json (UTF-8): the resolved path, else the path as given
                // made absolute (a link with a UTF-8 name to a file without one)
                let abs = [std::fs::canonicalize(p), std::path::absolute(p)]
                    .into_iter()
                    .flatten()
                    .find_map(|a| a.to_str().map(str::to_string))
                    .ok_or_else(|| TrainError::Corpus {
                        path: p.display().to_string(),
                        msg: "its path is not valid UTF-8, so the run cannot record where its \
                              text is (resume reads it from there): rename it, or give a link \
                              with a UTF-8 name"
                            .into(),
                    })?;
                (text, abs)
            }
            None => {
                let speeches = ferrolab_data::sotu_speeches()?;
                let text: String = speeches
                    .iter()
                    .map(|(_, s)| format!("{}\n", s.trim()))
                    .collect();
                (text, crate::data::SOTU_ORIGIN.to_string())
            }
        })
    }

    /// The tokenizer and token data of a new run: for BPE, a vocabulary of
    /// `model.vocab_size` is trained on the training part of the text (never the held-out
    /// tail).
    pub fn prepare(
        cfg: &RunConfig,
        corpus: Option<&std::path::Path>,
        progress: bool,
    ) -> Result<(Tokenizer, TokenData)> {
        let (text, origin) = Trainer::read_corpus(corpus)?;
        let tok = match cfg.tokenizer {
            TokenizerKind::Bytes => Tokenizer::bytes(),
            TokenizerKind::Bpe => {
                if progress {
                    crate::note!(
                        "training a {}-token BPE vocabulary on the training text",
                        cfg.model.vocab_size()
                    );
                }
                let cut = TokenData::split_point(&text, cfg.val_fraction);
                Tokenizer::train_bpe(&text[..cut], cfg.model.vocab_size(), progress)?
            }
        };
        let data = TokenData::from_text(&text, &tok, cfg.val_fraction, cfg.seq_len, &origin)?;
        Ok((tok, data))
    }

    /// The token data of an existing run (its own tokenizer, its config's split). Without
    /// `corpus`, the text the run recorded (`corpus.json`) is read again: the State of the
    /// Union speeches, or the file it was trained on.
    pub fn corpus_for_run(
        dir: &std::path::Path,
        corpus: Option<&std::path::Path>,
    ) -> Result<TokenData> {
        RunDir::check_not_busy(dir)?;
        let (run, cfg) = RunDir::open(dir)?;
        // an edited train.json is named before its settings are used
        config_edits(&run, &cfg)?;
        cfg.validate()?;
        let tok = Tokenizer::load(dir, cfg.tokenizer)?;
        let rec = run.corpus()?;
        if rec.is_none() && corpus.is_none() {
            return Err(TrainError::snapshot(
                &run.file("corpus.json"),
                "is missing, so the text this run was trained on is unknown (the default corpus \
                 is not assumed): pass that text with --corpus PATH (--corpus sotu for the State \
                 of the Union text)",
            ));
        }
        let recorded = match (corpus, &rec) {
            (None, Some(rec)) if rec.origin != crate::data::SOTU_ORIGIN => {
                let p = std::path::PathBuf::from(&rec.origin);
                if let Err(e) = std::fs::metadata(&p) {
                    return Err(TrainError::Corpus {
                        path: rec.origin.clone(),
                        msg: format!(
                            "this run was trained on it, and it cannot be read now ({e}); pass \
                             the same text with --corpus PATH"
                        ),
                    });
                }
                Some(p)
            }
            _ => None,
        };
        let (text, origin) = Trainer::read_corpus(corpus.or(recorded.as_deref()))?;
        let source = crate::data::CorpusSource::of(&text, &origin);
        if let Some(rec) = &rec {
            if source.sha256 != rec.sha256 {
                return Err(not_the_recorded_text(rec, &source));
            }
        }
        TokenData::from_source(&text, &tok, cfg.val_fraction, cfg.seq_len, source)
    }

    /// Steps done.
    pub fn step(&self) -> usize {
        self.step
    }

    /// The training and held-out data.
    pub fn data(&self) -> &TokenData {
        &self.data
    }

    /// Writes a snapshot of the current state.
    pub fn snapshot(&self) -> Result<()> {
        let r = rng::get_state();
        self.run.save_snapshot(
            &self.vars,
            &self.opt,
            State {
                format_version: crate::run::FORMAT_VERSION,
                step: self.step,
                rng_seed: r.seed,
                rng_offset: r.offset,
                tokenizer: self.tokenizer.id(),
                tokens_seen: self.tokens_seen,
                model_sha256: String::new(),
                optimizer_sha256: String::new(),
                config: crate::run::config_json(&self.cfg).ok(),
            },
            None,
        )
    }

    /// Mean held-out loss (nats per token) and bits per byte over `eval_batches` fixed
    /// micro-batches.
    pub fn evaluate(&self) -> Result<(f64, f64)> {
        let e = self.evaluate_full()?;
        Ok((e.loss, e.bits_per_byte))
    }

    /// [`Trainer::evaluate`] with the MTP losses and the expert balance over the whole
    /// held-out set.
    pub fn evaluate_full(&self) -> Result<Eval> {
        let (b, t, n) = (self.cfg.batch_size, self.cfg.seq_len, self.cfg.eval_batches);
        let mut total = 0f64;
        let mut mtp: Vec<f64> = Vec::new();
        let mut loads: Vec<Vec<u64>> = Vec::new();
        no_grad(|| -> Result<()> {
            for k in 0..n {
                let (ids, tg) = self.data.val_batch(k, n, b, t);
                let parts = self.model.loss(&ids, &tg, b, t)?;
                total += parts.main as f64;
                mtp.resize(parts.mtp.len(), 0.0);
                for (m, x) in mtp.iter_mut().zip(&parts.mtp) {
                    *m += *x as f64 / n as f64;
                }
                add_loads(&mut loads, &parts.loads);
            }
            Ok(())
        })?;
        let loss = total / n as f64;
        // nats/token -> bits/byte: tokens per byte of the held-out text
        let tokens_per_byte = self.data.val.len() as f64 / self.data.val_bytes.max(1) as f64;
        Ok(Eval {
            loss,
            bits_per_byte: loss * tokens_per_byte / std::f64::consts::LN_2,
            mtp,
            max_vio_global: loads.iter().map(|l| ferrolab_models::max_vio(l)).collect(),
        })
    }

    /// Trains until `cfg.steps` or until `stop` is set (then a snapshot is written and the
    /// call returns with `interrupted`). Snapshots every `snapshot_every` steps and at the end.
    pub fn train(&mut self, stop: &AtomicBool) -> Result<Outcome> {
        let cfg = self.cfg.clone();
        let (b, t) = (cfg.batch_size, cfg.seq_len);
        let start = Instant::now();
        let start_step = self.step;
        let pb = if self.progress {
            ProgressBar::new(cfg.steps as u64)
        } else {
            ProgressBar::hidden()
        };
        pb.set_style(
            ProgressStyle::with_template(
                "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        pb.set_position(self.step as u64);
        if !self.run.has_snapshot() {
            // a run always has a snapshot to resume from, even if stopped during step 1
            self.snapshot()?;
        }
        // without a terminal the bar is not drawn: a plain line now and then shows progress
        let plain_progress = self.progress && pb.is_hidden();
        let mut last_plain = Instant::now();
        let mut bad_streak = 0usize;
        let mut skipped = 0usize;
        let mut last_bad = (f32::NAN, None);
        let mut last_snapshot = self.step;
        let mut val = None;
        while self.step < cfg.steps {
            if stop.load(Ordering::SeqCst) {
                self.snapshot()?;
                pb.abandon_with_message(format!("stopped; snapshot at step {}", self.step));
                return Ok(self.outcome(true, val, start, start_step));
            }
            let t0 = Instant::now();
            let lr = self.schedule.lr(cfg.max_lr, self.step);
            self.opt.set_lr(lr);
            self.opt.zero_grad();
            let mut loss_sum = 0f32;
            let (mut main_sum, mut balance_sum) = (0f32, 0f32);
            let mut mtp_sum: Vec<f32> = Vec::new();
            let mut loads: Vec<Vec<u64>> = Vec::new();
            let mut max_vio_batch: Vec<f64> = Vec::new();
            // a stop request between micro-batches drops the step (nothing is updated before
            // its end): with many micro-batches a step can take minutes
            let rng_at_start = rng::get_state();
            for micro in 0..cfg.grad_accum {
                if micro > 0 && stop.load(Ordering::SeqCst) {
                    self.opt.zero_grad();
                    rng::set_state(rng_at_start);
                    self.snapshot()?;
                    pb.abandon_with_message(format!(
                        "stopped; step {} dropped after {micro} of its {} micro-batches; \
                         snapshot at step {}",
                        self.step + 1,
                        cfg.grad_accum,
                        self.step
                    ));
                    let mut out = self.outcome(true, val, start, start_step);
                    out.dropped_micro_batches = micro;
                    return Ok(out);
                }
                let (ids, tg) = self.data.train_batch(cfg.seed, self.step, micro, b, t);
                // forward and backward, the batch in parts of whole sequences side by side,
                // one per thread
                let parts =
                    self.model
                        .forward_backward(&ids, &tg, b, t, 1.0 / cfg.grad_accum as f32)?;
                loss_sum += parts.total;
                main_sum += parts.main;
                balance_sum += parts.balance;
                mtp_sum.resize(parts.mtp.len(), 0.0);
                for (m, x) in mtp_sum.iter_mut().zip(&parts.mtp) {
                    *m += x;
                }
                // MaxVio per micro-batch (the batch the router saw), worst over micro-batches
                max_vio_batch.resize(parts.loads.len(), 0.0);
                for (m, l) in max_vio_batch.iter_mut().zip(&parts.loads) {
                    *m = m.max(ferrolab_models::max_vio(l));
                }
                add_loads(&mut loads, &parts.loads);
            }
            let accum = cfg.grad_accum as f32;
            let loss = loss_sum / accum;
            let params = self.vars.tensors();
            let gnorm = if loss.is_finite() {
                clip_grad_norm(&params, cfg.clip_limit())?
            } else {
                f32::NAN
            };
            self.step += 1;
            if !(loss.is_finite() && gnorm.is_finite()) {
                bad_streak += 1;
                skipped += 1;
                last_bad = (loss, loss.is_finite().then_some(gnorm));
                self.opt.zero_grad();
                say(&pb, format!(
                    "warning: step {}: loss {loss}, gradient norm {gnorm}: step skipped ({bad_streak} in a row)",
                    self.step
                ));
                self.run.log_metrics(&json!({
                    "step": self.step, "loss": loss, "lr": lr, "grad_norm": gnorm, "skipped": true
                }))?;
                if bad_streak >= cfg.max_bad_steps {
                    pb.abandon();
                    return Err(TrainError::Diverged {
                        step: self.step,
                        count: bad_streak,
                        loss,
                        grad_norm: loss.is_finite().then_some(gnorm),
                        snapshot_step: last_snapshot,
                    });
                }
                continue;
            }
            bad_streak = 0;
            self.opt.step()?;
            // auxiliary-loss-free balancing: the routing bias follows the step's loads
            self.model.after_step(&loads)?;
            self.tokens_seen += cfg.tokens_per_step() as u64;
            let dt = t0.elapsed().as_secs_f64();
            let tok_rate = cfg.tokens_per_step() as f64 / dt;
            let mut line = json!({
                "step": self.step, "loss": loss, "lr": lr, "grad_norm": gnorm,
                "tokens_per_s": tok_rate.round()
            });
            if !mtp_sum.is_empty() || !loads.is_empty() {
                line["main_loss"] = json!(main_sum / accum);
                line["mtp_loss"] = json!(mtp_sum.iter().map(|m| m / accum).collect::<Vec<_>>());
            }
            if !loads.is_empty() {
                // per MoE layer: expert loads over the step, MaxVio of the batch, the bias
                line["balance_loss"] = json!(balance_sum / accum);
                line["expert_load"] = json!(loads);
                line["max_vio"] = json!(max_vio_batch);
                line["expert_bias"] = json!(self.model.biases());
            }
            self.run.log_metrics(&line)?;
            pb.set_position(self.step as u64);
            // the next-token loss (what the validation loss measures); the total adds the
            // MTP and balance terms
            let main = main_sum / accum;
            pb.set_message(format!(
                "loss {main:.3}  lr {lr:.2e}  {:.0} tok/s",
                tok_rate
            ));
            if plain_progress && last_plain.elapsed().as_secs() >= plain_progress_secs() {
                last_plain = Instant::now();
                let done = (self.step - start_step) as f64;
                let eta = start.elapsed().as_secs_f64() / done * (cfg.steps - self.step) as f64;
                crate::note!(
                    "step {}/{}  loss {main:.4}  lr {lr:.2e}  {:.0} tok/s  about {:.0} s left",
                    self.step,
                    cfg.steps,
                    tok_rate,
                    eta
                );
            }
            let last = self.step == cfg.steps;
            if last || (cfg.eval_every > 0 && self.step.is_multiple_of(cfg.eval_every)) {
                let e = self.evaluate_full()?;
                let (vl, bpb) = (e.loss, e.bits_per_byte);
                val = Some((vl, bpb));
                let mut line = json!({
                    "step": self.step, "val_loss": vl, "val_bpb": bpb
                });
                if !e.mtp.is_empty() {
                    line["val_mtp_loss"] = json!(e.mtp);
                }
                if !e.max_vio_global.is_empty() {
                    line["val_max_vio_global"] = json!(e.max_vio_global);
                }
                self.run.log_metrics(&line)?;
                let total = if (loss - main).abs() > 1e-6 {
                    format!(" (total with MTP and balance terms {loss:.4})")
                } else {
                    String::new()
                };
                say(
                    &pb,
                    format!(
                        "step {:>6}  train loss {main:.4}{total}  val loss {vl:.4}  val bits/byte {bpb:.4}",
                        self.step
                    ),
                );
            }
            if last || (cfg.snapshot_every > 0 && self.step.is_multiple_of(cfg.snapshot_every)) {
                self.snapshot()?;
                last_snapshot = self.step;
            }
        }
        // the last steps were skipped (non-finite), so no snapshot came at the end ("done"
        // was said with the run left at an earlier step): with finite weights (a bad batch)
        // the snapshot moves to the end, as one after a later good step would; weights that
        // are not finite are not saved over the last good snapshot
        if last_snapshot != self.step {
            let finite = self
                .vars
                .tensors()
                .iter()
                .all(|p| p.to_vec().iter().all(|v| v.is_finite()));
            if !finite {
                pb.abandon();
                return Err(TrainError::Diverged {
                    step: self.step,
                    count: bad_streak,
                    loss: last_bad.0,
                    grad_norm: last_bad.1,
                    snapshot_step: last_snapshot,
                });
            }
            self.snapshot()?;
        }
        pb.finish();
        let mut out = self.outcome(false, val, start, start_step);
        out.skipped_steps = skipped;
        Ok(out)
    }

    fn outcome(
        &self,
        interrupted: bool,
        val: Option<(f64, f64)>,
        start: Instant,
        start_step: usize,
    ) -> Outcome {
        let seconds = start.elapsed().as_secs_f64();
        let tokens = (self.step - start_step) * self.cfg.tokens_per_step();
        Outcome {
            step: self.step,
            interrupted,
            val,
            tokens_per_s: tokens as f64 / seconds.max(1e-9),
            seconds,
            dropped_micro_batches: 0,
            skipped_steps: 0,
        }
    }
}

/// A held-out evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct Eval {
    /// Main-head next-token loss (nats per token).
    pub loss: f64,
    /// The same in bits per byte of held-out text.
    pub bits_per_byte: f64,
    /// Multi-token-prediction losses per depth (empty without MTP).
    pub mtp: Vec<f64>,
    /// MaxVio over the whole held-out set, per MoE layer (empty without MoE).
    pub max_vio_global: Vec<f64>,
}

/// Adds per-layer expert loads into a running sum.
fn add_loads(sum: &mut Vec<Vec<u64>>, loads: &[Vec<u64>]) {
    if sum.is_empty() {
        *sum = loads.to_vec();
        return;
    }
    for (s, l) in sum.iter_mut().zip(loads) {
        for (a, b) in s.iter_mut().zip(l) {
            *a += b;
        }
    }
}

/// Seconds between the plain progress lines printed when stderr is not a terminal: 30, or
/// `FERROLAB_PROGRESS_SECS`.
/// A value that is not a whole number of seconds is named once and 30 is used.
fn plain_progress_secs() -> u64 {
    static SECS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SECS.get_or_init(|| match std::env::var("FERROLAB_PROGRESS_SECS") {
        Err(_) => 30,
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            crate::note!(
                "warning: FERROLAB_PROGRESS_SECS={v:?} is not a whole number of seconds; \
                 printing progress every 30 s"
            );
            30
        }),
    })
}

/// Prints above the bar, or plainly when there is no bar (stderr is not a terminal): a
/// hidden indicatif bar drops `println`, and logs must keep the validation lines.
fn say(pb: &ProgressBar, msg: String) {
    if pb.is_hidden() {
        crate::note!("{msg}");
    } else {
        pb.println(msg);
    }
}

/// Loads a trained model from a run directory (its config and the snapshot's weights).
pub fn load_model(dir: &std::path::Path) -> Result<(Model, RunConfig, Tokenizer)> {
    let (_vars, model, cfg, tok) = load_run(dir)?;
    Ok((model, cfg, tok))
}

/// [`load_model`] with the parameters the model holds (to write them elsewhere). A
/// `train.json` whose model or tokenizer settings differ from the snapshot's is refused.
pub fn load_run(dir: &std::path::Path) -> Result<(Vars, Model, RunConfig, Tokenizer)> {
    // read only: the run may be training and writing its next snapshot meanwhile
    let (run, cfg) = RunDir::open(dir)?;
    // the weights were trained with the snapshot's model and tokenizer settings
    config_edits_where(
        &run,
        &cfg,
        crate::run::ConfigChange::is_model,
        "the snapshot's weights were trained with the recorded values",
    )?;
    // before the model is built: a config far larger than the weights (an edited snapshot)
    // would allocate what it describes first, or abort the process trying
    let weights = dir.join("model.safetensors");
    if let Ok(meta) = std::fs::metadata(&weights) {
        let need = cfg.model.num_params().0 as u64;
        if need > meta.len() {
            return Err(TrainError::Snapshot {
                path: dir.display().to_string(),
                msg: format!(
                    "the config describes {need} parameters, and model.safetensors is only {} \
                     bytes: the config does not belong to these weights",
                    meta.len()
                ),
            });
        }
    }
    let vars = Vars::new();
    let model = Model::new(&vars, &cfg.model)?;
    let tok = Tokenizer::load(dir, cfg.tokenizer)?;
    run.load_weights(&vars, &tok.id())?;
    Ok((vars, model, cfg, tok))
}

/// Bytes the system can still give to a process (Linux `MemAvailable`), when known.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A lower bound of the memory a training step of `cfg` holds: 16 bytes a parameter
/// (weights, gradients and AdamW's two moments) and one f32 per token, layer and hidden unit
/// (every layer keeps at least its input for the backward). The real peak is several times
/// the second term; this only catches configs that cannot fit at all.
pub fn training_memory_lower_bound(cfg: &RunConfig) -> f64 {
    let params = cfg.model.num_params().0 as f64;
    let tokens = cfg.batch_size as f64 * cfg.seq_len as f64;
    let acts = tokens * cfg.model.hidden_size() as f64 * cfg.model.num_hidden_layers() as f64;
    16.0 * params + 4.0 * acts
}

/// Compares the run's `train.json` with the config its last snapshot was trained with and
/// refuses the changes `refused` picks, naming them (`why`: what they decide). The other
/// changes are returned with the snapshot's step. `None` without a snapshot or for one
/// written before configs were recorded.
fn config_edits_where(
    run: &RunDir,
    cfg: &RunConfig,
    refused: impl Fn(&crate::run::ConfigChange) -> bool,
    why: &str,
) -> Result<Option<(usize, Vec<crate::run::ConfigChange>)>> {
    let Some((step, old)) = run.snapshot_config()? else {
        return Ok(None);
    };
    let now =
        crate::run::config_json(cfg).map_err(|e| TrainError::snapshot(&run.path, e.to_string()))?;
    let (bad, taken): (Vec<_>, Vec<_>) = crate::run::config_changes(&old, &now)
        .into_iter()
        .partition(|c| refused(c));
    if !bad.is_empty() {
        let only_preset = bad.iter().all(|c| c.key == "preset");
        let why = if only_preset {
            "`preset` names the preset this run started from (its settings are the rest of \
             train.json), so another name says the folder holds another run"
        } else {
            why
        };
        return Err(TrainError::Config {
            key: run.file("train.json").display().to_string(),
            msg: format!(
                "changed since the snapshot of step {step}: {}; {why}: put them back, or start \
                 a new run",
                crate::run::ConfigChange::list(&bad)
            ),
        });
    }
    Ok(Some((step, taken)))
}

/// [`config_edits_where`] for continuing a run: a changed model, tokenizer, batch shape,
/// split or seed is refused (the snapshot cannot continue under them); other changes (steps,
/// learning rate, ...) are returned for the caller to announce.
fn config_edits(
    run: &RunDir,
    cfg: &RunConfig,
) -> Result<Option<(usize, Vec<crate::run::ConfigChange>)>> {
    config_edits_where(
        run,
        cfg,
        crate::run::ConfigChange::is_fixed,
        "these decide the model or which text is trained on and held out, so the snapshot \
         cannot continue under them",
    )
}

/// A warning for a validation that costs far more than it tells: its windows read the
/// held-out text (`val_tokens` tokens) more than twice over (overlapping windows add little),
/// or, when validations recur during the run, one takes more forward passes than the training
/// between two of them (a training micro-batch counted as three: forward and backward).
/// `None` when neither holds.
pub fn eval_cost_warning(cfg: &RunConfig, val_tokens: usize) -> Option<String> {
    let read = cfg.eval_batches as f64 * cfg.batch_size as f64 * cfg.seq_len as f64;
    let mut why = Vec::new();
    // (with one batch there is no smaller eval_batches to advise)
    if read > 2.0 * val_tokens as f64 && cfg.eval_batches > 1 {
        why.push(format!(
            "it reads {read:.0} tokens, {:.1} times the {val_tokens} held-out tokens (its \
             windows overlap, so a smaller eval_batches gives nearly the same figure)",
            read / val_tokens.max(1) as f64
        ));
    }
    let recurs = cfg.eval_every > 0 && cfg.eval_every < cfg.steps;
    let between = cfg
        .eval_every
        .saturating_mul(cfg.grad_accum)
        .saturating_mul(3);
    if recurs && cfg.eval_batches > between {
        why.push(format!(
            "it runs {} forward passes, more than the ~{between} of the {} training steps \
             between validations (a larger eval_every, or a smaller eval_batches for a \
             noisier figure)",
            cfg.eval_batches, cfg.eval_every
        ));
    }
    (!why.is_empty()).then(|| {
        format!(
            "warning: eval_batches {} makes each validation slow: {}",
            cfg.eval_batches,
            why.join("; ")
        )
    })
}

/// Refuses a config whose step cannot fit in the memory this machine has left (see
/// [`training_memory_lower_bound`]); a new run checks this before any other work.
pub fn check_memory(cfg: &RunConfig) -> Result<()> {
    let need = training_memory_lower_bound(cfg);
    if let Some(avail) = available_memory() {
        if need > avail as f64 {
            let gib = |b: f64| b / (1u64 << 30) as f64;
            return Err(TrainError::Config {
                key: "model".into(),
                msg: format!(
                    "a training step needs at least {:.1} GiB ({} parameters at 16 bytes each \
                     with gradients and AdamW moments, plus activations of batch_size {} x \
                     seq_len {}), and this machine has {:.1} GiB available; make the model or \
                     the batch smaller",
                    gib(need),
                    cfg.model.num_params().0,
                    cfg.batch_size,
                    cfg.seq_len,
                    gib(avail as f64)
                ),
            });
        }
    }
    Ok(())
}

/// The error for a resume on another text than the run's recorded one.
fn not_the_recorded_text(
    rec: &crate::data::CorpusSource,
    got: &crate::data::CorpusSource,
) -> TrainError {
    let how = if got.origin == rec.origin && rec.origin == crate::data::SOTU_ORIGIN {
        // the recorded text itself reads differently now
        "the cached State of the Union text has changed since: remove its cache folder to \
         fetch it again, or pass the original text with --corpus PATH"
            .to_string()
    } else if got.origin == rec.origin {
        "the file has changed since: restore it, or pass a copy of the original text with \
         --corpus PATH"
            .to_string()
    } else if rec.origin == crate::data::SOTU_ORIGIN {
        "resume without --corpus".to_string()
    } else {
        format!(
            "resume without --corpus, or with --corpus and a copy of {}",
            rec.origin
        )
    };
    TrainError::Corpus {
        path: got.origin.clone(),
        msg: format!(
            "is not the text this run was trained on: {} ({} bytes, sha256 {}), this one has {} \
             bytes, sha256 {}; {how}",
            rec.origin,
            rec.bytes,
            short_hash(&rec.sha256),
            got.bytes,
            short_hash(&got.sha256),
        ),
    }
}

/// The first 16 hex digits of a sha256, for messages.
fn short_hash(h: &str) -> &str {
    &h[..h.len().min(16)]
}
