"""Training recipes: a YAML file of named settings, checked against a fixed schema.

``load_recipe(path, overrides)`` reads a recipe, applies ``--set a.b=value`` overrides (the value
is parsed as YAML, so ``meta.iterations=10`` is an int and ``model.weights=null`` is None), fills
in the defaults of :data:`SCHEMA`, checks every value's type and rejects unknown or misspelt keys
with the list of valid keys and the closest match.

Relative paths: a relative path written **in the recipe file** is resolved against the recipe
file's folder (so a recipe works from any working directory); a relative path given **on the
command line** (``--set``/``--out``) is resolved against the current working directory.
"""
from __future__ import annotations

import copy
import difflib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from ..errors import UserInputError, UserTypeError
from ..ops.kernels import DS_METHODS
from ..precision import PRECISIONS

__all__ = [
    "Key",
    "SCHEMA",
    "HASH_EXCLUDE",
    "load_recipe",
    "parse_overrides",
    "validate_recipe",
    "default_recipe",
    "recipe_keys",
    "recipe_hash",
    "recipe_diff",
    "dump_recipe",
]


@dataclass(frozen=True)
class Key:
    """One recipe setting: default, accepted types, and what it means."""

    default: Any
    types: tuple[type, ...]
    doc: str
    nullable: bool = False
    path: bool = False  # a filesystem path: relative values are resolved (see module docstring)
    choices: tuple[Any, ...] | None = None
    list_of: type | None = None  # for list values: the element type
    minimum: float | None = None  # numbers (and list elements) must be >= this ...
    exclusive: bool = False  # ... or > it


_NUM = (int, float)

