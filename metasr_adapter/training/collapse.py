"""Telling a run whose PSNR collapsed: each probe against the run's first one, and the final evaluation against
the starting weights, that first probe and bicubic interpolation. A collapse is reported with the recipe keys
that set the step sizes and the ``--set`` that lowers the likeliest culprit."""
from __future__ import annotations

import warnings
from typing import Any, Mapping, Sequence

from .divergence import psnr_drop, rate_hint
from .run_state import STAGES, MetricsLog

__all__ = ["COLLAPSE_DB", "COLLAPSE_BICUBIC_DB", "CollapseWatch"]

#: a probe (or the final evaluation) this many dB below the run's reference — its first probe, or the
#: starting weights' evaluation — is reported as a collapse; best PSNR over the step counts both measured
COLLAPSE_DB = 3.0
#: ... and so is a final evaluation this many dB below bicubic interpolation (a reference every run has)
COLLAPSE_BICUBIC_DB = 10.0


class CollapseWatch:
    """The collapse checks of one run. The reference probe is the run's first: from this session, or read
    from ``log`` (the run's ``metrics.jsonl``) when the run resumed after it."""

    def __init__(self, recipe: Mapping[str, Any], log: MetricsLog) -> None:
        self.recipe = recipe
        self.log = log
        self._first_probe: tuple[str, int, dict[str, float]] | None = None

    def reference_probe(self) -> tuple[str, int, dict[str, float]] | None:
        """The run's first probe ``(stage, step, mean PSNR)``, or None before it."""
        if self._first_probe is None:
            for rec in self.log.read():
                if isinstance(rec.get("probe"), dict) and rec["probe"]:
                    self._first_probe = (rec["stage"], int(rec["step"]), rec["probe"])
                    break
        return self._first_probe

    def _message(self, what: str, current: Mapping[str, Any], ref_name: str, reference: Mapping[str, Any],
                 stages: Sequence[str]) -> str | None:
        drop = psnr_drop(current, reference)
        if drop is None or drop[0] >= drop[1] - COLLAPSE_DB:
            return None
        hints = "; ".join(rate_hint(self.recipe, st, "meta.meta_lr") for st in stages)
        return (f"{what} collapsed: mean PSNR {drop[0]:.2f} dB, {drop[1] - drop[0]:.1f} dB below {ref_name} "
                f"({drop[1]:.2f} dB); {hints}")

    def probe(self, stage: str, step: int, probe: Mapping[str, float] | None) -> dict[str, str]:
        """Compare a probe with the run's first one: a warning, and ``{"collapse": message}`` for its log line
        (``{}`` when it holds; the first probe becomes the reference)."""
        if not probe:
            return {}
        ref = self.reference_probe()
        if ref is None:
            self._first_probe = (stage, step, dict(probe))
            return {}
        msg = self._message(f"the weights at {stage} step {step}", probe,
                            f"the run's first probe ({ref[0]} step {ref[1]})", ref[2], [stage])
        if msg is None:
            return {}
        warnings.warn(msg, UserWarning, stacklevel=2)
        return {"collapse": msg}

    def final(self, results: Mapping[str, Any] | None) -> str | None:
        """Why the final evaluation looks wrecked (against the starting weights' evaluation, the first probe and
        bicubic), or None."""
        if not results or "meta_trained" not in results:
            return None
        r = self.recipe
        stages = [st for st, it in (("pretrain", r["pretrain"]["iterations"]), ("meta", r["meta"]["iterations"]))
                  if it > 0 and not (st == "pretrain" and r["model"]["weights"] is not None
                                     and r["pretrain"]["degradation"] != "photo")]
        if not stages:
            return None  # nothing was trained: the weights are what the run started from
        final = results["meta_trained"]["mean_psnr"]
        what = "the trained weights"
        if "start" in results and "meta" in stages:
            msg = self._message(what, final, "the starting weights", results["start"]["mean_psnr"], ["meta"])
            if msg:
                return msg
        ref = self.reference_probe()
        if ref is not None:
            later = [st for st in stages if STAGES.index(st) >= STAGES.index(ref[0])]
            msg = self._message(what, final, f"the run's first probe ({ref[0]} step {ref[1]})", ref[2],
                                later or stages)
            if msg:
                return msg
        bicubic = final.get("bicubic")
        steps = [float(v) for k, v in final.items() if str(k).isdigit()]
        if bicubic is not None and steps and max(steps) < float(bicubic) - COLLAPSE_BICUBIC_DB:
            hints = "; ".join(rate_hint(r, st, "meta.meta_lr") for st in stages)
            return (f"{what} collapsed: mean PSNR {max(steps):.2f} dB, {float(bicubic) - max(steps):.1f} dB below "
                    f"bicubic interpolation ({float(bicubic):.2f} dB); {hints}")
        return None
