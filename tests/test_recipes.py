"""Recipes: the shipped YAML files carry SPEC's constants; overrides, validation, paths, hashing."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from metasr_adapter.training.recipes import (
    SCHEMA,
    default_recipe,
    load_recipe,
    recipe_diff,
    recipe_hash,
    recipe_keys,
    validate_recipe,
)

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
SHIPPED = ["mzsr_x2.yaml", "mzsr_bicubic_x2.yaml", "mzsr_x4.yaml", "mlsr_idn_x2.yaml"]
CPU_BUDGET = ["mzsr_x2_cpu.yaml", "mzsr_bicubic_x2_cpu.yaml", "mzsr_x2_cpu_official_order.yaml",
              "mzsr_x2_cpu_long_fomaml.yaml", "mzsr_x2_cpu_official_order_long.yaml"]


def _flat_keys(tree: dict, prefix: str = "") -> set[str]:
    out: set[str] = set()
    for k, v in tree.items():
        out |= _flat_keys(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}"}
    return out


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_recipes_name_every_key_with_a_comment(name: str) -> None:
    text = (RECIPES / name).read_text()
    raw = yaml.safe_load(text)
    assert _flat_keys(raw) == set(recipe_keys()), "a shipped recipe must spell out every setting"
    # every numeric constant is commented with its SPEC section (or the paper)
    for line in text.splitlines():
        m = re.match(r"\s*(\w+):\s*([-+0-9.e\[\]]+)\s*(#.*)?$", line)
        if m and m.group(1) not in ("seed", "limit", "num_workers"):
            assert m.group(3) and ("SPEC" in m.group(3) or "paper" in m.group(3)), line
    load_recipe(RECIPES / name)  # valid


def test_directx2_recipe_is_the_released_configuration() -> None:
    r = load_recipe(RECIPES / "mzsr_x2.yaml")
    m, d = r["meta"], r["data"]
    # SPEC §4 table (released Directx2 [graph]) and §3
    assert (m["meta_batch"], m["task_batch"], m["iterations"]) == (5, 4, 60000)
    assert (m["inner_steps"], m["inner_lr"], m["meta_lr"]) == (5, 0.01, 1e-4)
    assert m["first_order"] is False and m["second_order_from"] == 0 and m["loss_weighting"] == "mzsr"
    assert (d["patch_size"], d["stride"], d["grad_threshold"], d["kernel_size"], d["kernel_k1_factor"]) == (
        64, 120, -6.0, 15, 2.5)
    assert d["ds_method"] == "direct" and d["scales"] == [2.0] and d["noise_std"] == 0.0
    assert r["eval"]["schedule"] == "mzsr_direct" and r["model"]["scale"] == 2
    p = r["pretrain"]  # SPEC §8
    assert (p["batch_size"], p["patch_size"], p["lr"], p["lr_decay_every"], p["lr_decay_factor"], p["lr_min"]) == (
        32, 96, 4e-4, 100000, 0.5, 1e-4)
    assert r["model"]["weights"] is None and p["iterations"] > 0  # pretraining from scratch by default


def test_bicubic_and_x4_recipes() -> None:
    b = load_recipe(RECIPES / "mzsr_bicubic_x2.yaml")
    assert b["data"]["ds_method"] == "bicubic" and b["meta"]["meta_batch"] == 4 and b["meta"]["task_batch"] == 8
    assert b["eval"]["schedule"] == "mzsr_bicubic" and b["eval"]["kernel"] == "gb1.3"
    x4 = load_recipe(RECIPES / "mzsr_x4.yaml")
    assert x4["data"]["scales"] == [4.0] and x4["model"]["scale"] == 4 and x4["meta"]["iterations"] == 77500
    assert x4["eval"]["schedule"] == "mzsr_x4" and x4["data"]["kernel_size"] == 15


def test_mlsr_recipe_carries_the_papers_settings() -> None:
    r = load_recipe(RECIPES / "mlsr_idn_x2.yaml")
    m, d = r["meta"], r["data"]
    # MLSR paper §3.2/§4: first-order MAML, 5 inner steps, α 1e-5, β 1e-6, 16 tasks, 512 patches, L2
    assert (m["first_order"], m["inner_steps"], m["inner_lr"], m["meta_lr"]) == (True, 5, 1e-5, 1e-6)
    assert (m["meta_batch"], m["task_batch"], m["loss"], m["loss_weighting"]) == (16, 1, "l2", "last")
    assert (d["tasks"], d["kernel"], d["patch_size"]) == ("mlsr", "bicubic", 512)
    assert r["model"]["name"] == "idn" and r["pretrain"]["loss"] == "l2"
    assert r["eval"]["schedule"] == 1e-5 and r["eval"]["kernel"] == "bicubic"


def test_task_settings_that_do_not_combine_are_rejected() -> None:
    with pytest.raises(ValueError, match="data.kernel='bicubic' needs data.tasks='mlsr'"):
        validate_recipe({"data": {"kernel": "bicubic"}})
    with pytest.raises(ValueError, match="uses one scale"):
        validate_recipe({"data": {"tasks": "mlsr", "scales": [2.0, 4.0]}})


def test_old_checkpoints_lacking_new_keys_match_their_defaults() -> None:
    new = default_recipe()
    old = default_recipe()
    del old["meta"]["loss"], old["data"]["tasks"]
    assert recipe_diff(old, new) == []
    new["meta"]["loss"] = "l2"
    assert recipe_diff(old, new) == ["meta.loss"]


def test_overrides_are_parsed_as_yaml_and_typed() -> None:
    r = load_recipe(RECIPES / "mzsr_x2.yaml", [
        "meta.iterations=10", "meta.meta_lr=1e-3", "model.weights=null", "data.scales=[2.0, 4]",
        "output.progress=false", "meta.inner_lr=[0.02, 0.01]", "eval.limit=2",
    ])
    assert r["meta"]["iterations"] == 10 and isinstance(r["meta"]["iterations"], int)
    assert r["meta"]["meta_lr"] == 1e-3 and isinstance(r["meta"]["meta_lr"], float)  # PyYAML reads 1e-3 as str
    assert r["model"]["weights"] is None
    assert r["data"]["scales"] == [2.0, 4.0]
    assert r["output"]["progress"] is False and r["meta"]["inner_lr"] == [0.02, 0.01] and r["eval"]["limit"] == 2


def test_unknown_keys_are_rejected_with_valid_keys_and_a_suggestion(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as exc:
        load_recipe(RECIPES / "mzsr_x2.yaml", ["meta.iteratons=5"])
    msg = str(exc.value)
    assert "meta.iteratons" in msg and "Did you mean 'iterations'" in msg and "meta_batch" in msg
    bad = tmp_path / "bad.yaml"
    bad.write_text("modle:\n  width: 8\n")
    with pytest.raises(ValueError, match=r"'modle'.*Did you mean 'model'.*Valid keys at the top level"):
        load_recipe(bad)
    bad.write_text("data:\n  patchsize: 8\n")
    with pytest.raises(ValueError, match=r"data.patchsize.*'patch_size'"):
        load_recipe(bad)
    with pytest.raises(ValueError, match="is a section"):
        load_recipe(None, ["meta=3"])
    with pytest.raises(ValueError, match="key=value"):
        load_recipe(None, ["meta.iterations"])


def test_bad_values_are_rejected() -> None:
    with pytest.raises(TypeError, match=r"meta.iterations.*expected int"):
        load_recipe(None, ["meta.iterations=lots"])
    with pytest.raises(TypeError, match="boolean"):
        load_recipe(None, ["meta.iterations=true"])
    with pytest.raises(ValueError, match="choose one of"):
        load_recipe(None, ["data.ds_method=nearest"])
    with pytest.raises(ValueError, match="may not be null"):
        load_recipe(None, ["meta.meta_batch=null"])
    with pytest.raises(TypeError, match="not a float"):
        load_recipe(None, ["data.scales=[two]"])
    with pytest.raises(FileNotFoundError):
        load_recipe("does/not/exist.yaml")


def test_relative_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "recipes"
    folder.mkdir()
    f = folder / "r.yaml"
    f.write_text("data:\n  train_dir: ../images\neval:\n  kernel: gd2.0\n  gt_dir: gt\n")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    r = load_recipe(f)
    assert r["data"]["train_dir"] == str((tmp_path / "images").resolve())  # against the recipe's folder
    assert r["eval"]["gt_dir"] == str((folder / "gt").resolve())
    assert r["eval"]["kernel"] == "gd2.0"  # a name, not a path
    assert r["name"] == "r"
    r2 = load_recipe(f, ["data.train_dir=imgs", "eval.kernel=k/kernel.mat"])
    assert r2["data"]["train_dir"] == str((elsewhere / "imgs").resolve())  # overrides: against the CWD
    assert r2["eval"]["kernel"] == str((elsewhere / "k" / "kernel.mat").resolve())


def test_winograd_is_a_valid_choice_for_mzsr_in_fp32() -> None:
    r = load_recipe(RECIPES / "mzsr_x2.yaml", ["meta.conv_algorithm=winograd"])
    assert r["meta"]["conv_algorithm"] == "winograd"
    with pytest.raises(ValueError, match="conv_algorithm"):
        load_recipe(RECIPES / "mzsr_x2.yaml", ["meta.conv_algorithm=fft"])


def test_task_threads_reach_the_learner_and_may_change_on_resume() -> None:
    r = load_recipe(RECIPES / "mzsr_x2.yaml", ["meta.task_threads=2"])
    assert r["meta"]["task_threads"] == 2 and validate_recipe({})["meta"]["task_threads"] == 1
    assert recipe_diff(load_recipe(RECIPES / "mzsr_x2.yaml"), r) == []  # round-off only, like meta.channels_last
    for bad in ("meta.task_threads=0", "meta.task_threads=two"):
        with pytest.raises(ValueError, match="task_threads"):
            load_recipe(RECIPES / "mzsr_x2.yaml", [bad])


def test_defaults_and_hash() -> None:
    d = validate_recipe({})
    assert d == validate_recipe(default_recipe())
    assert set(recipe_keys()) == _flat_keys(d)
    # keys that do not change the steps already taken may differ on resume (meta.iterations included)
    same = load_recipe(None, ["output.dir=/tmp/x", "data.num_workers=3", "meta.iterations=7"])
    assert recipe_hash(d) == recipe_hash(same)
    other = load_recipe(None, ["meta.iterations=7", "seed=1", "meta.task_batch=2"])
    assert recipe_hash(other) != recipe_hash(d)
    assert recipe_diff(d, other) == ["meta.task_batch", "seed"]
    # the layout of the same arithmetic may change on resume (a faster one on another CPU); the math may not
    relaid = load_recipe(None, ["meta.channels_last=true", "meta.task_batching=vmap"])
    assert recipe_diff(d, relaid) == [] and recipe_hash(relaid) == recipe_hash(d)
    assert recipe_diff(d, load_recipe(None, ["meta.precision=bf16"])) == ["meta.precision"]
    assert "meta" in SCHEMA and "iterations" in SCHEMA["meta"]


def _assert_spelled_out_and_explained(name: str) -> None:
    """Every recipe key present, and every numeric constant commented with why."""
    text = (RECIPES / name).read_text()
    assert _flat_keys(yaml.safe_load(text)) == set(recipe_keys()), "a shipped recipe must spell out every setting"
    for line in text.splitlines():
        m = re.match(r"\s*(\w+):\s*([-+0-9.e\[\], ]+)\s*(#.*)?$", line)
        if m and m.group(1) not in ("seed", "limit"):
            assert m.group(3), f"{name}: the constant on {line.strip()!r} needs a comment saying why"


@pytest.mark.parametrize("name", CPU_BUDGET)
def test_cpu_budget_recipes_spell_out_and_explain_every_constant(name: str) -> None:
    _assert_spelled_out_and_explained(name)
    r = load_recipe(RECIPES / name)
    assert r["model"]["weights"] is None, "shipped weights start from random initialisation"
    assert r["pretrain"]["degradation"] in ("kernel", "bicubic") and r["pretrain"]["iterations"] > 0
    assert r["meta"]["first_order"] or r["meta"]["second_order_from"] < r["meta"]["iterations"]


MLSR_CPU = ["idn_x2_cpu.yaml", "mlsr_idn_x2_cpu.yaml"]


@pytest.mark.parametrize("name", MLSR_CPU)
def test_mlsr_cpu_recipes_spell_out_and_explain_every_constant(name: str) -> None:
    _assert_spelled_out_and_explained(name)
    r = load_recipe(RECIPES / name)
    assert r["model"]["name"] == "idn" and r["model"]["scale"] == 2 and r["meta"]["loss"] == "l2"
    assert r["eval"]["kernel"] == "bicubic" and r["eval"]["schedule"] == pytest.approx(1e-5 * 255**2)


def test_mlsr_cpu_recipes_chain_pretraining_into_the_papers_algorithm() -> None:
    pre = load_recipe(RECIPES / "idn_x2_cpu.yaml")
    ml = load_recipe(RECIPES / "mlsr_idn_x2_cpu.yaml")
    # stage 1: supervised L2 on bicubic pairs from random initialisation, no meta-training
    p = pre["pretrain"]
    assert pre["model"]["weights"] is None and p["iterations"] > 0 and pre["meta"]["iterations"] == 0
    assert (p["degradation"], p["loss"], p["scale"]) == ("bicubic", "l2", 2)
    # stage 2 starts from stage 1's result, bundled as idn_x2_bicubic (its lineage names stage 1's recipe)
    from metasr_adapter.io.pretrained import get_weights

    assert ml["model"]["weights"] == "idn_x2_bicubic"
    assert get_weights("idn_x2_bicubic").lineage["recipe"] == pre["name"]
    assert ml["pretrain"]["iterations"] == 0
    # MLSR Algorithm 1: one patch per task, LR↓ → LR inner steps, LR → HR after the last of 5, first order, L2
    m, d = ml["meta"], ml["data"]
    assert (d["tasks"], d["kernel"], m["task_batch"], m["inner_steps"]) == ("mlsr", "bicubic", 1, 5)
    assert m["first_order"] is True and m["loss_weighting"] == "last" and m["loss"] == "l2"
    assert m["inner_lr"] == pytest.approx(1e-5 * 255**2) == ml["eval"]["schedule"]
    assert d["patch_size"] % 4 == 0 and m["iterations"] > 0 and ml["eval"]["evaluate_start"] is True


def test_the_sharp_lslr_recipe_continues_bundled_weights_with_sharp_kernels_and_learned_rates() -> None:
    """Issue #19's run: the bundled mzsr_x2_direct, second-order MAML, variances from 0.2, learned α."""
    _assert_spelled_out_and_explained("mzsr_x2_cpu_sharp_lslr.yaml")
    r = load_recipe(RECIPES / "mzsr_x2_cpu_sharp_lslr.yaml")
    base = load_recipe(RECIPES / "mzsr_x2_cpu.yaml")
    assert r["model"]["weights"] == "mzsr_x2_direct" and r["pretrain"]["iterations"] == 0
    assert r["data"]["kernel_min_var"] == pytest.approx(0.2) and r["meta"]["learn_inner_lr"]
    assert not r["meta"]["first_order"] and r["meta"]["second_order_from"] == 0
    same = ("meta_batch", "task_batch", "inner_steps", "meta_lr", "loss_weighting", "loss")
    assert {k: r["meta"][k] for k in same} == {k: base["meta"][k] for k in same}
    assert r["eval"]["lr_dir"] == base["eval"]["lr_dir"]  # probed on the official g^d_2.0 inputs