# The schema. Defaults follow the official MZSR code (SPEC sections in the docs); the shipped
# recipes in recipes/*.yaml restate every constant with its SPEC section.
SCHEMA: dict[str, Any] = {
    "name": Key(None, (str,), "run name (used in titles and the default output folder)", nullable=True),
    "seed": Key(0, (int,), "seed for model initialisation and every sampled batch (a batch = f(seed, step))"),
    "device": Key("auto", (str,), "'auto' (cuda if available), 'cpu', 'cuda', 'cuda:N'"),
    "model": {
        "name": Key("mzsr", (str,), "registered architecture (metasr_adapter.get_model)"),
        "width": Key(64, (int,), "feature channels (SPEC §1: 64)", minimum=1),
        "depth": Key(8, (int,), "number of conv layers (SPEC §1: 8)", minimum=2),
        "scale": Key(2, (int,), "super-resolution factor evaluated and meta-trained for (also given to "
                     "architectures built for one factor, e.g. rcan, idn)", minimum=2),
        "arch_kwargs": Key({}, (dict,), "further constructor arguments of the architecture (e.g. {num_block: 16} "
                           "for a BasicSR RCAN); mzsr takes width/depth from the keys above"),
        "weights": Key(
            None, (str,), "starting weights: a file (e.g. the official θ_T) or a bundled weights name "
            "(idn_x2_bicubic); null = large-scale pretraining (SPEC §8)",
            nullable=True, path=True,
        ),
    },
    "data": {
        "train_dir": Key(None, (str,), "folder of HR training images (PNG/JPG/BMP/TIF)", nullable=True, path=True),
        "recursive": Key(True, (bool,), "also read images in sub-folders of train_dir"),
        "patch_size": Key(64, (int,), "HR patch size for meta-training tasks (SPEC §3a: 64)", minimum=4),
        "stride": Key(120, (int,), "patch extraction stride (SPEC §3a: 120)", minimum=1),
        "grad_threshold": Key(-6.0, _NUM, "gradient-energy filter: keep log(mean energy + 1e-10) >= this (SPEC §3a)"),
        "augment": Key(True, (bool,), "8 dihedral augmentations of every patch (SPEC §3a)"),
        "tasks": Key("mzsr", (str,), "task construction: 'mzsr' = support and query are different (LR, HR) "
                     "patch pairs of one kernel (SPEC §3b); 'mlsr' = support (LR↓ → LR) and query (LR → HR) of "
                     "the same patch (MLSR, Park et al. 2020, Algorithm 1)", choices=("mzsr", "mlsr")),
        "kernel": Key("random", (str,), "degradation of the tasks: 'random' = one random Gaussian kernel per task "
                      "(SPEC §3c) then ds_method; 'bicubic' = MATLAB bicubic (MLSR's main setting; tasks=mlsr "
                      "only); 'photo' = one draw of the photo family per task (data.photo; tasks=mlsr only)",
                      choices=("random", "bicubic", "photo")),
        "photo": Key({}, (dict,), "the photo degradation family (pretrain.degradation='photo', data.kernel='photo'): "
                     "settings of metasr_adapter.ops.degradation_spec.PhotoDegradations that differ from its "
                     "defaults (grid_probs, sigma_range, noise_range, jpeg_range, ...)"),
        "scales": Key([2.0], (list,), "SCALE_LIST: one scale drawn per task (SPEC §3b)", list_of=float, minimum=1),
        "kernel_size": Key(15, (int,), "random kernel size (SPEC §3c: 15 at every scale)", minimum=1),
        "kernel_k1_factor": Key(2.5, _NUM, "k1 = factor * scale: the largest variance (SPEC §3b/§3c: 2.5)", minimum=0, exclusive=True),
        "kernel_min_var": Key(1.0, _NUM, "the smallest variance of the random kernels (SPEC §3c: 1; 0.2 also "
                              "draws sharp kernels such as g^d_0.2)", minimum=0, exclusive=True),
        "ds_method": Key("direct", (str,), "subsampling after the blur (SPEC §2b)", choices=DS_METHODS),
        "noise_std": Key(0.0, _NUM, "std of Gaussian noise added to the LR (SPEC §3b: 0.0)", minimum=0),
        "num_workers": Key(1, (int,), "DataLoader worker processes generating tasks (0 = in the training process)", minimum=0),
        "cache_dir": Key(None, (str,), "folder for the on-disk patch-pool cache (null = memory only)",
                         nullable=True, path=True),
    },
    "pretrain": {
        "iterations": Key(500000, (int,), "large-scale pretraining steps (SPEC §8: released θ_T at 500,000)", minimum=0),
        "degradation": Key("bicubic", (str,), "training pairs: 'bicubic' = bicubic LR (SPEC §8); 'kernel' = the "
                           "meta-training task distribution (data.kernel_size, kernel_k1_factor, ds_method, scales, "
                           "noise_std), one random kernel per pretrain.kernels group; 'photo' = one draw per patch from "
                           "the photo family (data.photo: grid, sharp-to-blurry blur, noise, JPEG)",
                           choices=("bicubic", "kernel", "photo")),

        "kernels": Key(8, (int,), "degradation='kernel': random kernels per batch (batch_size / kernels patches "
                       "each; must be even)", minimum=1),
        "schedule": Key("staircase", (str,), "learning rate: 'staircase' (SPEC §8) or 'cosine' from lr to lr_min "
                        "over pretrain.iterations", choices=("staircase", "cosine")),
        "train_dir": Key(None, (str,), "HR images for pretraining (null = data.train_dir)", nullable=True, path=True),
        "scale": Key(2, (int,), "bicubic scale of the pretraining pairs (SPEC §8: x2, used for every model)", minimum=2),
        "batch_size": Key(32, (int,), "SPEC §8: 32", minimum=1),
        "patch_size": Key(96, (int,), "HR patch size (SPEC §8: 96, LR 48)", minimum=4),
        "stride": Key(120, (int,), "patch stride (SPEC §8: 120)", minimum=1),
        "augment": Key(True, (bool,), "8 dihedral augmentations (SPEC §8: the released θ_T used 80k x 8)"),
        "lr": Key(4e-4, _NUM, "Adam learning rate (SPEC §8: 4e-4)", minimum=0, exclusive=True),
        "lr_decay_every": Key(100000, (int,), "staircase period (SPEC §8: 100,000)", minimum=1),
        "lr_decay_factor": Key(0.5, _NUM, "staircase factor (SPEC §8: 0.5)", minimum=0, exclusive=True),
        "lr_min": Key(1e-4, _NUM, "learning-rate floor (SPEC §8: 1e-4)", minimum=0),
        "loss": Key("l1", (str,), "pretraining loss (SPEC §8: 'l1'; MLSR: 'l2')", choices=("l1", "l2")),
        "precision": Key("fp32", (str,), "pretraining precision: 'bf16' = bf16 autocast for the network (fp32 "
                         "weights and optimiser)", choices=PRECISIONS),
        "probe_every": Key(0, (int,), "evaluate the weights every N pretraining steps into metrics.jsonl (mean "
                           "PSNR after eval.probe_steps; 0 = off); probe time is not counted as training time", minimum=0),
    },
    "meta": {
        "iterations": Key(60000, (int,), "meta-training iterations (SPEC §4: Directx2 60,000)", minimum=0),
        "meta_batch": Key(5, (int,), "tasks per meta-iteration (SPEC §4: META_BATCH_SIZE)", minimum=1),
        "task_batch": Key(4, (int,), "support (and query) pairs per task (SPEC §4: TASK_BATCH_SIZE)", minimum=1),
        "inner_steps": Key(5, (int,), "inner gradient steps (SPEC §4: TASK_ITER 5)", minimum=1),
        "inner_lr": Key(0.01, (float, int, list), "α, task learning rate (SPEC §4: 1e-2)", list_of=float, minimum=0, exclusive=True),
        "meta_lr": Key(1e-4, _NUM, "β, Adam meta learning rate (SPEC §4: 1e-4)", minimum=0, exclusive=True),
        "first_order": Key(False, (bool,), "first-order MAML throughout (SPEC §4: False)"),
        "second_order_from": Key(0, (int,), "first-order before this step, second order from it (SPEC §4: 0)", minimum=0),
        "loss_weighting": Key("mzsr", (str,), "query-loss weights (SPEC §4: 'mzsr' = uniform 0.2)",
                              choices=("mzsr", "maml++", "last")),
        "loss": Key("l1", (str,), "loss of the inner steps, the meta-objective and test-time adaptation "
                    "(SPEC §4: 'l1'; MLSR: 'l2')", choices=("l1", "l2")),
        "grad_clip": Key(None, _NUM, "meta-gradient norm clip (SPEC §4: none)", nullable=True, minimum=0, exclusive=True),
        "adapt_params": Key(None, (list,), "fnmatch patterns of adapted parameters (null = all)",
                            nullable=True, list_of=str),
        "probe_every": Key(0, (int,), "evaluate the weights every N meta-iterations into metrics.jsonl (see "
                           "pretrain.probe_every)", minimum=0),
        "backend": Key("functional", (str,), "MAML implementation", choices=("functional", "learn2learn")),
        "precision": Key("fp32", (str,), "meta-training precision", choices=PRECISIONS),
        "task_batching": Key("loop", (str,), "tasks one after another ('loop', least memory) or all at once "
                             "('vmap', functional backend)", choices=("loop", "vmap")),
        "channels_last": Key(None, (bool,), "NHWC image layout in meta-training; null = chosen for the device "
                             "(NHWC with bf16 or on CPUs with AVX-512, where it measured faster; NCHW on AVX2-only "
                             "CPUs, where it was slower: benchmarks/bench_meta_ab.py); may change on --resume",
                             nullable=True),
        "conv_algorithm": Key("auto", (str,), "what computes MZSRNet's 64-channel 3x3 convolutions in fp32 "
                              "second-order meta-training on CPU: 'direct' (oneDNN), 'winograd' (F(4x4, 3x3) on the "
                              "package's native kernels, about 1e-5 relative round-off; speed: "
                              "benchmarks/bench_meta_ab.py --compare conv_algorithm) or 'auto' (winograd where it "
                              "applies, on AVX-512 CPUs where its kernels build, else direct; MAMLConfig); may "
                              "change on --resume",
                              choices=("auto", "direct", "winograd")),
        "task_threads": Key(1, (int,), "tasks of a meta-batch at the same time on CPU worker threads with one "
                            "oneDNN thread each (1: one after another; README speed section and "
                            "benchmarks/bench_meta_ab.py --compare task_threads for what 2 measured); about 1e-4 "
                            "relative round-off; may change on --resume", minimum=1),
        "adam_variant": Key("torch", (str,), "meta-optimiser arithmetic: 'torch' (torch.optim.Adam) or 'tf' "
                            "(TF1 AdamOptimizer, the official code's)", choices=("torch", "tf")),
        "anneal_span": Key(10000.0 / 3.0, _NUM, "loss_weighting='maml++': meta-steps over which the query-loss "
                           "weights anneal to the last step", minimum=0, exclusive=True),
        "log_query_losses": Key(True, (bool,), "log the query loss after every inner step (false: only the "
                                "steps that enter the meta-loss are computed, the rest logged as null; under "
                                "loss_weighting 'last' that skips 4 of 5 query forward passes)"),
        "learn_inner_lr": Key(False, (bool,), "meta-learn one inner learning rate per adapted tensor and inner step "
                              "(MAML++ LSLR), starting at inner_lr; saved in the weights, used by adapt (SPEC: false)"),
        "inner_lr_meta_lr": Key(1e-3, _NUM, "Adam learning rate of the learned inner rates (kept as log α); unused "
                                "unless learn_inner_lr", minimum=0, exclusive=True),
        "inner_lr_start": Key("recipe", (str,), "where the learned inner rates start: 'recipe' (meta.inner_lr) or "
                              "'weights' (the learned rates saved with model.weights, to continue an LSLR run); "
                              "unused unless learn_inner_lr", choices=("recipe", "weights")),
        "meta_lr_schedule": Key("constant", (str,), "β over the run: 'constant' (SPEC §4) or 'cosine' from meta_lr to "
                                "meta_lr_min over meta.iterations (the learned rates' Adam rate follows the same "
                                "factor)", choices=("constant", "cosine")),
        "meta_lr_min": Key(1e-6, _NUM, "β at the last iteration of the cosine schedule; unused with 'constant'",
                           minimum=0),
    },
    "eval": {
        "gt_dir": Key(None, (str,), "HR ground-truth folder (null = skip evaluation and the plot)",
                      nullable=True, path=True),
        "lr_dir": Key(None, (str,), "LR inputs (null = synthesise them from gt_dir with eval.kernel)",
                      nullable=True, path=True),
        "kernel": Key("gd2.0", (str,), "kernel name (gd0.2, gd2.0, gdani, gb1.3, bicubic) or a .mat/.npy path",
                      path=True),
        "ds_method": Key(None, (str,), "subsampling of the LR son (null = the kernel's own)", nullable=True,
                         choices=DS_METHODS),
        "schedule": Key("mzsr_direct", (str, float, int), "meta-test learning-rate schedule: a preset name "
                        "(SPEC §5) or a constant learning rate"),
        "max_steps": Key(10, (int,), "PSNR is measured after 0..max_steps adaptation steps (paper Fig. 3)", minimum=0),
        "limit": Key(None, (int,), "evaluate only the first N images", nullable=True, minimum=1),
        "evaluate_start": Key(True, (bool,), "also evaluate the starting weights (the plot's reference curve)"),
        "probe_steps": Key([0, 1, 10], (list,), "adaptation step counts scored by the in-training probes",
                           list_of=int, minimum=0),
    },
    "output": {
        "dir": Key(None, (str,), "run folder (null = runs/<recipe name>)", nullable=True, path=True),
        "checkpoint_every": Key(2500, (int,), "meta steps between checkpoints (SPEC §4: SAVE_ITER 2500)", minimum=1),
        "pretrain_checkpoint_every": Key(10000, (int,), "pretraining steps between checkpoints (SPEC §8: 10k)", minimum=1),
        "log_every": Key(100, (int,), "steps between metrics-log lines (SPEC §4: PRINT_ITER 100)", minimum=1),
        "progress": Key(True, (bool,), "show tqdm progress bars"),
    },
}

