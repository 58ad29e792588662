"""``metasr train``: pretrain → meta-train → evaluate, driven by a recipe (see :mod:`.recipes`).

Stages (each resumable):

1. **pretrain** — large-scale bicubic pretraining (SPEC §8); skipped when ``model.weights`` gives
   starting weights or ``pretrain.iterations`` is 0. Its result is saved as ``start_weights.pth``.
2. **meta** — MZSR meta-transfer learning (SPEC §3, §4) with :class:`~metasr_adapter.meta.learner.MetaLearner`;
   tasks come from :class:`~metasr_adapter.meta.tasks.TaskSampler` through DataLoader workers. The result
   is ``meta_trained.pth``.
3. **eval** — mean PSNR after 0..``eval.max_steps`` adaptation steps for the starting weights and the
   meta-trained weights (``eval.json``), plotted as ``psnr_vs_steps.png`` (the paper's Fig. 3).

The run folder also holds ``recipe.yaml`` (the resolved recipe), ``metrics.jsonl`` (one JSON line per
logged step) and ``checkpoint.pt``, written atomically every ``output.checkpoint_every`` steps, at the
end of each stage and on Ctrl-C / SIGTERM (the step in progress finishes first). ``resume=True``
continues from it and ends with exactly the weights of an uninterrupted run: every batch is a
function of ``(seed, step)`` and the checkpoint holds the model, optimiser and RNG states.
"""
from __future__ import annotations

import json
import os
import random
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .. import distributed as ddp
from ..atomic import atomic_write_text, load_checked, save_checked
from .collapse import CollapseWatch
from .divergence import divergence_message, finite_step, finite_weights
from .network import build_model, model_kwargs, saved_inner_lrs, trained_ds_method, trained_on_photos, weights_file
from .recipes import dump_recipe, load_recipe, recipe_diff, recipe_hash, validate_recipe
from .run_state import (STAGES, MetricsLog, StopRequest, TrainingInterrupted, close_iterator, cpu_state, maybe_kill,
                        rng_state, set_rng_state)

__all__ = [
    "CHECKPOINT_NAME",
    "METRICS_NAME",
    "PLOT_NAME",
    "COLLAPSE_EXIT",
    "run_training",
    "export_run_weights",
    "environment_info",
]

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.jsonl"
PLOT_NAME = "psnr_vs_steps.png"
START_WEIGHTS = "start_weights.pth"
FINAL_WEIGHTS = "meta_trained.pth"
EVAL_NAME = "eval.json"
RUN_INFO_NAME = "run_info.json"
_CHECKPOINT_FORMAT = 1
#: the exit status of ``metasr train`` whose final weights collapsed (unless --allow-collapse)
COLLAPSE_EXIT = 3


# ----------------------------------------------------------------------------------------------
# small pieces
# ----------------------------------------------------------------------------------------------
def _device(name: str) -> torch.device:
    from ..devices import resolve_device

    return resolve_device(name)


def environment_info() -> dict[str, Any]:
    """Where code runs: the git commit of this package (when it is a checkout), CPU, threads, torch."""
    import platform

    from ..provenance import cpu_model, source_commit

    commit, dirty = source_commit()
    cpu = cpu_model()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"commit": commit, "dirty": dirty, "cpu": cpu, "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(), "gpu": gpu, "torch": torch.__version__,
            "python": platform.python_version()}