def test_the_long_official_order_recipe_differs_from_strategy_a_in_length_and_arithmetic_speed_only() -> None:
    """Issue #19 item 2: strategy (a) run longer; the same maths, bf16 + NHWC for the speed (recipe_diff ignores
    layouts, so precision and the length are all that may differ, besides names, folders and probe spacing)."""
    a = load_recipe(RECIPES / "mzsr_x2_cpu_official_order.yaml")
    long = load_recipe(RECIPES / "mzsr_x2_cpu_official_order_long.yaml")
    allowed = {"name", "meta.iterations", "meta.precision", "meta.probe_every", "output.dir", "output.checkpoint_every"}
    assert set(recipe_diff(a, long)) <= allowed
    assert long["meta"]["iterations"] >= 10 * a["meta"]["iterations"] and long["meta"]["precision"] == "bf16"


def test_the_next_x2_candidate_is_the_official_order_with_sharp_kernels_and_learned_rates() -> None:
    """Issue #19: (a) run longer plus exactly the two changes of the LSLR weights, nothing else."""
    _assert_spelled_out_and_explained("mzsr_x2_cpu_official_order_sharp_lslr.yaml")
    long = load_recipe(RECIPES / "mzsr_x2_cpu_official_order_long.yaml")
    lslr = load_recipe(RECIPES / "mzsr_x2_cpu_sharp_lslr.yaml")
    cand = load_recipe(RECIPES / "mzsr_x2_cpu_official_order_sharp_lslr.yaml")
    changed = {"data.kernel_min_var", "meta.inner_lr", "meta.learn_inner_lr", "meta.inner_lr_meta_lr"}
    assert set(recipe_diff(long, cand)) - {"name", "output.dir"} == changed
    for key in changed:
        section, field = key.split(".")
        assert cand[section][field] == lslr[section][field], key
    assert cand["model"]["weights"] is None and cand["pretrain"]["degradation"] == "bicubic"


