"""Benchmark result files name no machine paths and record how they were made (benchmarks/_record.py)."""
from __future__ import annotations

import argparse
import importlib.util
import json
import py_compile
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
#: tracked files that are not text (or not ours to read as text)
BINARY_SUFFIXES = {".safetensors", ".png", ".jpg", ".jpeg", ".pth", ".pt", ".npz", ".npy", ".gz", ".zip", ".mat",
                   ".index", ".bmp", ".tif", ".tiff", ".webp", ".pdf"}
#: scripts in benchmarks/ that write result files without benchmarks/_record.py, and why
RECORD_EXCEPTIONS = {
    "real_photos.py": "records its own command line and commit; maintained with the photo path (issue #18) by "
                      "another owner, so it is moved to _record.py separately",
}


def _module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def record():
    return _module("_record", BENCH / "_record.py")


# ---------------------------------------------------------------------------------------------
# portable_path
# ---------------------------------------------------------------------------------------------
def test_a_path_inside_the_checkout_becomes_relative_to_it(record) -> None:
    assert record.portable_path(ROOT / "benchmarks" / "results" / "x.json") == "benchmarks/results/x.json"
    assert record.portable_path(str(ROOT / "runs" / "a" / ".." / "b.pth")) == "runs/b.pth"
    assert record.portable_path(ROOT) == "."


def test_a_path_under_the_shared_folder_beside_the_checkout_becomes_dot_dot_shared(record) -> None:
    baby = ROOT.parent / "shared" / "data" / "mzsr_g20" / "Set5" / "baby.png"
    assert record.portable_path(baby) == "../shared/data/mzsr_g20/Set5/baby.png"
    assert record.portable_path(str(baby)) == "../shared/data/mzsr_g20/Set5/baby.png"
    assert record.portable_path(ROOT.parent / "shared") == "../shared"


def test_any_other_absolute_path_keeps_only_its_file_name(record, tmp_path: Path) -> None:
    elsewhere = tmp_path / "deep" / "meta_trained.pth"
    assert not str(elsewhere).startswith(str(ROOT) + "/")
    assert record.portable_path(elsewhere) == "<outside>/meta_trained.pth"
    sibling = ROOT.parent / "another-checkout" / "runs" / "w.pth"  # beside the checkout, but not ../shared
    assert record.portable_path(sibling) == "<outside>/w.pth"


def test_names_and_relative_paths_pass_through(record) -> None:
    assert record.portable_path("idn_x2_bicubic") == "idn_x2_bicubic"  # a bundled weights name
    assert record.portable_path("random") == "random"
    assert record.portable_path("runs/x/meta_trained.pth") == "runs/x/meta_trained.pth"
    assert record.portable_path(Path("runs") / "y.json") == "runs/y.json"
    assert record.portable_path(None) is None


def test_arguments_with_paths_after_an_equals_sign_are_made_portable(record, tmp_path: Path) -> None:
    shared_set5 = ROOT.parent / "shared" / "data" / "set5"
    assert record.portable_arg(f"set5={shared_set5}") == "set5=../shared/data/set5"
    assert record.portable_arg(f"--json={ROOT / 'runs' / 'o.json'}") == "--json=runs/o.json"
    assert record.portable_arg(f"(a) label={tmp_path / 'm.jsonl'}") == "(a) label=<outside>/m.jsonl"
    assert record.portable_arg("data.kernel=random") == "data.kernel=random"
    assert record.portable_arg("--steps") == "--steps"


