"""Many images with one wrapper: :func:`adapt_many` (a streaming iterator) and :func:`adapt_folder`
(files in, files out, resumable, one failed image never stops the rest)."""
from __future__ import annotations

import glob
import json
import os
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ..atomic import atomic_write_text
from ..ops.imageio import IMAGE_EXTENSIONS, exif_orientation, read_icc_profile, read_image, write_image

__all__ = ["ImageOutcome", "adapt_many", "adapt_folder", "expand_inputs", "plan_outputs", "describe_settings",
           "file_fingerprint"]


@dataclass
class ImageOutcome:
    """What happened to one image: ``status`` is ``'done'``, ``'skipped'`` (output existed) or ``'failed'``."""

    source: str
    output: str | None
    status: str
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    kernel: str | None = None
    error: str | None = None
    #: ``kernel="estimate"`` (blind mode): this image's estimate (``KernelEstimate.to_dict()``: the kernel,
    #: method, parameters, convergence, seconds)
    kernel_estimate: dict[str, Any] | None = None
    #: the source file's EXIF orientation (1-8), applied before the work: 1 = stored upright
    exif_orientation: int = 1
    #: what a custom ``run_one`` reported (the photo path: weights, degradation estimate, choice and why)
    details: dict[str, Any] | None = None


def expand_inputs(spec: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Image files from a file, a folder (its images, sorted), a glob pattern, or a list of those."""
    specs = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    files: list[Path] = []
    for item in specs:
        p = Path(item)
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file())
        elif p.is_file():
            files.append(p)
        elif any(c in str(item) for c in "*?["):
            files += sorted(Path(f) for f in glob.glob(str(item)) if Path(f).suffix.lower() in IMAGE_EXTENSIONS)
        else:
            raise FileNotFoundError(f"{item}: no such image, folder or matching glob pattern")
    if not files:
        raise ValueError(f"no images found in {spec} (extensions: {', '.join(IMAGE_EXTENSIONS)})")
    return files


def plan_outputs(files: Iterable[str | os.PathLike], out_dir: str | os.PathLike, suffix: str = ".png", *,
                 flag: str = "out_dir") -> list[Path]:
    """The output path of each input file (``out_dir/STEM{suffix}``), or ValueError, before any work, when two
    inputs would write the same output (``a.png`` and ``a.jpg``; ``d1/img.png`` and ``d2/img.png``) or when
    ``out_dir`` is a folder the inputs come from (the results would land among, or on, the inputs).
    ``flag`` names ``out_dir`` in the messages (``-o`` on the command line)."""
    files = [Path(f) for f in files]
    out = Path(out_dir)
    out_real = os.path.realpath(out)
    for f in files:
        if os.path.realpath(f.parent) == out_real:
            raise ValueError(f"{flag} {out_dir} is the input folder of {f}: the results would be written among (or "
                             "over) the input images; give another folder for the results")
    targets = [out / f"{f.stem}{suffix}" for f in files]
    first: dict[str, int] = {}
    for i, (f, target) in enumerate(zip(files, targets)):
        seen = files[first.setdefault(target.name, i)]
        if first[target.name] == i:
            continue
        if os.path.realpath(seen) == os.path.realpath(f):
            raise ValueError(f"{f} is given twice; give each input image once")
        raise ValueError(f"{seen} and {f} would both be written to the same output {target} (outputs are named by "
                         "the input's stem); rename one of them, or adapt them into different output folders")
    return targets


def file_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """``{'path': absolute path, 'sha256': hex}`` of a file: a setting that names a file (weights, a kernel
    file) is the same only while the file holds the same bytes."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return {"path": os.path.realpath(path), "sha256": h.hexdigest()}


def _describe(value: Any) -> Any:
    """``value`` as plain JSON that is equal for the same setting in every run (arrays by content digest)."""
    import dataclasses
    import hashlib

    import numpy as np

    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        a = np.ascontiguousarray(value)
        return {"shape": list(a.shape), "dtype": str(a.dtype), "sha256": hashlib.sha256(a.tobytes()).hexdigest()}
    if isinstance(value, dict):
        return {str(k): _describe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_describe(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"type": type(value).__name__,
                **{f.name: _describe(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    text = repr(value)
    return type(value).__name__ if " at 0x" in text else text  # no memory addresses: they differ every run


def describe_settings(kernel: Any, steps: int, **settings: Any) -> dict[str, Any]:
    """What a folder run does to each image, as the JSON its sidecars record under ``"settings"``: the kernel
    (a kernel file by its content too), the step count and every other setting given."""
    kernel_desc = _describe(kernel)
    if isinstance(kernel, (str, os.PathLike)) and Path(kernel).suffix.lower() in (".mat", ".npy") \
            and Path(kernel).is_file():
        kernel_desc = {"name": os.fspath(kernel), **file_fingerprint(kernel)}
    return {"kernel": kernel_desc, "steps": steps, **{k: _describe(v) for k, v in sorted(settings.items())}}


def _settings_differ(old: Any, new: dict[str, Any]) -> str:
    """How the settings recorded in a sidecar (``old``) differ from this run's (``new``); '' when they do not."""
    if not isinstance(old, dict):
        return "it records no settings"
    diffs = []
    for key in sorted(set(old) | set(new), key=lambda k: (k not in new, k)):
        if old.get(key) != new.get(key):
            then, now = (json.dumps(v)[:60] for v in (old.get(key), new.get(key)))
            diffs.append(f"{key} {then} then, {now} now")
    return "; ".join(diffs)


def _check_resumable(targets: list[Path], settings: dict[str, Any], flag: str) -> None:
    """Refuse, before any work, to present outputs made with other settings (or by unknown means) as results."""
    settings = json.loads(json.dumps(settings))  # tuples as lists etc., as a sidecar reads back
    stale: list[tuple[Path, str]] = []
    for target in targets:
        if not target.is_file():
            continue
        side = target.with_name(target.name + ".json")
        try:
            recorded = json.loads(side.read_text())
        except FileNotFoundError:
            stale.append((target, f"it has no sidecar {side.name} recording its settings"))
            continue
        except (OSError, ValueError) as exc:
            stale.append((target, f"its sidecar {side.name} is unreadable ({exc})"))
            continue
        why = _settings_differ(recorded.get("settings") if isinstance(recorded, dict) else None, settings)
        if why:
            stale.append((target, why))
    if stale:
        target, why = stale[0]
        more = f" (and {len(stale) - 1} more output(s))" if len(stale) > 1 else ""
        raise ValueError(f"{target} already exists but was made with other settings ({why}){more}; it cannot be "
                         f"skipped as this run's result: give another {flag} folder, or delete the old outputs (and "
                         "their .json sidecars) to redo them")


def adapt_many(msr, images: Iterable[Any], kernel: Any = "gd2.0", steps: int = 10,
               **adapt_kwargs: Any) -> Iterator[tuple[Any, Any]]:
    """Adapt ``msr`` (a :class:`~metasr_adapter.MetaSR`, reused: its network is never changed) to each
    image in turn, yielding ``(sr, info)``; images are arrays/tensors or paths (read on the fly), so a
    long stream never sits in memory at once. An image that fails raises here, at its turn."""
    for img in images:
        arr = read_image(img) if isinstance(img, (str, os.PathLike)) else img
        yield msr.adapt(arr, kernel, steps, return_info=True, **adapt_kwargs)


def _parsed_once(kernel: Any, ds_method: str | None) -> Any:
    """A kernel file or array parsed once for the whole folder; names resolved per image ('estimate') and
    whole degradation descriptions pass through."""
    from ..ops.degradation_spec import DegradationSpec
    from ..ops.kernels import resolve_kernel
    from ..resolvers import kernel_resolver

    if isinstance(kernel, DegradationSpec) or kernel_resolver(kernel) is not None:
        return kernel
    return resolve_kernel(kernel, ds_method)


def adapt_folder(msr, inputs: Any, out_dir: str | os.PathLike, *, kernel: Any = "gd2.0", steps: int = 10,
                 suffix: str = ".png", skip_existing: bool = True, progress: bool = True,
                 run_one: Callable[[Path], tuple[Any, dict[str, Any]]] | None = None,
                 settings: dict[str, Any] | None = None, flag: str = "out_dir", kernel_spec: Any = None,
                 **adapt_kwargs: Any) -> list[ImageOutcome]:
    """Adapt to every image of ``inputs`` (see :func:`expand_inputs`) and write ``out_dir/NAME{suffix}``
    with a sidecar ``NAME{suffix}.json`` (losses, learning rates, seconds, kernel, the run's settings; with
    ``kernel="estimate"`` the image's own estimated kernel and its diagnostics).

    Inputs that would share an output (``a.png`` and ``a.jpg``) and an ``out_dir`` that holds inputs are
    refused (ValueError) before any work (:func:`plan_outputs`). The sidecars record the run's settings
    (:func:`describe_settings`: kernel, steps, the ``adapt_kwargs`` and the caller's ``settings``, e.g. the
    weights); outputs that already exist with the same settings are skipped, so a killed run resumes where it
    stopped, and outputs made with other settings (or without a sidecar) are refused before any work, never
    passed off as this run's results. A failing image is recorded (``status='failed'``, the error in its
    outcome and sidecar) and the batch goes on. ``run_one(path) -> (sr, details)`` replaces ``msr.adapt``
    (e.g. the photo path); ``details`` goes into the sidecar. ``flag`` names ``out_dir`` in messages.
    ``kernel_spec``: ``kernel`` already parsed (a :class:`~metasr_adapter.ops.kernels.KernelSpec`; the command
    line parses ``--kernel`` once); else a kernel file or array is parsed here, once for all the images.
    """
    from tqdm.auto import tqdm

    files = expand_inputs(inputs)
    targets = plan_outputs(files, out_dir, suffix, flag=flag)
    recorded = describe_settings(kernel, steps, **{**adapt_kwargs, **(settings or {})})
    if skip_existing:
        _check_resumable(targets, recorded, flag)
    run_kernel = kernel_spec if kernel_spec is not None or run_one is not None \
        else _parsed_once(kernel, adapt_kwargs.get("ds_method"))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kernel_name = kernel if isinstance(kernel, str) else type(kernel).__name__
    outcomes: list[ImageOutcome] = []
    bar = tqdm(list(zip(files, targets)), desc="adapt", unit="img", disable=not progress)
    for f, target in bar:
        if skip_existing and target.is_file():
            outcomes.append(ImageOutcome(str(f), str(target), "skipped", kernel=kernel_name))
            continue
        t0 = time.perf_counter()
        sidecar = target.with_name(target.name + ".json")
        try:
            if run_one is not None:
                sr, details = run_one(f)
                o = ImageOutcome(str(f), str(target), "done", time.perf_counter() - t0,
                                 list(details.get("losses", [])), kernel=kernel_name, details=details)
            else:
                sr, info = msr.adapt(read_image(f), run_kernel, steps, return_info=True, **adapt_kwargs)
                est = getattr(info, "kernel_estimate", None)
                o = ImageOutcome(str(f), str(target), "done", time.perf_counter() - t0, list(info.losses),
                                 list(info.lrs), kernel_name,
                                 kernel_estimate=est.to_dict() if est is not None else None)
            o.exif_orientation = exif_orientation(f)
            # the sidecar first: an image on disk always has its settings beside it, even after a kill between
            # the two writes (a sidecar without its image only means that the image is made again)
            atomic_write_text(sidecar, json.dumps({**asdict(o), "settings": recorded}, indent=2) + "\n")
            write_image(target, sr, icc_profile=read_icc_profile(f))
        except (ValueError, OSError, FloatingPointError, RuntimeError) as exc:  # this image's problem
            o = ImageOutcome(str(f), None, "failed", time.perf_counter() - t0, kernel=kernel_name,
                             error=f"{type(exc).__name__}: {exc}")
            if os.environ.get("METASR_DEBUG"):
                o.error += "\n" + traceback.format_exc()
            atomic_write_text(sidecar, json.dumps({**asdict(o), "settings": recorded}, indent=2) + "\n")
        outcomes.append(o)
        bar.set_postfix(failed=sum(x.status == "failed" for x in outcomes))
    return outcomes