def test_the_variants_of_the_v2_recipe_change_only_what_they_test() -> None:
    """The g^b counterpart of mzsr_x2_direct_lslr_v2 changes the subsampling, the rates' start (SPEC §5's Bicubicx2
    schedule) and the evaluation kernel; the last-step variant only the meta-objective (and skips the unweighted
    query passes). Anything else would confound the comparison with v2."""
    v2 = load_recipe(RECIPES / "mzsr_x2_cpu_official_order_sharp_lslr.yaml")
    names = {"name", "output.dir"}
    _assert_spelled_out_and_explained("mzsr_x2_cpu_official_order_sharp_lslr_bicubic.yaml")
    bic = load_recipe(RECIPES / "mzsr_x2_cpu_official_order_sharp_lslr_bicubic.yaml")
    assert set(recipe_diff(v2, bic)) - names == {"data.ds_method", "meta.inner_lr"}  # recipe_diff: training only
    assert {k for k in v2["eval"] if v2["eval"][k] != bic["eval"][k]} == {"lr_dir", "kernel", "ds_method", "schedule"}
    assert bic["data"]["ds_method"] == bic["eval"]["ds_method"] == "bicubic" and bic["eval"]["kernel"] == "gb1.3"
    assert bic["meta"]["inner_lr"] == [0.01, 0.01, 0.01, 0.001, 0.001]  # SPEC §5, model 2, steps 0-4
    _assert_spelled_out_and_explained("mzsr_x2_cpu_official_order_sharp_lslr_last.yaml")
    last = load_recipe(RECIPES / "mzsr_x2_cpu_official_order_sharp_lslr_last.yaml")
    assert set(recipe_diff(v2, last)) - names == {"meta.loss_weighting", "meta.log_query_losses"}
    assert last["meta"]["loss_weighting"] == "last" and last["meta"]["log_query_losses"] is False