# ---------------------------------------------------------------------------------------------
# result_record
# ---------------------------------------------------------------------------------------------
def test_result_record_names_command_commit_cpu_and_threads_without_machine_paths(record, tmp_path: Path) -> None:
    argv = ["--lr", str(ROOT.parent / "shared" / "data" / "baby.png"), "--json", str(ROOT / "runs" / "o.json"),
            "--weights", str(tmp_path / "w.npz"), "--label", "two words"]
    rec = record.result_record(argv, threads=3, script=BENCH / "bench_adapt.py")
    for key in ("command", "commit", "dirty", "cpu", "cpu_flags", "threads", "torch", "python", "date"):
        assert key in rec, key
    assert rec["command"] == ("python benchmarks/bench_adapt.py --lr ../shared/data/baby.png --json runs/o.json "
                              "--weights '<outside>/w.npz' --label 'two words'")
    assert str(ROOT) not in rec["command"] and str(ROOT.parent) + "/" not in rec["command"]
    assert rec["threads"] == 3
    assert rec["cpu"] and rec["date"].endswith("+00:00")
    if shutil.which("git") and (ROOT / ".git").exists():
        assert re.fullmatch(r"[0-9a-f]{40}", rec["commit"] or ""), rec["commit"]
        assert isinstance(rec["dirty"], bool)
    json.dumps(rec)  # goes into a JSON file as it is


def test_result_record_defaults_to_this_process_threads_and_arguments(record, monkeypatch) -> None:
    import torch

    monkeypatch.setattr(sys, "argv", [str(BENCH / "table2.py"), "--sets", f"set5={ROOT.parent / 'shared' / 's5'}"])
    rec = record.result_record()
    assert rec["command"] == "python benchmarks/table2.py --sets set5=../shared/s5"
    assert rec["threads"] == torch.get_num_threads() and rec["torch"] == torch.__version__


def test_cpu_flags_lists_the_relevant_flags_present(record) -> None:
    info = "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse avx2 avx512f amx_tile avx512_bf16 amx_bf16\n"
    assert record.cpu_flags(info) == ["avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"]
    assert record.cpu_flags("flags\t: fpu sse2 avx2\n") == ["avx2"]
    assert record.cpu_flags("model name\t: no flags line\n") is None


# ---------------------------------------------------------------------------------------------
# the repository
# ---------------------------------------------------------------------------------------------
def _tracked_files() -> list[Path]:
    if shutil.which("git") is None:
        pytest.skip("git is not available")
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError):
        pytest.skip("not a git checkout")
    return [ROOT / name for name in out.stdout.decode("utf-8", "surrogateescape").split("\0") if name]


def test_no_tracked_text_file_names_the_machine_path_of_the_checkout() -> None:
    parent = str(ROOT.parent)
    if ROOT.parent == Path(ROOT.anchor):
        pytest.skip("the checkout sits at the top of the file system: no parent folder to look for")
    # the parent folder as the start of a path (not inside a URL or a longer path that merely ends the same)
    pattern = re.compile(rb"(?<![\w./-])" + re.escape((parent + "/").encode()))
    offenders = []
    for path in _tracked_files():
        if path.suffix.lower() in BINARY_SUFFIXES or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary
        for number, line in enumerate(data.splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(ROOT).as_posix()}:{number}")
                break
    assert not offenders, (f"tracked files name the machine path {parent}/ (write paths through "
                           f"benchmarks/_record.py portable_path): {offenders}")


def _result_writers() -> dict[str, str]:
    writes = re.compile(r"json\.dump|\.write_text\(|atomic_write_text\(|savefig\(")
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(BENCH.glob("*.py"))
            if p.name != "_record.py" and writes.search(p.read_text(encoding="utf-8"))}


def test_every_benchmark_that_writes_results_records_its_run() -> None:
    writers = _result_writers()
    assert {"bench_tf_baseline.py", "mlsr_tables.py", "table2.py"} <= set(writers)  # the check sees the scripts
    missing = [name for name, src in writers.items()
               if name not in RECORD_EXCEPTIONS and not re.search(r"^from _record import .*result_record", src, re.M)]
    assert not missing, f"these benchmarks write results without benchmarks/_record.py result_record: {missing}"
    stale = [name for name in RECORD_EXCEPTIONS if name not in writers]
    assert not stale, f"RECORD_EXCEPTIONS names scripts that no longer write results: {stale}"
    raw_argv = [name for name, src in writers.items()
                if name not in RECORD_EXCEPTIONS and re.search(r"""(["']argv["']\s*:|argv=)\s*sys\.argv\b""", src)]
    assert not raw_argv, f"these benchmarks write sys.argv as it is (use _record.portable_argv): {raw_argv}"