# Keys that may differ between a run and its resumption (they do not change the trained weights;
# evaluation settings may change, e.g. to point eval.gt_dir at another copy of the data).
# meta.iterations may change too (train longer, or stop early): every batch depends only on
# (seed, step), so the steps already taken are the same either way; train.py checks that the
# checkpoint is not already past the new count. meta.channels_last, meta.task_batching, meta.conv_algorithm and
# meta.task_threads change how the same arithmetic is laid out or ordered (as device does), not what it computes: a
# run may switch to the faster layout or algorithm when it resumes on another CPU, at the cost of float round-off.
HASH_EXCLUDE = ("output", "data.num_workers", "data.cache_dir", "device", "meta.iterations", "eval",
                "pretrain.probe_every", "meta.probe_every", "meta.channels_last", "meta.task_batching",
                "meta.conv_algorithm", "meta.task_threads")

# eval.kernel values that are names, not paths
_KERNEL_WORDS = ("bicubic", "cubic", "none")


def _is_key(x: Any) -> bool:
    return isinstance(x, Key)


def recipe_keys(schema: Mapping[str, Any] = SCHEMA, prefix: str = "") -> list[str]:
    """Every valid dotted key, e.g. ``['device', 'eval.gt_dir', ...]``."""
    out: list[str] = []
    for name, spec in schema.items():
        dotted = f"{prefix}{name}"
        if _is_key(spec):
            out.append(dotted)
        else:
            out.extend(recipe_keys(spec, dotted + "."))
    return sorted(out)


