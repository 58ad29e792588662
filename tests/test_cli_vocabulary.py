"""One vocabulary across the subcommands (issue #20, structure 3): ``--method`` is the SR method (eval),
``--estimator`` the kernel estimator (zssr, estimate-kernel), ``-o/--output`` what a command writes (train too),
``--kernel-shift`` ZSSR's kernel centring (zssr, eval), ``--seed``/``--quiet`` wherever a command draws random
numbers or shows progress, ``--device`` for train too. The old spellings stay accepted."""
from __future__ import annotations

import argparse
import json
import re

import pytest

from metasr_adapter.cli.main import build_parser, main
from metasr_adapter.ops.imageio import write_image


@pytest.fixture(scope="module")
def parser():
    return build_parser()


@pytest.mark.parametrize("flag", ["--estimator", "--method"])
def test_estimate_kernel_names_its_estimator_as_zssr_does(parser, flag):
    args = parser.parse_args(["estimate-kernel", "lr.png", "-o", "k.npy", flag, "kernelgan"])
    assert args.estimator == "kernelgan"
    assert parser.parse_args(["estimate-kernel", "lr.png", "-o", "k.npy"]).estimator == "gaussian"
    assert parser.parse_args(["zssr", "lr.png", "-o", "sr.png", "--kernel", "estimate", flag if flag == "--estimator"
                              else "--estimator", "kernelgan"]).estimator == "kernelgan"


@pytest.mark.parametrize("flag", ["--kernelgan-iters", "--iters"])
def test_iters_counts_zssr_iterations_and_kernelgan_has_its_own_name(parser, flag):
    """`--iters` (zssr) and `--zssr-iters` (eval) count ZSSR's iterations; KernelGAN's are `--kernelgan-iters`
    (estimate-kernel's old `--iters`, still accepted but no longer shown)."""
    args = parser.parse_args(["estimate-kernel", "lr.png", "-o", "k.npy", "--estimator", "kernelgan", flag, "7"])
    assert args.iters == 7
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    shown = sub.choices["estimate-kernel"].format_help()
    assert re.search(r"^\s+--kernelgan-iters N", shown, re.M) and not re.search(r"^\s+--iters\b", shown, re.M)
    assert parser.parse_args(["zssr", "lr.png", "-o", "sr.png", "--iters", "9"]).iters == 9
    assert parser.parse_args(["eval", "--gt-dir", "g", "--method", "zssr", "--zssr-iters", "9"]).zssr_iters == 9


@pytest.mark.parametrize("flag", ["--kernel-shift", "--zssr-kernel-shift"])
def test_eval_spells_the_kernel_shift_as_zssr_does(parser, flag):
    assert parser.parse_args(["eval", "--gt-dir", "g", "--method", "zssr", flag]).kernel_shift is True
    assert parser.parse_args(["eval", "--gt-dir", "g"]).kernel_shift is False
    assert parser.parse_args(["zssr", "lr.png", "-o", "sr.png", "--kernel-shift"]).kernel_shift is True


@pytest.mark.parametrize("flag", ["-o", "--output", "--out"])
def test_train_writes_to_dash_o_like_every_command(parser, flag):
    assert parser.parse_args(["train", "r.yaml", flag, "runs/x"]).out == "runs/x"


@pytest.mark.parametrize("command", [
    ["adapt", "lr.png", "-o", "sr.png"],
    ["eval", "--gt-dir", "g"],
    ["zssr", "lr.png", "-o", "sr.png"],
    ["estimate-kernel", "lr.png", "-o", "k.npy"],
    ["train", "r.yaml"],
])
def test_seed_and_quiet_in_every_command_that_draws_or_shows_progress(parser, command):
    args = parser.parse_args([*command, "--seed", "7", "--quiet"])
    assert args.seed == 7 and args.quiet is True
    assert parser.parse_args(command).quiet is False


def test_train_takes_device_seed_and_quiet_as_recipe_keys(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("name: tiny\nseed: 1\n")
    assert main(["train", str(recipe), "--show", "--device", "cpu", "--seed", "7", "--quiet"]) == 0
    shown = capsys.readouterr().out
    assert "device: cpu" in shown and "seed: 7" in shown and "progress: false" in shown
    # the flags win over --set, and without them the recipe's own values stay
    assert main(["train", str(recipe), "--show", "--set", "seed=3", "--seed", "9"]) == 0
    assert "seed: 9" in capsys.readouterr().out
    assert main(["train", str(recipe), "--show"]) == 0
    shown = capsys.readouterr().out
    assert "seed: 1" in shown and "device: auto" in shown and "progress: true" in shown


def test_adapt_quiet_shows_no_progress_bar(tmp_path, photo, tiny_x2, capsys):
    lr = tmp_path / "lr.png"
    write_image(lr, photo[:40, :50])
    argv = ["adapt", str(lr), "--weights", str(tiny_x2), "--kernel", "gd2.0", "--steps", "2", "-o", str(tmp_path / "a.png")]
    assert main(argv) == 0
    assert "adapt:" in capsys.readouterr().err  # the bar, by default
    assert main([*argv[:-1], str(tmp_path / "b.png"), "--quiet"]) == 0
    assert "adapt:" not in capsys.readouterr().err


def test_a_folder_run_records_its_seed(tmp_path, photo, tiny_x2):
    src = tmp_path / "lr"
    write_image(src / "img0.png", photo[:24, :28])
    out = tmp_path / "out"
    assert main(["adapt", str(src), "--weights", str(tiny_x2), "--kernel", "gd2.0", "--steps", "1", "--seed", "5",
                 "--quiet", "-o", str(out)]) == 0
    settings = json.loads((out / "img0.png.json").read_text())["settings"]
    assert settings["seed"] == 5
    # without --seed the sidecars stay as they were (no seed key), so earlier folder runs still resume
    again = tmp_path / "again"
    assert main(["adapt", str(src), "--weights", str(tiny_x2), "--kernel", "gd2.0", "--steps", "1", "--quiet",
                 "-o", str(again)]) == 0
    assert "seed" not in json.loads((again / "img0.png.json").read_text())["settings"]
