"""Read, load and save network weights.

Accepted forms (``read_weights``):

* a TensorFlow V2 checkpoint: its prefix, ``.index`` or ``.data-*`` path, or a directory with one;
* ``.npz`` arrays;
* ``.safetensors`` files (no pickle; :func:`save_weights` puts the adapter metadata and a checksum of the
  tensors in the header; the checksum is verified on reading);
* ``.pth`` / ``.pt`` PyTorch files, loaded with ``torch.load(weights_only=True)``: a plain state
  dict or a dict holding one under ``params_ema`` / ``params`` (BasicSR), ``state_dict`` or ``model``.

Arrays named like the official MZSR checkpoint (``MODEL/convK/{kernel,bias}``, kernels HWIO) are
mapped onto :class:`~metasr_adapter.adapters.mzsr.MZSRNet`'s state dict; other names are taken as
PyTorch state-dict names. A leading ``module.`` (DataParallel) is stripped.
"""
from __future__ import annotations

import json
import os
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Union

import numpy as np
import torch
from torch import nn

from ..errors import UnknownNameError, UserTypeError
from ..atomic import atomic_save, atomic_write_bytes
from .tf_checkpoint import is_tf_checkpoint, list_tf_checkpoint, read_tf_checkpoint

__all__ = ["read_weights", "load_weights", "save_weights", "open_weights", "WeightsFile", "WeightsMismatchError",
           "WeightsCorruptedError", "ACCEPTED_FORMS"]

PathLike = Union[str, "os.PathLike[str]"]
StateDict = dict[str, torch.Tensor]

ACCEPTED_FORMS = ("a TensorFlow checkpoint prefix (PREFIX.index + PREFIX.data-*), its .index path or a "
                  "directory holding one; a .safetensors file; a .pth/.pt PyTorch state dict (plain or under "
                  "'params_ema'/'params'/'state_dict'/'model'); or a .npz of arrays")
_AUTO_KEYS = ("params_ema", "params", "state_dict", "model")
_TORCH_SUFFIXES = (".pth", ".pt", ".pkl", ".bin", ".ckpt", ".tar")


#: where :func:`save_weights` records the :func:`tensor_fingerprint` of the tensors it writes: a key of the
#: safetensors header, a top-level entry of a ``.pth`` dict (beside 'params' and 'metadata')
CHECKSUM_KEY = "metasr_checksum"


class WeightsMismatchError(ValueError):
    """The weights do not fit the model: missing/unexpected keys or shape mismatches."""


class WeightsCorruptedError(ValueError):
    """A file written by :func:`save_weights` whose tensors no longer match the checksum recorded in it."""


def _verify_checksum(path: Path, state: Mapping[str, torch.Tensor], recorded: Any) -> None:
    """Compare the tensors read from ``path`` with the checksum ``save_weights`` recorded (None: a file
    written elsewhere, or before checksums were recorded: nothing to check)."""
    if recorded is None:
        return
    found = tensor_fingerprint(state)
    if found != recorded:
        raise WeightsCorruptedError(
            f"{path} is corrupted: its tensors do not match the checksum recorded when metasr wrote it "
            f"({str(recorded)[:20]}…, found {found[:20]}…); download it again, or re-train it (a training run's "
            "--resume re-saves its weights from checkpoint.pt)")


def _from_arrays(arrays: Mapping[str, np.ndarray]) -> StateDict:
    """Arrays as a state dict: the adapters convert the foreign layouts they know (official MZSR TF names)."""
    from ..adapters import state_dict_from_foreign

    converted = state_dict_from_foreign(arrays)
    if converted is not None:
        return converted
    return {k: torch.from_numpy(np.array(v, copy=True)) for k, v in arrays.items()}