def default_recipe(schema: Mapping[str, Any] = SCHEMA) -> dict[str, Any]:
    """The schema's defaults as a nested dict."""
    return {
        name: copy.deepcopy(spec.default) if _is_key(spec) else default_recipe(spec) for name, spec in schema.items()
    }


def _unknown_key_error(key: str, where: str, valid: Iterable[str]) -> ValueError:
    valid = sorted(valid)
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    level = f"under {where!r}" if where else "at the top level"
    return ValueError(f"unknown recipe key {'.'.join(filter(None, [where, key]))!r}.{hint} "
                      f"Valid keys {level}: {', '.join(valid)}")


def _coerce(value: Any, spec: Key, dotted: str) -> Any:
    """Check (and gently convert) one value against its Key."""
    if value is None:
        if spec.nullable:
            return None
        raise ValueError(f"recipe key {dotted!r} may not be null; expected {_type_names(spec)} "
                         f"(default {spec.default!r})")
    if isinstance(value, str) and any(t in (int, float) for t in spec.types) and str not in spec.types:
        # PyYAML reads '1e-4' (no dot) as a string: accept numeric strings for numeric keys
        try:
            value = int(value) if int in spec.types and value.strip().lstrip("+-").isdigit() else float(value)
        except ValueError:
            pass
    if isinstance(value, bool) and bool not in spec.types:
        raise UserTypeError(f"recipe key {dotted!r} = {value!r}: expected {_type_names(spec)}, not a boolean")
    if isinstance(value, int) and not isinstance(value, bool) and float in spec.types and int not in spec.types:
        value = float(value)
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, spec.types):
        raise UserTypeError(f"recipe key {dotted!r} = {value!r} has type {type(value).__name__}; "
                        f"expected {_type_names(spec)} (default {spec.default!r})")
    if isinstance(value, list) and spec.list_of is not None:
        items = []
        for v in value:
            if isinstance(v, str) and spec.list_of is float:
                try:
                    v = float(v)
                except ValueError:
                    pass
            if spec.list_of is float and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)
            if not isinstance(v, spec.list_of) or isinstance(v, bool):
                raise UserTypeError(f"recipe key {dotted!r}: item {v!r} is not a {spec.list_of.__name__}")
            items.append(v)
        value = items
    if spec.choices is not None and value not in spec.choices:
        raise ValueError(f"recipe key {dotted!r} = {value!r}; choose one of {list(spec.choices)}")
    if spec.minimum is not None:
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, (int, float)) and not isinstance(v, bool) and (
                    v < spec.minimum or (spec.exclusive and v == spec.minimum)):
                bound = f"> {spec.minimum:g}" if spec.exclusive else f">= {spec.minimum:g}"
                raise ValueError(f"recipe key {dotted!r} = {value!r}: must be {bound} (default {spec.default!r})")
    return value