def test_the_anil_recipe_is_the_lslr_run_with_only_the_last_two_layers_adapting() -> None:
    """Issue #19 item 5: ANIL against full MAML, one change apart (recipe_diff ignores folders and probe spacing)."""
    _assert_spelled_out_and_explained("mzsr_x2_cpu_sharp_lslr_anil.yaml")
    full = load_recipe(RECIPES / "mzsr_x2_cpu_sharp_lslr.yaml")
    anil = load_recipe(RECIPES / "mzsr_x2_cpu_sharp_lslr_anil.yaml")
    assert set(recipe_diff(full, anil)) == {"name", "meta.adapt_params"}
    assert anil["meta"]["adapt_params"] == ["conv7.*", "conv8.*"] and full["meta"]["adapt_params"] is None
    assert anil["output"]["dir"] != full["output"]["dir"]


def test_the_x4_recipe_continues_our_x2_weights_on_directx4_tasks() -> None:
    """Issue #19 item 6: x4 from the bundled x2 LSLR weights (SPEC §4 IS_TRANSFER starts x4 from an x2 model)."""
    _assert_spelled_out_and_explained("mzsr_x4_cpu_sharp_lslr.yaml")
    r = load_recipe(RECIPES / "mzsr_x4_cpu_sharp_lslr.yaml")
    official = load_recipe(RECIPES / "mzsr_x4.yaml")
    assert r["model"]["weights"] == "mzsr_x2_direct_lslr" and r["model"]["scale"] == 4 == official["model"]["scale"]
    assert r["data"]["scales"] == [4.0] and r["meta"]["task_batch"] == official["meta"]["task_batch"] == 8
    assert r["eval"]["schedule"] == "mzsr_x4" and r["eval"]["kernel"] == "gd2.0" and r["eval"]["lr_dir"] is None
    assert r["meta"]["learn_inner_lr"] and r["data"]["kernel_min_var"] == pytest.approx(0.2)