# ----------------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------------
class _Run:
    def __init__(self, recipe: dict[str, Any], out_dir: Path, resume: bool) -> None:
        self.recipe = recipe
        self.out = out_dir
        self.resume = resume
        self.ckpt_path = out_dir / CHECKPOINT_NAME
        self.main = ddp.is_main()  # rank 0 (or the only process) writes every file
        self._parent_fingerprint: str | None = None  # tensors a fine-tuning run started from
        self._learner: Any = None  # the meta stage's MetaLearner (learned inner rates)
        self._checkpoint_rates: dict[str, list[float]] | None = None  # learned rates read by export_weights
        self.log = MetricsLog(out_dir / METRICS_NAME, enabled=self.main)
        self.hash = recipe_hash(recipe)
        self.device = _device(recipe["device"])
        self.progress = bool(recipe["output"]["progress"]) and self.main
        self.stop = StopRequest()
        self.model: nn.Module | None = None
        self.stage_seconds: dict[str, float] = {}
        self.pool_cache: dict[tuple, Any] = {}
        # the meta-learner's and sampler's state at the end of the meta stage, kept in the 'eval' and 'done'
        # checkpoints so that a finished run can be extended exactly (--resume with more meta.iterations)
        self.meta_state: dict[str, Any] | None = None
        self.collapse_watch = CollapseWatch(recipe, self.log)

    # -- checkpoints -----------------------------------------------------------------------
    def save(self, stage: str, step: int, extra: Mapping[str, Any] | None = None, elapsed: float = 0.0) -> Path:
        assert self.model is not None
        if not self.main:
            return self.ckpt_path
        ckpt = {
            "format": _CHECKPOINT_FORMAT,
            "stage": stage,
            "step": int(step),
            "model": cpu_state(self.model.state_dict()),
            "rng": rng_state(),
            "recipe": self.recipe,
            "recipe_hash": self.hash,
            "elapsed": float(elapsed),
            "stage_seconds": dict(self.stage_seconds),
            "saved_at": time.time(),
            "world_size": ddp.world_size(),
        }
        if extra:
            ckpt.update(cpu_state(dict(extra)))
        if stage in ("eval", "done") and self.meta_state is not None:
            ckpt["meta_state"] = cpu_state(self.meta_state)
        return save_checked(ckpt, self.ckpt_path)

    def load_checkpoint(self) -> dict[str, Any] | None:
        if not self.ckpt_path.is_file():
            return None
        ckpt = load_checked(self.ckpt_path)
        if ckpt.get("format") != _CHECKPOINT_FORMAT:
            raise ValueError(f"{self.ckpt_path} has checkpoint format {ckpt.get('format')!r}; "
                             f"this version writes {_CHECKPOINT_FORMAT}")
        diff = recipe_diff(ckpt["recipe"], self.recipe)
        if diff:
            raise ValueError(
                f"cannot resume {self.ckpt_path}: it was written by a different recipe; differing keys: "
                + ", ".join(f"{k} (checkpoint {_get(ckpt['recipe'], k)!r}, now {_get(self.recipe, k)!r})"
                            for k in diff)
                + ". Use the original settings or a new --out folder"
            )
        saved_world = int(ckpt.get("world_size", 1))
        if saved_world != ddp.world_size() and self.main:
            warnings.warn(f"{self.ckpt_path} was written by {saved_world} process(es), resumed by {ddp.world_size()}: "
                          "each step's gradient is the same sum over the whole batch, so training continues "
                          "correctly; float round-off differs from an uninterrupted run", UserWarning, stacklevel=2)
        was, now = ckpt["recipe"]["meta"]["iterations"], self.recipe["meta"]["iterations"]
        if now > was and ckpt["stage"] in ("eval", "done") and "meta_state" in ckpt:
            # extend a finished run: back to the meta stage at its last iteration, with the learner's and the
            # sampler's state as they were there (the batches are a function of the iteration): the weights
            # come out as those of one run of `now` iterations
            ms = ckpt.pop("meta_state")
            ckpt.update({"stage": "meta", "step": was, "learner": ms["learner"], "sampler": ms["sampler"],
                         "elapsed": ms["elapsed"], "recipe": self.recipe})
            if self.main:
                print(f"extending {self.ckpt_path.parent}: meta-iterations {was} -> {now}; the evaluation reruns at "
                      "the end", file=sys.stderr)
            return ckpt
        if now != was:
            past_meta = ckpt["stage"] in ("eval", "done") or (ckpt["stage"] == "meta" and ckpt["step"] > now)
            if past_meta:
                if now > was and ckpt["stage"] in ("eval", "done"):
                    raise ValueError(
                        f"cannot extend {self.ckpt_path} to meta.iterations={now}: it was finished by an older "
                        "version that did not keep the meta-learner's state; train a new run (--out NEW) instead")
                raise ValueError(
                    f"cannot resume {self.ckpt_path} with meta.iterations={now}: the run already took "
                    f"{ckpt['step'] if ckpt['stage'] == 'meta' else was} meta-iterations; use a new --out folder"
                )
            # from here on the run follows the new count
            ckpt["recipe"] = self.recipe
        return ckpt

    # -- data --------------------------------------------------------------------------------
    def _pool(self, root: str, patch_size: int, stride: int, augment: bool, lr_scale: int | None):
        from ..meta.tasks import PatchPool

        d = self.recipe["data"]
        key = (root, patch_size, stride, augment, lr_scale)
        if key not in self.pool_cache:
            self.pool_cache[key] = PatchPool(
                root, patch_size=patch_size, stride=stride, grad_threshold=d["grad_threshold"], augment=augment,
                recursive=d["recursive"], lr_scale=lr_scale, cache_dir=d["cache_dir"], progress=self.progress,
            ).build()
        return self.pool_cache[key]

    def _train_dir(self, key: str | None) -> str:
        path = key or self.recipe["data"]["train_dir"]
        if path is None:
            raise ValueError("data.train_dir is not set: give a folder of training images "
                             "(--set data.train_dir=PATH)")
        return path

    def _loader(self, sampler: Any, start: int, stop: int) -> Iterator[Any]:
        from ..meta.tasks import task_loader

        return task_loader(sampler, start, stop, num_workers=self.recipe["data"]["num_workers"])

    # -- loop ------------------------------------------------------------------------------------
    def _loop(
        self,
        stage: str,
        start: int,
        total: int,
        batches: Iterator[Any],
        step_fn,
        extra_state,
        every: int,
        elapsed0: float,
    ) -> None:
        """Run steps ``start..total-1`` with logging, periodic checkpoints and clean interrupts."""
        from tqdm.auto import tqdm

        log_every = max(1, self.recipe["output"]["log_every"])
        probe_every = self.recipe[stage]["probe_every"]
        every = max(1, every)
        t0 = time.perf_counter() - elapsed0
        # training seconds of the stages before this one (the x axis of PSNR against CPU time)
        before = sum(v for k, v in self.stage_seconds.items() if k in STAGES and STAGES.index(k) < STAGES.index(stage))
        threads = torch.get_num_threads()
        done = start
        last_saved = start
        in_step = False
        bar = tqdm(total=total, initial=start, desc=stage, unit="step", disable=not self.progress,
                   dynamic_ncols=True)
        try:
            for step in range(start, total):
                batch = next(batches)
                in_step = True
                info = self._checked_step(stage, step_fn, batch, step)
                done = step + 1
                in_step = False
                if done % log_every == 0 or done == total:
                    secs = time.perf_counter() - t0
                    self.log.write({"stage": stage, "step": done, **info, "seconds": round(secs, 3),
                                    "run_seconds": round(before + secs, 3), "threads": threads, "time": time.time()})
                if probe_every > 0 and self.main and (done % probe_every == 0 or done == total):
                    p0 = time.perf_counter()
                    secs = p0 - t0
                    probe = self._probe()
                    flag = self.collapse_watch.probe(stage, done, probe)  # {"collapse": why}, or {}
                    self.log.write({"stage": stage, "step": done, "probe": probe, **flag,
                                    "run_seconds": round(before + secs, 3), "threads": threads, "time": time.time()})
                    t0 += time.perf_counter() - p0  # probe time is not training time
                bar.update(1)
                loss_key = "meta_loss" if "meta_loss" in info else "loss"
                if loss_key in info:
                    bar.set_postfix({loss_key: f"{info[loss_key]:.5f}"}, refresh=False)
                if done % every == 0 or done == total:
                    self.save(stage, done, extra_state(), time.perf_counter() - t0)
                    last_saved = done
                maybe_kill(stage, done)
                if ddp.any_rank(self.stop.requested is not None):  # every rank stops after the same step
                    self.stop.requested = self.stop.requested or "a stop request on another rank"
                    break
        except BaseException as exc:
            bar.close()
            close_iterator(batches)
            # a stop request between steps (e.g. Ctrl-C also reached the DataLoader workers): save, stop
            if self.stop.requested and not in_step:
                if done != last_saved:
                    self.save(stage, done, extra_state(), time.perf_counter() - t0)
                raise TrainingInterrupted(stage, done, self.ckpt_path, self.stop.requested) from exc
            raise
        bar.close()
        close_iterator(batches)
        if self.stop.requested:
            if done != last_saved:
                self.save(stage, done, extra_state(), time.perf_counter() - t0)
            raise TrainingInterrupted(stage, done, self.ckpt_path, self.stop.requested)
        self.stage_seconds[stage] = time.perf_counter() - t0

    def _checked_step(self, stage: str, step_fn: Any, batch: Any, step: int) -> dict[str, Any]:
        """``step_fn`` with non-finite losses or weights stopped at once, with the recipe key to change
        (before: NaN weights trained on, and the evaluation blamed its own adaptation rate)."""
        try:
            info = step_fn(batch, step)
        except FloatingPointError as exc:
            why = divergence_message(self.recipe, stage, step + 1, {}, "a non-finite loss")
            raise FloatingPointError(why) from exc
        if not finite_step(info):
            raise FloatingPointError(divergence_message(self.recipe, stage, step + 1, info))
        assert self.model is not None
        if not finite_weights(self.model):
            raise FloatingPointError(divergence_message(
                self.recipe, stage, step + 1, {}, "finite losses, but the update made the weights non-finite"))
        return info

    # -- stages ----------------------------------------------------------------------------------
    def stage_pretrain(self, ckpt: dict[str, Any] | None) -> None:
        from ..meta.pretrain import KernelPairSampler, PairSampler, PhotoPairSampler, Pretrainer
        from ..io.weights import load_weights, tensor_fingerprint

        r, p = self.recipe, self.recipe["pretrain"]
        assert self.model is not None
        fine_tune = r["model"]["weights"] is not None and p["degradation"] == "photo" and p["iterations"] > 0
        if r["model"]["weights"] is not None and (ckpt is None or ckpt["stage"] != "pretrain"):
            # a resumed fine-tuning run gets its weights from the checkpoint instead
            load_weights(self.model, weights_file(r["model"]["weights"]))
            self._parent_fingerprint = tensor_fingerprint(self.model)
        elif ckpt is not None and ckpt["stage"] == "pretrain":
            self._parent_fingerprint = ckpt.get("parent_fingerprint")
        if (r["model"]["weights"] is not None and not fine_tune) or p["iterations"] == 0:
            if r["model"]["weights"] is not None:
                source = f"loaded from {r['model']['weights']}"
            else:
                source = "random initialisation (pretrain.iterations = 0)"
            self._save_weights(START_WEIGHTS, source=source)
            self.log.write({"stage": "pretrain", "step": 0, "skipped": True, "source": source, "time": time.time()})
            return
        start, elapsed = 0, 0.0
        trainer = Pretrainer(self.model, lr=p["lr"], decay_every=p["lr_decay_every"],
                             decay_factor=p["lr_decay_factor"], lr_min=p["lr_min"], loss=p["loss"],
                             schedule=p["schedule"], total=p["iterations"], precision=p["precision"])
        if ckpt is not None and ckpt["stage"] == "pretrain":
            start, elapsed = int(ckpt["step"]), float(ckpt["elapsed"])
            if "pretrainer" in ckpt:
                trainer.load_state_dict(ckpt["pretrainer"])
        upsample_input = bool(getattr(self.model, "upsample_input", False))
        sampler: Any
        if p["degradation"] == "photo":
            pool = self._pool(self._train_dir(p["train_dir"]), p["patch_size"], p["stride"], p["augment"], None)
            sampler = PhotoPairSampler(pool, p["batch_size"], scale=p["scale"], family=r["data"]["photo"], seed=r["seed"],
                                       upsample_input=upsample_input)
        elif p["degradation"] == "kernel":
            d = r["data"]
            pool = self._pool(self._train_dir(p["train_dir"]), p["patch_size"], p["stride"], p["augment"], None)
            sampler = KernelPairSampler(
                pool, p["batch_size"], kernels=p["kernels"], scales=d["scales"], kernel_size=d["kernel_size"],
                k1_factor=d["kernel_k1_factor"], min_var=d["kernel_min_var"], ds_method=d["ds_method"], noise_std=d["noise_std"],
                upsample_input=upsample_input, seed=r["seed"],
            )
        else:
            pool = self._pool(self._train_dir(p["train_dir"]), p["patch_size"], p["stride"], p["augment"], p["scale"])
            sampler = PairSampler(pool, p["batch_size"], seed=r["seed"], upsample_input=upsample_input)
        if ckpt is not None and ckpt["stage"] == "pretrain" and "sampler" in ckpt:
            sampler.load_state_dict(ckpt["sampler"])

        def step_fn(batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
            return trainer.step(batch, step)

        if start < p["iterations"]:
            self._loop("pretrain", start, p["iterations"], self._loader(sampler, start, p["iterations"]), step_fn,
                       lambda: {"pretrainer": trainer.state_dict(), "sampler": sampler.state_dict(),
                                "parent_fingerprint": self._parent_fingerprint},
                       r["output"]["pretrain_checkpoint_every"], elapsed)
        how = {"bicubic": "bicubic pairs, SPEC §8", "kernel": "random-kernel pairs",
               "photo": "photo-degradation pairs"}[p["degradation"]]
        extra = {}
        if fine_tune:
            how += f", from {r['model']['weights']}"
            if self._parent_fingerprint:  # lets tools/package_weights.py check a fine-tuned run's parent
                extra["parent_fingerprint"] = self._parent_fingerprint
        self._save_weights(START_WEIGHTS, source=f"pretrained {p['iterations']} steps ({how})", **extra)

    def stage_meta(self, ckpt: dict[str, Any] | None) -> None:
        from ..meta.learner import MAMLConfig, MetaLearner
        from ..meta.tasks import MLSRTaskSampler, TaskSampler

        r, m, d = self.recipe, self.recipe["meta"], self.recipe["data"]
        assert self.model is not None
        cfg = MAMLConfig(
            inner_steps=m["inner_steps"], inner_lr=m["inner_lr"], first_order=m["first_order"], meta_lr=m["meta_lr"],
            loss_weighting=m["loss_weighting"], grad_clip=m["grad_clip"], adapt_params=m["adapt_params"],
            backend=m["backend"], precision=m["precision"], task_batching=m["task_batching"],
            channels_last=m["channels_last"], adam_variant=m["adam_variant"], anneal_span=float(m["anneal_span"]),
            log_query_losses=m["log_query_losses"], learn_inner_lr=m["learn_inner_lr"],
            inner_lr_meta_lr=m["inner_lr_meta_lr"], conv_algorithm=m["conv_algorithm"], task_threads=m["task_threads"],
        )
        learner = MetaLearner(self.model, cfg, loss_fn=m["loss"])
        self._learner = learner  # probes and the saved metadata read its learned rates
        start, elapsed = 0, 0.0
        if ckpt is not None and ckpt["stage"] == "meta":
            start, elapsed = int(ckpt["step"]), float(ckpt["elapsed"])
            if "learner" in ckpt:
                learner.load_state_dict(ckpt["learner"])
        elif m["learn_inner_lr"] and m["inner_lr_start"] == "weights":
            learner.set_inner_lrs(saved_inner_lrs(r["model"]["weights"]))
        total = m["iterations"]
        if start < total:
            pool = self._pool(self._train_dir(None), d["patch_size"], d["stride"], d["augment"], None)
            upsample_input = bool(getattr(self.model, "upsample_input", False))
            sampler: Any
            if d["tasks"] == "mlsr":
                if d["noise_std"]:
                    raise ValueError(f"data.noise_std={d['noise_std']}: MLSR tasks add no noise; set it to 0")
                sampler = MLSRTaskSampler(
                    pool, meta_batch=m["meta_batch"], task_batch=m["task_batch"], scale=d["scales"][0],
                    kernel=d["kernel"], kernel_size=d["kernel_size"], k1_factor=d["kernel_k1_factor"], min_var=d["kernel_min_var"],
                    ds_method=d["ds_method"], upsample_input=upsample_input, seed=r["seed"], family=d["photo"],
                )
            else:
                sampler = TaskSampler(
                    pool, meta_batch=m["meta_batch"], task_batch=m["task_batch"], scales=d["scales"],
                    kernel_size=d["kernel_size"], k1_factor=d["kernel_k1_factor"], min_var=d["kernel_min_var"], ds_method=d["ds_method"],
                    noise_std=d["noise_std"], upsample_input=upsample_input, seed=r["seed"],
                )
            if ckpt is not None and ckpt["stage"] == "meta" and "sampler" in ckpt:
                sampler.load_state_dict(ckpt["sampler"])
            always_first = bool(m["first_order"])

            # the recipe's rates, not the groups' (a resumed optimiser state holds the last, scaled ones)
            base_rates = [m["meta_lr"]] + ([m["inner_lr_meta_lr"]] if learner.log_inner_lr is not None else [])

            def step_fn(batch: Any, step: int) -> dict[str, Any]:
                # SPEC §4: first order before `second_order_from`, second order from then on
                learner.config.first_order = always_first or step < m["second_order_from"]
                factor = meta_lr_factor(m, step, total)  # a function of the step: exact on resume
                for group, base in zip(learner.optimizer.param_groups, base_rates):
                    group["lr"] = base * factor
                info = learner.meta_step(batch.to(self.device), step)
                return {k: (float(v) if isinstance(v, (int, float)) else [None if x is None else float(x) for x in v])
                        for k, v in info.items() if isinstance(v, (int, float, list, tuple))}  # None: not computed

            self._loop("meta", start, total, self._loader(sampler, start, total), step_fn,
                       lambda: {"learner": learner.state_dict(), "sampler": sampler.state_dict()},
                       r["output"]["checkpoint_every"], elapsed)
            self.meta_state = {"learner": learner.state_dict(), "sampler": sampler.state_dict(),
                               "elapsed": self.stage_seconds["meta"]}
        elif ckpt is not None and "learner" in ckpt and "sampler" in ckpt:  # resumed exactly at the last iteration
            self.meta_state = {"learner": ckpt["learner"], "sampler": ckpt["sampler"], "elapsed": elapsed}
            self.stage_seconds["meta"] = elapsed  # the stage's time so far (the lineage of the weights counts it)
        self._save_weights(FINAL_WEIGHTS, source=f"meta-trained {total} iterations", recipe=r.get("name"))

    def _save_weights(self, name: str | Path, **metadata: Any) -> Path:
        """Save the model as ``name`` (relative to the run folder) with the metadata that rebuilds and adapts it."""
        from ..io.weights import save_weights

        path = self.out / name
        if self.main:
            save_weights(self.model, path, **self._arch_meta(), **metadata)
        return path

    def _arch_meta(self) -> dict[str, Any]:
        """Metadata that lets ``load_model(arch, path)`` / ``metasr eval --weights`` rebuild the network."""
        r = self.recipe
        meta = {"arch": r["model"]["name"], "arch_kwargs": model_kwargs(r), "scale": float(r["model"]["scale"]),
                "ds_method": trained_ds_method(r), "schedule": self._adapt_schedule(), "loss": r["meta"]["loss"],
                "adapt_params": r["meta"]["adapt_params"]}
        if trained_on_photos(r):
            from ..ops.degradation_spec import PhotoDegradations

            meta["degradation"] = {"family": "photo", **PhotoDegradations.from_dict(r["data"]["photo"]).to_dict()}
        return meta

    def _adapt_schedule(self) -> Any:
        """The test-time schedule of the trained weights: the learned inner rates (``meta.learn_inner_lr``,
        as ``{"per_parameter": …}``), else ``eval.schedule``."""
        from ..io.weights import read_metadata

        if self._learner is not None and self._learner.log_inner_lr is not None:
            return {"per_parameter": self._learner.learned_inner_lrs()}
        if self._checkpoint_rates is not None:
            return {"per_parameter": self._checkpoint_rates}
        final = self.out / FINAL_WEIGHTS
        if self.recipe["meta"]["learn_inner_lr"] and final.is_file():  # resumed after meta-training
            saved = read_metadata(final).get("schedule")
            if isinstance(saved, dict):
                return saved
        return self.recipe["eval"]["schedule"]

    def _evaluate(self, model: nn.Module, label: str, include_bicubic: bool,
                  steps: Sequence[int] | None = None, schedule: Any = None) -> dict[str, Any]:
        from ..pipelines.evaluate import evaluate_folder
        from ..adapt.metasr import MetaSR

        e = self.recipe["eval"]
        schedule = e["schedule"] if schedule is None else schedule
        msr = MetaSR(model, float(self.recipe["model"]["scale"]), schedule=schedule, device=self.device,
                     loss=self.recipe["meta"]["loss"], adapt_params=self.recipe["meta"]["adapt_params"])
        kernel = e["kernel"]
        try:
            report = evaluate_folder(
                msr, e["gt_dir"], lr_dir=e["lr_dir"], kernel=kernel,
                steps=list(range(e["max_steps"] + 1)) if steps is None else list(steps),
                ds_method=e["ds_method"], include_bicubic=include_bicubic, progress=self.progress, limit=e["limit"],
            )
        except FloatingPointError as exc:  # MetaSR's message names its own arguments (lr=/--lr), not the recipe's
            rates = ("the learned inner rates (meta.learn_inner_lr; lower meta.inner_lr_meta_lr)"
                     if isinstance(schedule, Mapping) else f"eval.schedule = {schedule!r} (--set eval.schedule=...)")
            raise FloatingPointError(f"evaluating the {label} weights: the adaptation diverged ({exc}); its "
                                     f"learning rate comes from {rates}") from exc
        out = report.to_dict()
        out["label"] = label
        return out

    def _probe(self) -> dict[str, float] | None:
        """Mean PSNR of the current weights after ``eval.probe_steps`` adaptation steps (None without
        ``eval.gt_dir``). Runs on a copy, so the training state is untouched."""
        import copy

        e = self.recipe["eval"]
        if e["gt_dir"] is None:
            return None
        assert self.model is not None
        was_training = self.model.training
        model = copy.deepcopy(self.model).eval()
        saved = self.progress
        self.progress = False
        try:
            report = self._evaluate(model, "probe", include_bicubic=False, steps=e["probe_steps"],
                                    schedule=self._adapt_schedule())
        finally:
            self.progress = saved
            self.model.train(was_training)
        return {str(k): round(float(v), 4) for k, v in report["mean_psnr"].items()}

    def stage_eval(self) -> dict[str, Any] | None:
        from ..io.weights import load_weights

        e = self.recipe["eval"]
        if not self.main:
            return None  # rank 0 evaluates
        if e["gt_dir"] is None:
            warnings.warn("eval.gt_dir is not set: skipping evaluation and the PSNR-vs-steps plot", UserWarning,
                          stacklevel=2)
            return None
        assert self.model is not None
        t0 = time.perf_counter()
        results: dict[str, Any] = {}
        if e["evaluate_start"]:
            start_model = build_model(self.recipe).to(self.device)
            load_weights(start_model, self.out / START_WEIGHTS)
            results["start"] = self._evaluate(start_model, "starting point", include_bicubic=False)
        results["meta_trained"] = self._evaluate(self.model, "meta-trained", include_bicubic=True,
                                                 schedule=self._adapt_schedule())
        atomic_write_text(self.out / EVAL_NAME, json.dumps(results, indent=2) + "\n")
        curves = {}
        names = {"start": "starting point", "meta_trained": "meta-trained"}
        for key in ("start", "meta_trained"):
            if key in results:
                mp = results[key]["mean_psnr"]
                curves[names[key]] = {int(k): v for k, v in mp.items() if k.isdigit()}
                self.log.write({"stage": "eval", "step": e["max_steps"], "model": key,
                                "mean_psnr": {k: v for k, v in mp.items()}, "time": time.time()})
        collapse = self.collapse_watch.final(results)
        if collapse:
            warnings.warn(collapse, UserWarning, stacklevel=2)
            self.log.write({"stage": "eval", "step": e["max_steps"], "collapse": collapse, "time": time.time()})
        baseline = results["meta_trained"]["mean_psnr"].get("bicubic")
        from .plots import psnr_vs_steps

        title = f"{self.recipe.get('name') or 'run'}: mean PSNR on {Path(e['gt_dir']).name} ({_kernel_label(e['kernel'])})"
        psnr_vs_steps(curves, self.out / PLOT_NAME, title=title, baseline=baseline)
        self.stage_seconds["eval"] = time.perf_counter() - t0
        return results

    # -- driver ------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        self.out.mkdir(parents=True, exist_ok=True)
        ddp.barrier()  # every rank sees the folder as it was before rank 0 starts writing into it
        ckpt = None
        if self.ckpt_path.is_file():
            if not self.resume:
                raise ValueError(f"{self.out} already holds a run ({CHECKPOINT_NAME}); pass --resume to continue it "
                                 "or choose another --out folder")
            ckpt = self.load_checkpoint()
        elif self.resume:
            warnings.warn(f"--resume: no checkpoint in {self.out}; starting from the beginning", UserWarning,
                          stacklevel=2)
        if ckpt is None and self.log.path.exists() and self.main:
            self.log.path.unlink()  # a run that died before its first checkpoint
        self._check_paths(ckpt)
        if self.main:
            atomic_write_text(self.out / "recipe.yaml", dump_recipe(self.recipe))
            self._record_session(resumed_from=None if ckpt is None else (ckpt["stage"], int(ckpt["step"])))

        self.model = build_model(self.recipe)
        if ckpt is not None:
            self.model.load_state_dict(ckpt["model"])
            set_rng_state(ckpt["rng"])
            self.stage_seconds.update(ckpt.get("stage_seconds", {}))
            self.meta_state = ckpt.get("meta_state")  # an 'eval' or 'done' checkpoint carries it forward
            self.log.truncate(ckpt["stage"], int(ckpt["step"]))
            stage = ckpt["stage"]
        else:
            seed = self.recipe["seed"]
            torch.manual_seed(seed)
            np.random.seed(seed & 0xFFFFFFFF)
            random.seed(seed)
            stage = "pretrain"
        self.model.to(self.device)

        results = None
        with self.stop:  # training stages: Ctrl-C / SIGTERM finish the step, save, stop
            if stage == "pretrain":
                self.stage_pretrain(ckpt)
                stage, ckpt = "meta", None
                self.save("meta", 0)
            if stage == "meta":
                self.stage_meta(ckpt)
                stage, ckpt = "eval", None
                self.save("eval", self.recipe["meta"]["iterations"])
        # evaluation restarts from scratch on resume, so plain signal handling is fine here
        if stage == "eval":
            results = self.stage_eval()
            self.save("done", self.recipe["meta"]["iterations"])
        elif stage == "done" and (self.out / EVAL_NAME).is_file():
            results = json.loads((self.out / EVAL_NAME).read_text())
        return self.summary(results)

    def _check_paths(self, ckpt: dict[str, Any] | None) -> None:
        """Every folder and file the remaining stages read, checked before the first step."""
        r = self.recipe
        stage = ckpt["stage"] if ckpt is not None else "pretrain"
        need: list[tuple[str, Any, str]] = []
        training = stage in ("pretrain", "meta")
        pretraining = stage == "pretrain" and r["model"]["weights"] is None and r["pretrain"]["iterations"] > 0
        if training and (pretraining and r["pretrain"]["train_dir"] is None or stage == "meta" or
                         r["meta"]["iterations"] > 0):
            need.append(("data.train_dir", r["data"]["train_dir"], "dir"))
        if pretraining and r["pretrain"]["train_dir"] is not None:
            need.append(("pretrain.train_dir", r["pretrain"]["train_dir"], "dir"))
        if stage == "pretrain" and r["model"]["weights"] is not None:
            need.append(("model.weights", weights_file(r["model"]["weights"]), "any"))
        e = r["eval"]
        if e["gt_dir"] is not None and stage != "done":
            need.append(("eval.gt_dir", e["gt_dir"], "dir"))
            if e["lr_dir"] is not None:
                need.append(("eval.lr_dir", e["lr_dir"], "dir"))
            if str(e["kernel"]).lower().endswith((".mat", ".npy")):
                need.append(("eval.kernel", e["kernel"], "file"))
        for key, value, kind in need:
            if value is None:
                raise ValueError(f"{key} is not set: give a folder of training images (--set {key}=PATH)")
            path = Path(value)
            ok = path.is_dir() if kind == "dir" else path.is_file() if kind == "file" else path.exists() or \
                Path(str(value) + ".index").exists()
            if not ok:
                fix = " (or --set eval.gt_dir=null to skip evaluation)" if key.startswith("eval.") else ""
                raise FileNotFoundError(f"{key} = {value}: no such {'folder' if kind == 'dir' else 'file'}; "
                                        f"--set {key}=PATH{fix}")

    def _record_session(self, resumed_from: tuple[str, int] | None) -> None:
        """Append this session's lineage (code commit, machine, threads) to ``run_info.json``."""
        path = self.out / RUN_INFO_NAME
        info = json.loads(path.read_text()) if path.is_file() and resumed_from is not None else {"sessions": []}
        info["sessions"].append({**environment_info(), "resumed_from": resumed_from, "started": time.time()})
        atomic_write_text(path, json.dumps(info, indent=2) + "\n")

    def summary(self, results: dict[str, Any] | None) -> dict[str, Any]:
        def curve(key: str) -> dict[int, float] | None:
            if not results or key not in results:
                return None
            return {int(k): v for k, v in results[key]["mean_psnr"].items() if k.isdigit()}

        plot = self.out / PLOT_NAME
        return {
            "out_dir": str(self.out),
            "checkpoint": str(self.ckpt_path),
            "metrics_log": str(self.log.path),
            "plot": str(plot) if plot.is_file() and results else None,
            "start_weights": str(self.out / START_WEIGHTS),
            "final_weights": str(self.out / FINAL_WEIGHTS),
            "eval": None if not results else str(self.out / EVAL_NAME),
            "psnr_start": curve("start"),
            "psnr_meta_trained": curve("meta_trained"),
            "psnr_bicubic": (results or {}).get("meta_trained", {}).get("mean_psnr", {}).get("bicubic"),
            "stage_seconds": dict(self.stage_seconds),
            "collapse": self.collapse_watch.final(results),  # None, or why the final weights look wrecked
        }


def _get(tree: Mapping[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return "<missing>"
        node = node[part]
    return node


def _kernel_label(kernel: str) -> str:
    return Path(kernel).name if ("/" in kernel or os.sep in kernel) else kernel


def meta_lr_factor(meta: Mapping[str, Any], step: int, total: int) -> float:
    """β at ``step`` of ``total`` over ``meta.meta_lr`` (``meta.meta_lr_schedule``); the learned inner rates'
    Adam rate is scaled by the same factor."""
    if meta["meta_lr_schedule"] == "constant":
        return 1.0
    from ..meta.pretrain import cosine_lr

    return cosine_lr(step, meta["meta_lr"], max(1, total), meta["meta_lr_min"]) / meta["meta_lr"]


def export_run_weights(run_dir: str | os.PathLike, path: str | os.PathLike) -> dict[str, Any]:
    """Save the weights of the run in ``run_dir`` as its last checkpoint holds them, while the run may go on.

    The file carries the metadata the run's final weights would (architecture, scale, degradation, loss and
    test-time schedule, learned inner rates included), so ``metasr eval --weights PATH`` and ``load_model``
    use it as they use ``meta_trained.pth``. Nothing in ``run_dir`` changes. Returns ``{"path", "stage",
    "step"}``.
    """
    folder = Path(run_dir)
    saved = folder / "recipe.yaml"
    if not (folder / CHECKPOINT_NAME).is_file() or not saved.is_file():
        raise FileNotFoundError(f"{run_dir} holds no run to export (it needs {CHECKPOINT_NAME} and recipe.yaml); "
                                "give the -o folder of a `metasr train` run")
    run = _Run(load_recipe(saved), folder, resume=True)
    run.main = True
    ckpt = run.load_checkpoint()
    run.model = build_model(run.recipe)
    run.model.load_state_dict(ckpt["model"])
    learner = ckpt.get("learner") or (ckpt.get("meta_state") or {}).get("learner") or {}  # meta / eval, done
    log_rates = learner.get("log_inner_lr")
    if log_rates is not None:
        from ..adapt.step import select_parameters

        names = select_parameters(run.model, run.recipe["meta"]["adapt_params"])
        rates = log_rates.exp().tolist()
        run._checkpoint_rates = {n: rates[i] for i, n in enumerate(names)}
    stage, step = str(ckpt["stage"]), int(ckpt["step"])
    target = Path(path).resolve()
    run._save_weights(target, source=f"exported from {folder.name}'s checkpoint ({stage} stage, step {step})",
                      recipe=run.recipe.get("name"))
    return {"path": str(target), "stage": stage, "step": step}


def run_training(
    recipe: Mapping[str, Any] | str | os.PathLike,
    resume: bool = False,
    out_dir: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Run (or resume) a recipe: pretrain → meta-train → eval. Returns a summary dict (paths,
    per-step mean PSNR of the starting point and the meta-trained model, seconds per stage).

    ``recipe``: a recipe file path (``overrides`` apply) or an already loaded recipe dict.
    ``out_dir``: the run folder (default: the recipe's ``output.dir``, else ``runs/<name>``).
    Raises :class:`TrainingInterrupted` (a KeyboardInterrupt) after saving a checkpoint when
    stopped by Ctrl-C or SIGTERM.
    """
    if isinstance(recipe, (str, os.PathLike)):
        rec = load_recipe(recipe, overrides)
    else:
        if overrides:
            raise ValueError("overrides apply to a recipe file; edit the dict directly instead")
        rec = validate_recipe(recipe)
    rank_device = ddp.init_from_env(rec["device"])  # under torchrun: join the process group
    if rank_device is not None:
        rec["device"] = rank_device
    if out_dir is not None:
        out = Path(out_dir).resolve()
    elif rec["output"]["dir"] is not None:
        out = Path(rec["output"]["dir"])
    else:
        out = Path("runs", rec.get("name") or "run").resolve()
    rec["output"]["dir"] = str(out)
    return _Run(rec, out, resume).run()