def _type_names(spec: Key) -> str:
    names = [t.__name__ for t in spec.types]
    if spec.list_of is not None:
        names = [f"list[{spec.list_of.__name__}]" if n == "list" else n for n in names]
    return " or ".join(names) + (" or null" if spec.nullable else "")


def _looks_like_path(spec: Key, dotted: str, value: str) -> bool:
    if dotted == "eval.kernel":  # a kernel name or a file
        return value.lower().endswith((".mat", ".npy")) or os.sep in value or "/" in value
    if dotted == "model.weights":  # a bundled weights name (idn_x2_bicubic) or a file
        from ..io.pretrained import BUNDLED_WEIGHTS

        return value not in BUNDLED_WEIGHTS
    return True


def validate_recipe(
    recipe: Mapping[str, Any],
    *,
    base_dir: str | os.PathLike | None = None,
    schema: Mapping[str, Any] = SCHEMA,
    _prefix: str = "",
) -> dict[str, Any]:
    """Return a complete, checked copy of ``recipe`` (defaults filled in, relative paths made
    absolute against ``base_dir`` or the working directory)."""
    if not isinstance(recipe, Mapping):
        raise UserTypeError(f"recipe section {_prefix.rstrip('.') or '<top>'!r} must be a mapping, "
                        f"got {type(recipe).__name__}")
    unknown = [k for k in recipe if k not in schema]
    if unknown:
        raise _unknown_key_error(str(unknown[0]), _prefix.rstrip("."), schema.keys())
    out: dict[str, Any] = {}
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    for name, spec in schema.items():
        dotted = f"{_prefix}{name}"
        if _is_key(spec):
            value = _coerce(recipe[name], spec, dotted) if name in recipe else copy.deepcopy(spec.default)
            if spec.path and isinstance(value, str) and value and _looks_like_path(spec, dotted, value):
                p = Path(os.path.expanduser(value))
                value = str(p if p.is_absolute() else (base / p).resolve())
            out[name] = value
        else:
            sub = recipe.get(name, {})
            if sub is None:
                sub = {}
            out[name] = validate_recipe(sub, base_dir=base, schema=spec, _prefix=dotted + ".")
    if not _prefix and schema is SCHEMA:
        _check_combinations(out)
    return out


