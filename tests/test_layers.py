"""The package's layers (issue #20, structure): no module imports a higher layer, no import cycles, command-line
code only in ``cli/``, and the adaptation step's gradient taken in one place.

The import graph is read with :mod:`ast` from the source, so it sees every import: module-level ones, those
inside functions (lazy imports are dependencies too), relative and absolute, and ``"metasr_adapter.x:attr"``
strings that a registry imports later. Nothing is imported to build it.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = "metasr_adapter"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

#: the layers, low to high: a module may import its own layer and the ones below it, never one above
LAYERS: list[tuple[str, set[str]]] = [
    # they import nothing of the package (resolvers: names a lower layer accepts and a higher one resolves)
    ("root utilities", {"errors", "devices", "precision", "allocator", "atomic", "distributed", "resolvers",
                        "provenance"}),
    ("ops", {"ops"}),
    # other libraries' networks (BasicSR, spandrel): they use nothing of this package; the adapters'
    # registry names them and io's load_model builds spandrel checkpoints with them
    ("integrations", {"integrations"}),
    ("adapters", {"adapters"}),
    ("io", {"io"}),
    ("adapt", {"adapt"}),
    ("meta", {"meta"}),
    ("estimate", {"estimate"}),
    ("zssr", {"zssr"}),
    ("pipelines", {"pipelines"}),
    ("training", {"training"}),
    # metasr_adapter/__init__.py: the public names, re-exported lazily from every layer
    ("public API", {"__init__"}),
    ("cli", {"cli", "__main__"}),
]

#: (importing module, imported module) -> why it may go upwards. Every entry must still be needed.
ALLOWED_UPWARD: dict[tuple[str, str], str] = {}

#: modules where ``torch.autograd.grad`` may be called, with the reason. The adaptation step (θ ← θ − α·g)
#: takes its gradient in one place, ``adapt/step.py``, for test time, meta-training and the kernel search.
AUTOGRAD_GRAD_ALLOWED: dict[str, str] = {
    f"{PACKAGE}.adapt.step": "the one adaptation step",
    f"{PACKAGE}.meta.backends": "the learn2learn backend: learn2learn's own MAML update, the independent reference "
                               "that the functional backend is checked against (tests/test_meta.py)",
}

_LAZY_REF = re.compile(rf"^{PACKAGE}(\.[A-Za-z_][A-Za-z0-9_]*)+(:[A-Za-z_][A-Za-z0-9_]*)?$")


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (a package is its ``__init__``)."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _target(base: str, names: list[str]) -> list[str]:
    """What ``from base import names`` depends on: each name that is a submodule, else ``base`` itself."""
    subs = [f"{base}.{n}" for n in names if f"{base}.{n}" in MODULES]
    rest = [n for n in names if f"{base}.{n}" not in MODULES]
    return subs + ([base] if rest or not subs else [])


def _owner(name: str) -> str:
    """The known module that ``name`` (a module path, maybe ending in an attribute) lives in."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def imports_of(module: str) -> list[tuple[str, int, str]]:
    """``(imported module, line, how)`` for every dependency of ``module`` on another module of the package;
    how: 'import', 'lazy import' (inside a function) or 'string' (a ``"metasr_adapter.x:attr"`` reference)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if _is_package(module) else module.rsplit(".", 1)[0]
    found: list[tuple[str, int, str]] = []

    def visit(node: ast.AST, nested: bool) -> None:
        how = "lazy import" if nested else "import"
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base_parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base == PACKAGE or base.startswith(PACKAGE + "."):
                for t in _target(_owner(base), [a.name for a in node.names]) if base in MODULES else [_owner(base)]:
                    found.append((t, node.lineno, how))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    found.append((_owner(alias.name), node.lineno, how))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _LAZY_REF.match(node.value):
            found.append((_owner(node.value.split(":")[0]), node.lineno, "string"))
        inner = nested or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, False)
    return [(t, line, how) for t, line, how in found if t != module]


def layer_of(module: str) -> int:
    rel = module.split(".")[1:]
    key = "__init__" if not rel else rel[0]
    for rank, (_, members) in enumerate(LAYERS):
        if key in members:
            return rank
    raise AssertionError(f"{module} belongs to no layer: add {key!r} to LAYERS in {__file__}")


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


def test_no_module_imports_a_higher_layer():
    upward, used = [], set()
    for module in MODULES:
        for target, line, how in imports_of(module):
            if layer_of(target) <= layer_of(module):
                continue
            if (module, target) in ALLOWED_UPWARD:
                used.add((module, target))
                continue
            upward.append(f"{MODULES[module].relative_to(ROOT.parent)}:{line} ({LAYERS[layer_of(module)][0]}) "
                          f"{how}s {target} ({LAYERS[layer_of(target)][0]})")
    assert not upward, "imports of a higher layer:\n" + "\n".join(upward)
    assert used == set(ALLOWED_UPWARD), f"exceptions no longer needed: {set(ALLOWED_UPWARD) - used}"


def test_no_import_cycles():
    """No cycle among modules, counting lazy imports and registry strings (a package's ``__init__`` that
    re-exports its own submodules is the one kind of loop allowed: it is how a package exposes them)."""
    graph = {m: {t for t, _, _ in imports_of(m)} for m in MODULES}
    for m in MODULES:  # a package re-exporting its submodules: not a dependency of the submodules on it
        if _is_package(m):
            graph[m] = {t for t in graph[m] if not t.startswith(m + ".")}
    cycles = []
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    counter = [0]

    def strongconnect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            strongconnect(v)
    assert not cycles, f"import cycles: {cycles}"


def test_no_private_name_crosses_a_package():
    """A name with a leading underscore is its package's business: another package gets a public helper."""
    crossing = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        own = module.split(".")[1] if "." in module else ""
        package = module if _is_package(module) else module.rsplit(".", 1)[0]
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - (node.level - 1)] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if not base.startswith(PACKAGE + "."):
                continue
            other = base.split(".")[1]
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__") and other != own:
                    crossing.append(f"{path.relative_to(ROOT.parent)}:{node.lineno} imports {alias.name} from {base}")
    assert not crossing, "\n".join(crossing)