def test_the_settle_recipe_continues_the_lslr_weights_with_their_rates_and_a_decaying_beta() -> None:
    """Issue #19: mzsr_x2_cpu_sharp_lslr.yaml continued from its own result, three settings apart."""
    _assert_spelled_out_and_explained("mzsr_x2_cpu_sharp_lslr_settle.yaml")
    parent = load_recipe(RECIPES / "mzsr_x2_cpu_sharp_lslr.yaml")
    settle = load_recipe(RECIPES / "mzsr_x2_cpu_sharp_lslr_settle.yaml")
    assert set(recipe_diff(parent, settle)) == {"name", "model.weights", "meta.inner_lr_start", "meta.meta_lr_schedule"}
    assert settle["model"]["weights"] == "mzsr_x2_direct_lslr" and settle["meta"]["inner_lr_start"] == "weights"
    assert settle["meta"]["meta_lr_min"] < settle["meta"]["meta_lr"] and settle["output"]["dir"] != parent["output"]["dir"]


@pytest.mark.parametrize("settings, message", [
    (["meta.inner_lr_start=weights"], "needs meta.learn_inner_lr=true"),
    (["meta.inner_lr_start=weights", "meta.learn_inner_lr=true"], "model.weights set"),
    (["meta.meta_lr_schedule=cosine", "meta.meta_lr_min=1e-3"], "exceeds meta.meta_lr"),
    (["data.kernel=bicubic"], "needs data.tasks='mlsr'"),  # overrides were not checked against the file before
    (["meta.conv_algorithm=winograd", "meta.precision=bf16"], "meta.precision='bf16'.*would do nothing"),
    (["meta.conv_algorithm=winograd", "model.name=idn"], "model.name='idn'.*would do nothing"),
    (["meta.task_threads=2", "meta.task_batching=vmap"], "meta.task_threads=2 needs .*meta.task_batching=loop"),
    (["meta.task_threads=2", "meta.conv_algorithm=winograd"], "got functional, loop, winograd"),
])
def test_continuation_settings_that_do_not_combine_are_rejected(settings: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_recipe(RECIPES / "mzsr_x2.yaml", settings)