def _check_combinations(r: Mapping[str, Any]) -> None:
    """Settings that are valid alone but not together."""
    d = r["data"]
    if d["tasks"] == "mzsr" and d["kernel"] == "bicubic":
        raise ValueError("data.kernel='bicubic' needs data.tasks='mlsr': MZSR tasks are built from random kernels "
                         "(SPEC §3b); set data.tasks=mlsr or data.kernel=random")
    if d["tasks"] == "mzsr" and d["kernel"] == "photo":
        raise ValueError("data.kernel='photo' needs data.tasks='mlsr' (the son is the task's LR degraded again by "
                         "the task's own photo degradation); set data.tasks=mlsr")
    m = r["meta"]
    if m["inner_lr_start"] == "weights" and not (m["learn_inner_lr"] and r["model"]["weights"]):
        raise ValueError("meta.inner_lr_start='weights' starts the learned inner rates at those saved with "
                         f"model.weights; it needs meta.learn_inner_lr=true (got {m['learn_inner_lr']}) and "
                         f"model.weights set (got {r['model']['weights']!r}), or set meta.inner_lr_start=recipe")
    if m["meta_lr_schedule"] == "cosine" and m["meta_lr_min"] > m["meta_lr"]:
        raise ValueError(f"meta.meta_lr_min={m['meta_lr_min']} exceeds meta.meta_lr={m['meta_lr']}: the cosine "
                         "schedule decays from meta_lr to meta_lr_min; lower meta_lr_min")
    if m["conv_algorithm"] == "winograd" and (m["precision"] != "fp32" or r["model"]["name"] != "mzsr"):
        raise ValueError(f"meta.conv_algorithm='winograd' computes MZSRNet's layers in fp32; got meta.precision="
                         f"{m['precision']!r} and model.name={r['model']['name']!r}, where it would do nothing: set "
                         "meta.conv_algorithm=direct")
    threaded = (m["backend"], m["task_batching"], m["conv_algorithm"])
    if m["task_threads"] > 1 and (threaded[:2] != ("functional", "loop") or threaded[2] == "winograd"):
        raise ValueError(f"meta.task_threads={m['task_threads']} needs meta.backend=functional, "
                         f"meta.task_batching=loop and meta.conv_algorithm=direct or auto (got "
                         f"{', '.join(threaded)}); or set meta.task_threads=1")
    if d["tasks"] == "mlsr" and len(d["scales"]) != 1:
        raise ValueError(f"data.tasks='mlsr' uses one scale; data.scales={d['scales']}. Give one, e.g. [2.0]")


def parse_overrides(overrides: Iterable[str]) -> list[tuple[list[str], Any]]:
    """``['meta.iterations=10']`` → ``[(['meta', 'iterations'], 10)]`` (values parsed as YAML)."""
    parsed = []
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key=value, e.g. meta.iterations=10")
        key, _, raw = item.partition("=")
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ValueError(f"override {item!r}: empty key; use dotted names such as meta.iterations=10")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ValueError(f"override {item!r}: value is not valid YAML ({exc})") from exc
        parsed.append((key.split("."), value))
    return parsed