def test_command_line_code_lives_in_cli():
    """argparse, entry points (``if __name__ == "__main__"``) and ``sys.exit`` only under ``cli/`` (and the
    package's ``__main__``)."""
    outside = []
    for module, path in MODULES.items():
        if layer_of(module) == len(LAYERS) - 1:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import) and any(a.name == "argparse" for a in node.names):
                outside.append(f"{path.relative_to(ROOT.parent)}:{node.lineno} imports argparse")
            elif isinstance(node, ast.ImportFrom) and node.module == "argparse":
                outside.append(f"{path.relative_to(ROOT.parent)}:{node.lineno} imports from argparse")
            elif isinstance(node, ast.If) and "__name__" in ast.unparse(node.test) and "__main__" in ast.unparse(node.test):
                outside.append(f"{path.relative_to(ROOT.parent)}:{node.lineno} has a __main__ entry point")
            elif isinstance(node, ast.Call) and ast.unparse(node.func) == "sys.exit":
                outside.append(f"{path.relative_to(ROOT.parent)}:{node.lineno} calls sys.exit")
    assert not outside, "command-line code outside cli/:\n" + "\n".join(outside)


def test_the_adaptation_gradient_is_taken_in_one_place():
    calls, used = [], set()
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and ast.unparse(node.func) in ("torch.autograd.grad", "autograd.grad"):
                if module in AUTOGRAD_GRAD_ALLOWED:
                    used.add(module)
                else:
                    calls.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}")
    assert not calls, "torch.autograd.grad outside metasr_adapter/adapt/step.py:\n" + "\n".join(calls)
    assert used == set(AUTOGRAD_GRAD_ALLOWED), f"entries no longer needed: {set(AUTOGRAD_GRAD_ALLOWED) - used}"


def test_lr_names_a_learning_rate_and_lr_img_an_image():
    """One name for each (issue #20, structure 4): ``lr`` is a learning rate, as in torch.optim; an LR image is
    ``lr_img`` (or ``lr_image``). No parameter called ``lr`` holds an image."""
    wrong = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            a = node.args
            for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs]:
                note = ast.unparse(arg.annotation) if arg.annotation is not None else ""
                if arg.arg == "lr" and re.search(r"Tensor|ndarray|Image", note):
                    wrong.append(f"{path.relative_to(ROOT.parent)}:{arg.lineno} lr: {note}")
    assert not wrong, "parameters named lr that hold an image (call them lr_img):\n" + "\n".join(wrong)


@pytest.mark.parametrize("source, expected", [
    ("from ..ops.imageio import read_image", "metasr_adapter.ops.imageio"),
    ("from .. import distributed", "metasr_adapter.distributed"),
    ("from .. import __version__", "metasr_adapter"),
    ("def f():\n    from ..estimate.api import estimate_kernel", "metasr_adapter.estimate.api"),
    ("import metasr_adapter.io.weights", "metasr_adapter.io.weights"),
    ("X = {'a': 'metasr_adapter.adapters.mzsr:MZSRNet'}", "metasr_adapter.adapters.mzsr"),
])
def test_the_graph_sees_every_kind_of_import(tmp_path, monkeypatch, source, expected):
    """The checker itself: relative, lazy, absolute and registry-string imports all count."""
    fake = tmp_path / "fake.py"
    fake.write_text(source)
    monkeypatch.setitem(MODULES, f"{PACKAGE}.training.fake", fake)
    assert expected in [t for t, _, _ in imports_of(f"{PACKAGE}.training.fake")]


def test_the_public_api_is_the_users_core() -> None:
    """Issue #20: the top-level names are what a user calls (degrade and the photo path included); training
    internals (patch pools, task batches, samplers) and low-level readers stay in their modules."""
    import metasr_adapter as m

    for name in ("MetaSR", "load_pretrained", "load_model", "degrade", "DegradationSpec", "upscale_photo",
                 "estimate_kernel", "MetaLearner", "MAMLConfig", "ZSSR", "psnr", "read_image", "write_image"):
        assert name in m.__all__ and getattr(m, name) is not None, name
    for name in ("PatchPool", "TaskBatch", "TaskSampler", "MLSRTaskSampler", "read_tf_checkpoint",
                 "subsample_direct", "resolve_device", "same_device"):
        assert name not in m.__all__, name
