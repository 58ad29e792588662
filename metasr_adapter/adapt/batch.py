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

from ..io.atomic import atomic_write_text
from ..ops.imageio import IMAGE_EXTENSIONS, read_image, write_image

__all__ = ["ImageOutcome", "adapt_many", "adapt_folder", "expand_inputs"]


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


def adapt_many(msr, images: Iterable[Any], kernel: Any = "gd2.0", steps: int = 10,
               **adapt_kwargs: Any) -> Iterator[tuple[Any, Any]]:
    """Adapt ``msr`` (a :class:`~metasr_adapter.MetaSR`, reused: its network is never changed) to each
    image in turn, yielding ``(sr, info)``; images are arrays/tensors or paths (read on the fly), so a
    long stream never sits in memory at once. An image that fails raises here, at its turn."""
    for img in images:
        arr = read_image(img) if isinstance(img, (str, os.PathLike)) else img
        yield msr.adapt(arr, kernel, steps, return_info=True, **adapt_kwargs)


def adapt_folder(msr, inputs: Any, out_dir: str | os.PathLike, *, kernel: Any = "gd2.0", steps: int = 10,
                 suffix: str = ".png", skip_existing: bool = True, progress: bool = True,
                 run_one: Callable[[Path], tuple[Any, dict[str, Any]]] | None = None,
                 **adapt_kwargs: Any) -> list[ImageOutcome]:
    """Adapt to every image of ``inputs`` (see :func:`expand_inputs`) and write ``out_dir/NAME{suffix}``
    with a sidecar ``NAME{suffix}.json`` (losses, learning rates, seconds, kernel; with ``kernel="estimate"``
    the image's own estimated kernel and its diagnostics).

    Outputs that already exist are skipped, so a killed run resumes where it stopped. A failing image
    is recorded (``status='failed'``, the error in its outcome and sidecar) and the batch goes on.
    ``run_one(path) -> (sr, details)`` replaces ``msr.adapt`` (e.g. the photo path); ``details`` goes into
    the sidecar.
    """
    from tqdm.auto import tqdm

    files = expand_inputs(inputs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kernel_name = kernel if isinstance(kernel, str) else type(kernel).__name__
    outcomes: list[ImageOutcome] = []
    bar = tqdm(files, desc="adapt", unit="img", disable=not progress)
    for f in bar:
        target = out / f"{f.stem}{suffix}"
        if skip_existing and target.is_file():
            outcomes.append(ImageOutcome(str(f), str(target), "skipped", kernel=kernel_name))
            continue
        t0 = time.perf_counter()
        try:
            if run_one is not None:
                sr, details = run_one(f)
                write_image(target, sr)
                o = ImageOutcome(str(f), str(target), "done", time.perf_counter() - t0,
                                 list(details.get("losses", [])), kernel=kernel_name, details=details)
            else:
                sr, info = msr.adapt(read_image(f), kernel, steps, return_info=True, **adapt_kwargs)
                write_image(target, sr)
                est = getattr(info, "kernel_estimate", None)
                o = ImageOutcome(str(f), str(target), "done", time.perf_counter() - t0, list(info.losses),
                                 list(info.lrs), kernel_name,
                                 kernel_estimate=est.to_dict() if est is not None else None)
        except (ValueError, OSError, FloatingPointError, RuntimeError) as exc:  # this image's problem
            o = ImageOutcome(str(f), None, "failed", time.perf_counter() - t0, kernel=kernel_name,
                             error=f"{type(exc).__name__}: {exc}")
            if os.environ.get("METASR_DEBUG"):
                o.error += "\n" + traceback.format_exc()
        atomic_write_text(out / f"{f.stem}{suffix}.json", json.dumps(asdict(o), indent=2) + "\n")
        outcomes.append(o)
        bar.set_postfix(failed=sum(x.status == "failed" for x in outcomes))
    return outcomes