def test_every_benchmark_script_compiles(tmp_path: Path) -> None:
    for path in sorted(BENCH.glob("*.py")):
        py_compile.compile(str(path), cfile=str(tmp_path / (path.stem + ".pyc")), doraise=True)


# ---------------------------------------------------------------------------------------------
# benchmarks/bench_tf_baseline.py (TensorFlow is not needed for these)
# ---------------------------------------------------------------------------------------------
def test_tf_baseline_help_and_a_missing_lr_image_is_one_clear_line(tmp_path: Path) -> None:
    script = str(BENCH / "bench_tf_baseline.py")
    r = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--threads" in r.stdout and "--lr" in r.stdout, r.stderr
    missing = tmp_path / "no" / "baby.png"
    r = subprocess.run([sys.executable, script, "--lr", str(missing), "--framework", "torch"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert str(missing) in lines[0] and "../shared/data/mzsr_g20/Set5/baby.png" in lines[0] and "--lr PATH" in lines[0]


def test_tf_baseline_passes_threads_to_both_children() -> None:
    tfb = _module("bench_tf_baseline", BENCH / "bench_tf_baseline.py")
    args = argparse.Namespace(tf_python="tfpy", torch_python="torchpy", repeats=1, meta_repeats=1, only=["sr_512"],
                              weights="w.npz", lr="baby.png", threads=2)
    for fw in ("tf", "torch"):
        cmd = tfb.child_args(args, fw)
        assert cmd[cmd.index("--threads") + 1] == "2" and cmd[cmd.index("--lr") + 1] == "baby.png"
    args.threads = None
    assert "--threads" not in tfb.child_args(args, "torch")


@pytest.mark.parametrize("attr,flag,value", [("torch_precision", "--torch-precision", "bf16"),
                                              ("meta_conv_algorithm", "--meta-conv-algorithm", "winograd"),
                                              ("adapt_conv_algorithm", "--adapt-conv-algorithm", "winograd")])
def test_tf_baseline_passes_torch_settings_to_the_torch_child_only(attr, flag, value) -> None:
    """The <= 0.5 goal compares torch's bf16 with TF's fp32 in one alternating run; Winograd is torch's alone."""
    tfb = _module("bench_tf_baseline", BENCH / "bench_tf_baseline.py")
    args = argparse.Namespace(tf_python="tfpy", torch_python="torchpy", repeats=1, meta_repeats=1, only=["meta_so"],
                              weights="w.npz", lr="baby.png", threads=None, **{attr: value})
    cmd = tfb.child_args(args, "torch")
    assert cmd[cmd.index(flag) + 1] == value
    assert flag not in tfb.child_args(args, "tf")


def test_tf_baseline_times_the_same_sr_work_on_the_torch_side(tmp_path: Path, monkeypatch) -> None:
    """sr_512 times the network on a prepared bicubic upsampling, as the TF side does; the torch side timed
    sr_tensor(), whose float64 bicubic resize TF never timed."""
    import numpy as np

    from metasr_adapter.ops import degrade
    from metasr_adapter.ops.imageio import write_image

    tfb = _module("bench_tf_baseline", BENCH / "bench_tf_baseline.py")
    rng = np.random.default_rng(0)
    arrays = {}
    for k in range(1, 9):
        cin, cout = (3 if k == 1 else 64), (3 if k == 8 else 64)
        arrays[f"MODEL/conv{k}/kernel"] = rng.normal(0, 0.01, (3, 3, cin, cout)).astype(np.float32)
        arrays[f"MODEL/conv{k}/bias"] = np.zeros(cout, np.float32)
    np.savez(tmp_path / "w.npz", **arrays)
    write_image(tmp_path / "lr.png", rng.random((32, 32, 3)).astype(np.float32))
    calls = []
    real = degrade.imresize
    monkeypatch.setattr("metasr_adapter.adapt.metasr.imresize", lambda *a, **k: calls.append(1) or real(*a, **k))
    args = argparse.Namespace(threads=None, torch_malloc="default", weights=str(tmp_path / "w.npz"),
                              lr=str(tmp_path / "lr.png"), repeats=3, meta_repeats=1, meta_channels_last=False,
                              torch_precision="fp32")
    res = tfb.bench_torch(args, ["sr_512"])
    assert len(res["times"]["sr_512"]) == 3 and res["info"]["precision"] == "fp32"
    # one resize for the son, one for the prepared input, one more in the FLOP count's run of sr_network: none
    # per timed repetition
    assert len(calls) <= 3, len(calls)


def test_table2_evaluates_weights_at_the_scale_they_were_trained_for(tmp_path: Path, monkeypatch) -> None:
    """table2.py wrapped every model at x2: x4 weights gave numbers for the wrong task, next to the paper's x2 row."""
    import numpy as np

    from metasr_adapter import MZSRNet
    from metasr_adapter.io.weights import save_weights
    from metasr_adapter.ops.imageio import write_image

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    weights = save_weights(MZSRNet(width=8, depth=2), tmp_path / "x4.pth", arch="mzsr",
                           arch_kwargs={"width": 8, "depth": 2}, scale=4, ds_method="direct", schedule="mzsr_x4")
    hr = tmp_path / "set5"
    hr.mkdir()
    write_image(hr / "a.png", np.random.default_rng(0).random((96, 96, 3)).astype(np.float32))
    out = tmp_path / "t2"
    table2 = _module("table2", BENCH / "table2.py")
    monkeypatch.setattr(sys, "argv", ["table2.py", "--sets", f"set5={hr}", "--kernels", "gd2.0", "--weights-direct",
                                      str(weights), "--out", str(out), "--quiet", "--threads", "1"])
    assert table2.main() == 0
    cell = json.loads((out / "set5_gd2.0.json").read_text())
    assert cell["settings"]["scale"] == 4.0 and cell["settings"]["crop_border"] == 4 and cell["scale"] == 4
    md = (out / "table2.md").read_text()
    assert "x4" in md and "35.20" not in md  # no paper x2 numbers beside an x4 cell
    assert "mzsr_x2_bicubic" not in md  # the header names only the weights its cells used


def test_bench_meta_names_the_anil_inner_loops_and_the_last_step_objective() -> None:
    bm = _module("bench_meta", BENCH / "bench_meta.py")
    assert bm.parse_config("so:bf16:loop:cl@anil")["inner_loop"] == "anil"
    assert bm.parse_config("fo:fp32:loop:nchw@anil-uncut")["inner_loop"] == "anil-uncut"
    assert bm.parse_config("so:fp32:loop:nchw")["inner_loop"] == "all"
    last = bm.parse_config("so:bf16:loop:cl@last")
    assert (last["inner_loop"], last["query_losses"]) == ("all", "last")
    assert bm.parse_config("so:bf16:loop:cl")["query_losses"] == "every step"
    with pytest.raises(ValueError, match="@anil, @anil-uncut or @last"):
        bm.parse_config("so:fp32:loop:nchw@head")


def test_table2_measures_the_weights_users_get_by_default(tmp_path: Path, monkeypatch) -> None:
    """table2.py's defaults were the first bundled weights (mzsr_x2_direct / mzsr_x2_bicubic), not the ones the
    package now loads for a known kernel: a plain run scored weights no user gets."""
    import numpy as np

    from metasr_adapter.io.pretrained import default_weights
    from metasr_adapter.ops.imageio import write_image

    hr = tmp_path / "set5"
    hr.mkdir()
    write_image(hr / "a.png", np.random.default_rng(0).random((48, 48, 3)).astype(np.float32))
    out = tmp_path / "t2"
    table2 = _module("table2", BENCH / "table2.py")
    monkeypatch.setattr(sys, "argv", ["table2.py", "--sets", f"set5={hr}", "--kernels", "gb1.3", "--out", str(out),
                                      "--quiet", "--threads", "1"])
    assert table2.main() == 0
    cell = json.loads((out / "set5_gb1.3.json").read_text())
    assert cell["weights"] == default_weights("mzsr", scale=2, ds_method="bicubic").name


def test_table2_never_keeps_a_cell_of_other_weights_beside_this_runs(tmp_path: Path, monkeypatch, capsys) -> None:
    """An existing cell was skipped whatever weights measured it: a run with other weights (or precision, or
    back-projection) in the same --out folder printed a table mixing two models under one header."""
    import numpy as np

    from metasr_adapter import MZSRNet
    from metasr_adapter.io.weights import save_weights
    from metasr_adapter.ops.imageio import write_image

    torch = pytest.importorskip("torch")
    files = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        files.append(save_weights(MZSRNet(width=8, depth=2), tmp_path / f"w{seed}.pth", arch="mzsr",
                                  arch_kwargs={"width": 8, "depth": 2}, scale=2, ds_method="direct", schedule=0.01))
    hr = tmp_path / "set5"
    hr.mkdir()
    write_image(hr / "a.png", np.random.default_rng(0).random((48, 48, 3)).astype(np.float32))
    out = tmp_path / "t2"
    table2 = _module("table2", BENCH / "table2.py")

    def run(weights: Path, *extra: str) -> int:
        monkeypatch.setattr(sys, "argv", ["table2.py", "--sets", f"set5={hr}", "--kernels", "gd2.0", "--weights-direct",
                                          str(weights), "--out", str(out), "--quiet", "--threads", "1", *extra])
        return table2.main()

    assert run(files[0]) == 0
    first = (out / "set5_gd2.0.json").read_text()
    assert run(files[0]) == 0 and "exists; skipped" in capsys.readouterr().out  # same settings: kept
    assert run(files[1]) == 2
    err = capsys.readouterr().err
    assert "w0.pth" in err and "w1.pth" in err and "--redo" in err, err
    assert run(files[0], "--back-projection", "2") == 2 and "back_projection 0" in capsys.readouterr().err
    assert (out / "set5_gd2.0.json").read_text() == first  # nothing replaced
    assert run(files[1], "--redo") == 0
    assert "w1.pth" in (out / "table2.md").read_text() and "w0.pth" not in (out / "table2.md").read_text()


@pytest.mark.parametrize("script,argv,word", [
    ("bench_meta_ab", ["--pairs", "0"], "--pairs 0"), ("bench_meta_ab", ["--precisions", "fp32,fp16"], "fp16"),
    ("bench_winograd", ["--repeats", "0"], "--repeats 0"), ("bench_winograd", ["--sizes", "meta,huge"], "meta,huge"),
    ("onednn_primitives", ["--frameworks", "tf,jax"], "tf,jax"),
    ("onednn_primitives", ["--base-repeats", "0"], "--base-repeats 0"),
    ("onednn_primitives", ["--only", "meta_xx"], "meta_xx"),
    ("cpu_threads", ["--seconds", "0"], "--seconds 0"), ("cpu_threads", ["--threads", "-1"], "--threads -1"),
    ("cpu_threads", ["--work", "adapt"], "adapt"), ("cpu_threads", ["--task-threads", "0"], "--task-threads 0"),
    ("bench_subpixel", ["--size", "0"], "--size 0"), ("bench_subpixel", ["--precisions", "fp16"], "fp16"),
    ("bench_subpixel", ["--layouts", "nchw,blocked"], "nchw,blocked"), ("bench_subpixel", ["--threads", "0"], "--threads 0"),
    ("bench_photo_ab", ["--base", "HEAD"], "photo files or --hr-dir"),
    ("bench_photo_ab", ["--base", "no-such-revision-here", "--hr-dir", "."], "no-such-revision-here"),
    ("bench_photo_ab", ["--base", "HEAD", "missing_photo.jpg"], "missing_photo.jpg"),
    ("bench_photo_ab", ["--base", "HEAD", "--hr-dir", ".", "--rounds", "0"], "--rounds 0")])
def test_benchmark_scripts_reject_bad_arguments_naming_them(script, argv, word, capsys):
    bench = _module(script, BENCH / f"{script}.py")
    with pytest.raises(SystemExit):
        bench.main(argv)
    assert word in capsys.readouterr().err


def test_bench_photo_ab_reads_the_work_time_metasr_adapt_reports():
    ab = _module("bench_photo_ab", BENCH / "bench_photo_ab.py")
    out = "x.jpg: estimating the degradation\nweights: idn_x2_photo (bf16)\nwrote sr.png (2048x1360) in 5.7 s\n"
    assert ab.reported_seconds(out) == 5.7
    with pytest.raises(RuntimeError, match="no 'wrote ... in X s' line"):
        ab.reported_seconds("Traceback (most recent call last):")


def test_profile_ops_labels_layouts_and_sums_calls():
    import torch

    prof = _module("profile_ops", BENCH / "profile_ops.py")
    x = torch.rand(2, 3, 4, 5)
    assert prof.layout(x) == "nchw(2, 3, 4, 5)"
    assert prof.layout(x.contiguous(memory_format=torch.channels_last)) == "cl(2, 3, 4, 5)"
    assert prof.layout(x.transpose(0, 1)).startswith("s(")
    timer = prof.OpTimer(min_numel=10)
    with timer:
        for _ in range(3):
            torch.relu(x)
    (key,) = [k for k in timer.calls if "relu" in k[0]]
    assert timer.calls[key] == 3 and key[1] == ("nchw(2, 3, 4, 5)",) and timer.seconds[key] > 0


# ---------------------------------------------------------------------------------------------
# benchmarks/onednn_primitives.py (parsing only: the children need TensorFlow and ../shared)
# ---------------------------------------------------------------------------------------------
_VERBOSE = [
    "onednn_verbose,v1,info,cpu,runtime:OpenMP,nthr:2",
    "onednn_verbose,v1,primitive,create:cache_miss,cpu,convolution,jit:avx512_core,backward_weights,src:f32::blocked:"
    "acdb::f0,,alg:convolution_direct,mb4_ic64oc64_ih64oh64kh3,0.5",
    "onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx512_core,backward_weights,src:f32::blocked:acdb::f0 "
    "wei:f32:a:blocked:ABcd16b16a::f0,attr-scratchpad:user,alg:convolution_direct,mb4_ic64oc64_ih64oh64kh3,8.25",
    "onednn_verbose,primitive,exec,cpu,convolution,brg_conv_fwd:avx512_core,forward_training,src:f32::blocked:acdb::f0,"
    ",alg:convolution_direct,mb4_ic64oc64_ih64oh64kh3,5.5",
    "onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,src:f32::blocked:acdb::f0 dst:f32::blocked:Acdb64a::f0,"
    "attr-scratchpad:user,,64x64x3x3,0.25",
    "BENCH_RESULT_JSON:{}",
]


def test_onednn_primitives_counts_executions_and_subtracts_one_repetition():
    prims = _module("onednn_primitives", BENCH / "onednn_primitives.py")
    one = prims.parse_verbose(_VERBOSE)
    wgrad = ("convolution", "jit:avx512_core", "backward_weights", "mb4_ic64oc64_ih64oh64kh3")
    assert one[wgrad] == [1, 8.25]  # the creation line is not an execution
    assert one[("convolution", "brg_conv_fwd:avx512_core", "forward_training", "mb4_ic64oc64_ih64oh64kh3")] == [1, 5.5]
    assert sum(c for c, _ in one.values()) == 3
    two = prims.parse_verbose(_VERBOSE + _VERBOSE[2:3])  # one more backward-weights call
    assert prims.difference(two, one) == {wgrad: [1, 8.25]}
    row = prims.summarise(two, wall_s=0.05, top=2)
    assert row["calls"] == 4 and abs(row["primitive_s"] - 0.02225) < 1e-12
    assert abs(row["overlap"] - 0.445) < 1e-9 and abs(row["outside_primitives_s"] - 0.02775) < 1e-12
    assert row["groups"]["conv backward-weights"] == {"calls": 2, "ms": 16.5, "ms_per_call": 8.25}
    assert [r["propagation"] for r in row["top"]] == ["backward_weights", "forward_training"]


# ---------------------------------------------------------------------------------------------
# benchmarks/cpu_threads.py (parsing only: sampling needs `perf` and a few minutes)
# ---------------------------------------------------------------------------------------------
_PERF_REPORT = [
    "# Samples: 59K of event 'cpu-clock:pppH'",
    "# Overhead  Pid:Command    Shared Object",
    "",
    "    42.79%    27164:python   [JIT] tid 27164     ",
    "    42.00%    27170:python   [JIT] tid 27164     ",
    "     4.61%    27170:python   libgomp.so.1        ",
    "     4.15%    27164:python   libtorch_cpu.so     ",
    "     2.49%    27170:python   libtorch_cpu.so     ",
    "     0.87%    27164:python   libpython3.11.so.1.0",
    "     0.81%    27164:python   libgomp.so.1        ",
    "     0.71%    27164:python   libc.so.6           ",
    "     0.08%    27164:python   [kernel.kallsyms]   ",
    "     0.40%    27166:python   libscipy_openblas64_-32a4b2a6.so",
]


def test_cpu_threads_groups_each_threads_samples_by_library():
    ct = _module("cpu_threads", BENCH / "cpu_threads.py")
    per = ct.parse_report(_PERF_REPORT)
    assert set(per) == {27164, 27170, 27166}
    assert per[27170]["kernels"] == 42.00 and per[27170]["openmp"] == 4.61 and per[27170]["libtorch"] == 2.49
    assert per[27164]["python"] == 0.87 and per[27164]["libc"] == 0.71 and per[27164]["os"] == 0.08
    assert per[27166]["other"] == 0.40
    res = ct.summarise(per, main_tid=27164)
    assert [(r["role"], r["tid"]) for r in res["threads"]] == [("main", 27164), ("worker", 27170)]  # < 1 % left out
    main, worker = res["threads"]
    assert main["share_of_samples"] == 49.41 and worker["share_of_samples"] == 49.1
    assert worker["percent"]["openmp"] == round(100 * 4.61 / 49.10, 2) == res["workers_waiting_percent"]
    assert res["main_outside_kernels_percent"] == round(100 - round(100 * 42.79 / 49.41, 2), 2)


_PERF_SCRIPT = [  # main thread 100, worker 101; sampled at 1 kHz
    "     100 50.0000:      7f45feac2f3b jit_brgemm_kernel_t.12 (/tmp/perf-100.map)",
    "     101 50.0003:      7f462b01de62 [unknown] (/opt/torch/lib/libgomp.so.1)",
    "     100 50.0010:      7f45feac2f3b jit_brgemm_kernel_t.2 (/tmp/perf-100.map)",
    "     101 50.0012:      7f462b01de62 [unknown] (/opt/torch/lib/libgomp.so.1)",
    "     100 50.0020:      7f0 c10::function_ref<void (char**, long const*, long, long)>::callback_fn<at::native::"
    "AVX2::VectorizedLoop2d<at::native::(anonymous namespace)::add_kernel> > (/opt/torch/lib/libtorch_cpu.so)",
    "     101 50.0021:      7f462b01de62 [unknown] (/opt/torch/lib/libgomp.so.1)",
    "     100 50.0030:      7f1 _int_malloc (/usr/lib/x86_64-linux-gnu/libc.so.6)",
    "     101 50.0034:      7f462b01de62 [unknown] (/opt/torch/lib/libgomp.so.1)",
    "     100 50.0040:      7f2 dnnl::impl::cpu::x64::jit_avx512_common_convolution_bwd_weights_t<>::compute_diff_bias "
    "(/opt/torch/lib/libtorch_cpu.so)",
    "     101 50.0040:      7f3 jit_brgemm_kernel_t.2 (/tmp/perf-100.map)",
    "     101 50.0300:      7f462b01de62 [unknown] (/opt/torch/lib/libgomp.so.1)",
]


def test_cpu_threads_says_what_the_main_thread_runs_while_workers_wait():
    ct = _module("cpu_threads", BENCH / "cpu_threads.py")
    samples = ct.parse_script(_PERF_SCRIPT)
    assert len(samples) == 11 and samples[0] == (100, 50.0, "jit_brgemm_kernel_t.12", "perf-100.map")
    assert samples[4][2].endswith("add_kernel> >") and samples[4][3] == "libtorch_cpu.so"
    res = ct.while_waiting(samples, main_tid=100, window_s=0.001)
    # five waiting samples; the last has no main-thread sample within a millisecond and is not paired
    assert res["waiting_samples"] == 5 and res["paired_samples"] == 4
    pct = res["main_thread_percent"]
    assert pct["onednn_kernels"] == 50.0 and pct["elementwise"] == 25.0 and pct["libc"] == 25.0
    assert pct["onednn_cpp"] == 0.0 and set(pct) == set(ct.ACTIVITIES)
    assert res["top_kernels_percent"] == {"jit_brgemm_kernel_t": 50.0}  # .12 and .2: one kind of kernel
    assert ct.main_activity("dnnl::impl::foo", "libtorch_cpu.so") == "onednn_cpp"
    assert ct.main_activity("torch::autograd::Engine::evaluate_function", "libtorch_cpu.so") == "framework"
    assert ct.main_activity("c10::impl::OperatorEntry::lookup", "libc10.so") == "framework"
    assert ct.main_activity("_PyEval_EvalFrameDefault", "libpython3.11.so.1.0") == "python"
    assert ct.main_activity("[unknown]", "[JIT] tid 100") == "onednn_kernels"
    assert ct.kernel_name("[unknown]") == "unnamed JIT code"
    assert ct.while_waiting([], main_tid=1, window_s=0.001)["main_thread_percent"]["python"] == 0.0


def test_cpu_threads_json_keeps_the_per_thread_rows(monkeypatch, tmp_path):
    ct = _module("cpu_threads", BENCH / "cpu_threads.py")
    summary = ct.summarise(ct.parse_report(_PERF_REPORT), main_tid=27164)
    waiting = ct.while_waiting(ct.parse_script(_PERF_SCRIPT), main_tid=100, window_s=0.001)
    monkeypatch.setattr(ct, "measure", lambda args: {**summary, "iterations_s": [12.0, 12.2],
                                                     "median_iteration_s": 12.1, "while_workers_wait": waiting})
    out = tmp_path / "threads.json"
    ct.main(["--threads", "2", "--json", str(out)])
    saved = json.loads(out.read_text())
    assert [r["role"] for r in saved["threads"]] == ["main", "worker"]  # the rows, not the thread count
    assert saved["omp_threads"] == 2 and saved["while_workers_wait"]["paired_samples"] == 4


def test_cpu_threads_without_perf_says_how_to_install_it(monkeypatch):
    ct = _module("cpu_threads", BENCH / "cpu_threads.py")
    monkeypatch.setattr(ct.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit, match="perf.*not found.*linux-perf"):
        ct.main(["--seconds", "1"])