def _read_tf(path: PathLike) -> StateDict:
    from ..adapters import foreign_variables

    listing = list_tf_checkpoint(path)
    wanted = foreign_variables(list(listing))
    if wanted is None:  # unknown layout: every numeric variable, as named
        wanted = [n for n, (dt, _) in listing.items() if dt != np.dtype(object)]
    return _from_arrays(read_tf_checkpoint(path, names=wanted))


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _unwrap(obj: Any, param_key: str, path: Path) -> Mapping[str, torch.Tensor]:
    if not isinstance(obj, Mapping):  # the user's file, not a bug: UserTypeError (still a TypeError)
        raise UserTypeError(f"{path} holds a {type(obj).__name__}, not a state dict; save weights with "
                            "torch.save(model.state_dict(), path) or metasr_adapter.io.weights.save_weights")
    keys = ", ".join(repr(k) for k in list(obj)[:10])
    if param_key != "auto":
        if param_key not in obj:  # UnknownNameError: still a KeyError, and the command line's one-line error
            raise UnknownNameError(f"param_key (--param-key) {param_key!r} is not in {path}; its top-level keys are: "
                                   f"{keys}; give one of those, or auto")
        found = obj[param_key]
        if not _is_state_dict(found):
            raise UserTypeError(f"{path}[{param_key!r}] is not a dict of tensors; top-level keys are: {keys}; give "
                                "the key (--param-key) of the entry that holds the weights, or auto")
        return found
    for key in _AUTO_KEYS:
        if key in obj and _is_state_dict(obj[key]):
            return obj[key]
    for key in _AUTO_KEYS:  # one more level, e.g. {'model': {'state_dict': ...}}
        inner = obj.get(key)
        if isinstance(inner, Mapping):
            for key2 in _AUTO_KEYS:
                if key2 in inner and _is_state_dict(inner[key2]):
                    return inner[key2]
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if tensors:
        return tensors
    raise ValueError(f"no state dict found in {path}: top-level keys are {keys}; pass param_key= naming the "
                     "entry that holds the weights")