def _apply_override(tree: dict[str, Any], parts: list[str], value: Any, schema: Mapping[str, Any]) -> None:
    node, spec_node, where = tree, schema, ""
    for i, part in enumerate(parts):
        if part not in spec_node:
            raise _unknown_key_error(part, where, spec_node.keys())
        spec = spec_node[part]
        last = i == len(parts) - 1
        if _is_key(spec):
            if not last:
                raise ValueError(f"recipe key {'.'.join(parts[: i + 1])!r} is a value, not a section")
            node[part] = value
            return
        if last:
            raise ValueError(f"recipe key {'.'.join(parts)!r} is a section; set one of its keys: "
                             f"{', '.join(sorted(spec))}")
        node = node.setdefault(part, {})
        spec_node, where = spec, ".".join(parts[: i + 1])


def load_recipe(path: str | os.PathLike | None, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Read ``path`` (YAML; None = defaults only), apply ``key=value`` overrides, validate.

    Relative paths in the file resolve against the file's folder; relative paths in overrides
    resolve against the working directory.
    """
    raw: dict[str, Any] = {}
    base_dir = Path.cwd()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"recipe file not found: {path}")
        with open(path, encoding="utf-8") as fh:
            try:
                loaded = yaml.safe_load(fh)
            except yaml.YAMLError as exc:
                where = " ".join(str(exc).split())  # yaml's message spans lines
                raise UserInputError(f"recipe {path} is not valid YAML for yaml.safe_load (plain mappings, lists, "
                                     f"numbers and strings; no !!python tags): {where}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ValueError(f"recipe {path} must be a YAML mapping of sections, got {type(loaded).__name__}")
        raw = loaded
        base_dir = path.resolve().parent
        if raw.get("name") is None:
            raw = {**raw, "name": path.stem}
    # file values (paths relative to the recipe folder)
    recipe = validate_recipe(raw, base_dir=base_dir)
    # overrides (paths relative to the working directory)
    parsed = parse_overrides(overrides)
    if parsed:
        over: dict[str, Any] = {}
        for parts, value in parsed:
            _apply_override(over, parts, value, SCHEMA)
        over_checked = _validate_partial(over, SCHEMA, "")
        _deep_update(recipe, over_checked)
        _check_combinations(recipe)  # the overrides may combine badly with the file
    return recipe


def _validate_partial(tree: Mapping[str, Any], schema: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in tree.items():
        spec = schema[name]
        dotted = f"{prefix}{name}"
        if _is_key(spec):
            v = _coerce(value, spec, dotted)
            if spec.path and isinstance(v, str) and v and _looks_like_path(spec, dotted, v):
                v = str(Path(os.path.expanduser(v)).resolve())
            out[name] = v
        else:
            out[name] = _validate_partial(value, spec, dotted + ".")
    return out


def _deep_update(dst: dict[str, Any], src: Mapping[str, Any], schema: Mapping[str, Any] = SCHEMA) -> None:
    """Write ``src`` into ``dst`` section by section; a key's value (even a dict such as
    ``model.arch_kwargs``) replaces the old value whole, it is never merged into it."""
    for k, v in src.items():
        spec = schema.get(k)
        if spec is not None and not _is_key(spec) and isinstance(v, dict) and isinstance(dst.get(k), dict):
            _deep_update(dst[k], v, spec)
        else:
            dst[k] = v


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def _excluded(key: str, exclude: Iterable[str]) -> bool:
    return any(key == e or key.startswith(e + ".") for e in exclude)


def recipe_hash(recipe: Mapping[str, Any], exclude: Iterable[str] = HASH_EXCLUDE) -> str:
    """sha256 of the settings that change the result (``exclude``: output folder, workers...)."""
    flat = {k: v for k, v in _flatten(recipe).items() if not _excluded(k, exclude)}
    return hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()


def _schema_default(dotted: str) -> Any:
    node: Any = SCHEMA
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return "<missing>"
        node = node[part]
    return node.default if isinstance(node, Key) else "<missing>"


def recipe_diff(a: Mapping[str, Any], b: Mapping[str, Any], exclude: Iterable[str] = HASH_EXCLUDE) -> list[str]:
    """Dotted keys whose values differ between two recipes (ignoring ``exclude``). A key one recipe
    lacks (written before the key existed) counts as its schema default."""
    fa, fb = _flatten(a), _flatten(b)
    keys = sorted(set(fa) | set(fb))
    return [k for k in keys if not _excluded(k, exclude)
            and fa.get(k, _schema_default(k)) != fb.get(k, _schema_default(k))]


def dump_recipe(recipe: Mapping[str, Any]) -> str:
    """The resolved recipe as YAML text."""
    return yaml.safe_dump(json.loads(json.dumps(recipe)), sort_keys=False)