def _torch_load(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` with errors that say what is wrong and what to do."""
    import pickle

    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes): the file is damaged or was never written")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"{path} holds Python objects besides tensors (a pickled model or optimizer), which weights_only=True "
            "loading refuses to run. In the program that made it, save the state dict instead: "
            "torch.save(model.state_dict(), 'weights.pth')") from e
    except Exception as e:  # truncated or corrupted zip, not a torch file at all
        raise ValueError(f"{path} is not a readable PyTorch file ({type(e).__name__}: {e}); it may be truncated. "
                         f"Accepted: {ACCEPTED_FORMS}") from e


def _safetensors_header(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:  # truncated file, not a safetensors file
        raise ValueError(f"{path} is not a readable .safetensors file ({e}); it may be truncated") from e


def _read_safetensors(path: Path) -> StateDict:
    from safetensors.torch import load

    header = _safetensors_header(path)  # the clear error for a damaged file
    try:
        state = load(path.read_bytes())
    except Exception as e:
        raise ValueError(f"{path} is not a readable .safetensors file ({e}); it may be truncated") from e
    _verify_checksum(path, state, header.get(CHECKSUM_KEY))
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def _read_torch(path: Path, param_key: str) -> StateDict:
    return _torch_state(_torch_load(path), param_key, path)


def _torch_state(obj: Any, param_key: str, path: Path) -> StateDict:
    """The state dict inside a loaded PyTorch file, its checksum verified where save_weights recorded one."""
    state = _unwrap(obj, param_key, path)
    if isinstance(obj, Mapping) and state is obj.get("params"):  # the layout save_weights writes
        _verify_checksum(path, state, obj.get(CHECKSUM_KEY))
    return {(k[len("module."):] if k.startswith("module.") else k): v.detach() for k, v in state.items()}


def _looks_like_npz(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    return bool(names) and all(n.endswith(".npy") for n in names)


def read_weights(path: PathLike, *, param_key: str = "auto") -> StateDict:
    """Read weights from any accepted form (see module docstring) into a CPU state dict.

    ``param_key`` picks the entry of a PyTorch checkpoint dict: 'auto' tries 'params_ema',
    'params', 'state_dict', 'model', then takes the top-level tensors.
    """
    p = Path(os.fspath(path))
    name = p.name.lower()
    if name.endswith(".index") or re.search(r"\.data-\d{5}-of-\d{5}$", name) or p.is_dir():
        return _read_tf(p)
    if p.is_file():
        if name.endswith(".safetensors"):
            return _read_safetensors(p)
        if name.endswith(".npz") or (not name.endswith(_TORCH_SUFFIXES) and _looks_like_npz(p)):
            if not _looks_like_npz(p):
                kind = "a PyTorch file" if zipfile.is_zipfile(p) else "not a numpy .npz archive"
                raise ValueError(f"{p} is {kind}; " + ("rename it to .pth" if zipfile.is_zipfile(p) else
                                                       f"accepted: {ACCEPTED_FORMS}"))
            with np.load(p, allow_pickle=False) as z:
                return _from_arrays({k: z[k] for k in z.files})
        return _read_torch(p, param_key)
    if is_tf_checkpoint(p):
        return _read_tf(p)
    raise FileNotFoundError(f"weights not found: {os.fspath(path)!r} is neither a file nor a TensorFlow "
                            f"checkpoint prefix (no {os.fspath(path)}.index). Accepted: {ACCEPTED_FORMS}")


def _fmt_keys(keys: list[str], limit: int = 10) -> str:
    more = f", … (+{len(keys) - limit})" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_weights(model: nn.Module, path: "PathLike | Mapping[str, torch.Tensor] | WeightsFile", *, param_key: str = "auto",
                 strict: bool = True) -> nn.Module:
    """Load weights (a path in any accepted form, or a state dict) into ``model``; returns ``model``.

    A model with a ``convert_state_dict(state)`` method gets the chance to rename foreign key layouts
    first. ``strict=True`` raises :class:`WeightsMismatchError` listing missing keys, unexpected keys and
    shape mismatches; ``strict=False`` loads the keys whose shapes match and warns about the rest.
    """
    if isinstance(path, WeightsFile):
        state, source = dict(path.state), path.source
    elif isinstance(path, Mapping):
        state, source = dict(path), "the given state dict"
    else:
        state, source = read_weights(path, param_key=param_key), os.fspath(path)
    own = model.state_dict()
    convert = getattr(model, "convert_state_dict", None)
    if callable(convert) and any(k not in own for k in state):
        # the architecture knows other layouts of its weights (e.g. RCAN's authors' key names)
        state = dict(convert(state))
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [(k, tuple(own[k].shape), tuple(state[k].shape)) for k in own
                  if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_fmt_keys(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_fmt_keys(unexpected)}")
        if mismatched:
            parts.append("shape mismatches: " + "; ".join(
                f"{k}: model expects {exp}, weights have {got}" for k, exp, got in mismatched[:10]))
        problem = f"weights from {source} do not fit {type(model).__name__}: " + "; ".join(parts)
        if strict:
            hint = ("Check that the architecture and its arguments match the weights (--arch / --arch-kwargs on the "
                    "command line), or pick another entry of the checkpoint (param_key= / --param-key params, "
                    "params_ema, state_dict); in Python, load_weights(..., strict=False) loads only the tensors "
                    "that fit")
            raise WeightsMismatchError(f"{problem}. {hint}")
        warnings.warn(f"{problem}; loading the {len(own) - len(missing) - len(mismatched)} matching tensors "
                      "(strict=False)", stacklevel=2)
    bad = {k for k, _, _ in mismatched}
    usable = {k: v for k, v in state.items() if k in own and k not in bad}
    model.load_state_dict(usable, strict=False)
    return model


_META_TYPES = (str, int, float, bool, type(None))


def _check_metadata(value: Any, where: str) -> Any:
    """Metadata must survive ``torch.load(weights_only=True)``: plain Python containers and scalars."""
    if isinstance(value, _META_TYPES):
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(_check_metadata(v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, Mapping):
        return {str(k): _check_metadata(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"metadata {where} is a {type(value).__name__}; use str/int/float/bool/None or "
                    "lists/dicts of them so the file loads with weights_only=True")


def save_weights(model_or_state_dict: nn.Module | Mapping[str, torch.Tensor], path: PathLike,
                 **metadata: Any) -> Path:
    """Atomically write the weights and their ``metadata`` (arch, arch_kwargs, scale, ds_method,
    schedule, loss, recipe, commit...): ``.safetensors`` (no pickle; the metadata as JSON in the
    header, key ``metasr_adapter``) or ``.pth``/``.pt`` (``{'params': ..., 'metadata': ...}``, loads with
    ``torch.load(weights_only=True)``). Both load with :func:`read_weights` / :func:`read_metadata`.

    The file also records the :func:`tensor_fingerprint` of its tensors (``CHECKSUM_KEY``, outside the
    metadata): :func:`read_weights` recomputes it and raises :class:`WeightsCorruptedError` when the file
    was damaged since. Files without it (written elsewhere, or by older versions) load unchecked.
    """
    target = Path(os.fspath(path))
    if target.suffix.lower() not in (".pth", ".pt", ".safetensors"):
        raise ValueError(f"save_weights writes .safetensors or PyTorch files; give {target} a .safetensors, "
                         ".pth or .pt suffix")
    if isinstance(model_or_state_dict, nn.Module):
        state = model_or_state_dict.state_dict()
        metadata.setdefault("model", type(model_or_state_dict).__name__)
    elif isinstance(model_or_state_dict, Mapping):
        state = model_or_state_dict
    else:
        raise TypeError(f"save_weights needs an nn.Module or a state dict, got {type(model_or_state_dict).__name__}")
    params = {}
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"state dict entry {k!r} is a {type(v).__name__}, not a tensor")
        params[str(k)] = v.detach().cpu().clone()
    meta = {str(k): _check_metadata(v, repr(k)) for k, v in metadata.items()}
    checksum = tensor_fingerprint(params)  # read_weights verifies it: a damaged file is refused, not used
    if target.suffix.lower() == ".safetensors":
        from safetensors.torch import save

        header = {"metasr_adapter": json.dumps(meta, sort_keys=True), "format": "pt", CHECKSUM_KEY: checksum}
        return atomic_write_bytes(target, save({k: v.contiguous() for k, v in params.items()}, metadata=header))
    return atomic_save({"params": params, "metadata": meta, CHECKSUM_KEY: checksum}, target)


@dataclass(frozen=True)
class WeightsFile:
    """A weights file read once: its state dict, the metadata saved with it, and its path (for messages).
    ``load_model`` and ``load_weights`` take it in place of the path, so a caller that needs the metadata
    first (the command line: scale, schedule, architecture) does not read the file again."""

    source: str
    state: StateDict
    metadata: dict[str, Any]


def open_weights(path: PathLike, *, param_key: str = "auto") -> WeightsFile:
    """Read ``path`` (any accepted form) once into a :class:`WeightsFile`."""
    p = Path(os.fspath(path))
    if p.is_file() and p.suffix.lower() in (".pth", ".pt"):
        obj = _torch_load(p)
        meta = obj.get("metadata") if isinstance(obj, dict) else None
        state = _torch_state(obj, param_key, p)
        return WeightsFile(os.fspath(path), state, dict(meta) if isinstance(meta, dict) else {})
    return WeightsFile(os.fspath(path), read_weights(p, param_key=param_key), read_metadata(p))


def read_metadata(path: PathLike) -> dict[str, Any]:
    """The ``metadata`` dict saved by :func:`save_weights` (empty for other files and formats)."""
    p = Path(path)
    if p.suffix.lower() == ".safetensors" and p.is_file():
        header = _safetensors_header(p)
        return dict(json.loads(header["metasr_adapter"])) if "metasr_adapter" in header else {}
    if p.suffix.lower() not in (".pth", ".pt") or not p.is_file():
        return {}
    obj = _torch_load(p)
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    return dict(meta) if isinstance(meta, dict) else {}


def tensor_fingerprint(model_or_state_dict: nn.Module | Mapping[str, torch.Tensor]) -> str:
    """``'tensors:<sha256>'`` of a network's tensors (names, dtypes, shapes and values, in name order).

    Unlike a file's sha256 it does not change when the same tensors are saved again in another format or
    with other metadata, so results measured with a training run's file still match its bundled copy.
    """
    import hashlib

    state = model_or_state_dict.state_dict() if isinstance(model_or_state_dict, nn.Module) else model_or_state_dict
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        # reshape: a 0-d tensor (e.g. a step counter) cannot be viewed as bytes; the bytes are the same
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return "tensors:" + h.hexdigest()
