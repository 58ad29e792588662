"""``metasr weights``: the bundled files, what each is the default for, their model cards."""
from __future__ import annotations

import argparse
import json

import pytest

from metasr_adapter.cli.loading import choose_weights
from metasr_adapter.cli.main import main
from metasr_adapter.io.pretrained import BUNDLED_WEIGHTS

pytestmark = pytest.mark.skipif(not BUNDLED_WEIGHTS, reason="this install ships no weights")


def _rows(capsys) -> list[dict]:
    assert main(["weights", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_listing_names_every_bundled_file_once(capsys):
    assert main(["weights"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name in BUNDLED_WEIGHTS:
        assert sum(line.split()[0] == name for line in lines if line.strip()) == 1, name
    assert [r["name"] for r in _rows(capsys)] == list(BUNDLED_WEIGHTS)


@pytest.mark.parametrize("kernel,scale", [("gd2.0", None), ("gb1.3", None), ("estimate", None), ("gd2.0", 4.0)])
def test_default_for_says_what_the_command_line_really_loads(capsys, kernel, scale):
    """The 'default for' column is derived, not written down: it must agree with `metasr adapt`'s own choice."""
    args = argparse.Namespace(weights=None, kernel=kernel, ds_method=None, arch=None, scale=scale)
    chosen = choose_weights(args)[0]
    want = "--kernel estimate" if kernel == "estimate" else (
        f"known kernel ({'bicubic' if kernel.startswith('gb') else 'direct'})")
    claim = [r["name"] for r in _rows(capsys) if want in r["used_for"] and r["arch"] == "mzsr"
             and r["scale"] == (scale or 2.0)]
    assert claim == [chosen]
    # other architectures' defaults are claimed only under their --arch
    assert not [r["name"] for r in _rows(capsys) if r["arch"] != "mzsr" and want in r["used_for"]]
    args.arch = "idn"
    if scale is None:
        idn = choose_weights(args)[0]
        assert [r["name"] for r in _rows(capsys) if any(u.startswith("--arch idn with") and want in u
                                                          for u in r["used_for"])] == [idn]


def test_the_photo_row_and_the_scores_come_from_the_sidecars(capsys):
    rows = {r["name"]: r for r in _rows(capsys)}
    photo = [n for n, r in rows.items() if "photos" in r["used_for"]]
    assert len(photo) == 1
    from metasr_adapter.pipelines.photo import GRID_SPECIALISTS

    for grid, name in GRID_SPECIALISTS.items():  # the networks the photo path hands a plain resize to
        if name in rows:
            assert f"photos: a plain {grid} resize" in rows[name]["used_for"]
    for name, r in rows.items():
        w = BUNDLED_WEIGHTS[name]
        psnr = w.metrics["train_eval"]["mean_psnr"]
        k = str(w.adapt_steps or 1) if str(w.adapt_steps or 1) in psnr else str(max(int(s) for s in psnr if s.isdigit()))
        assert r["score"].startswith(f"{psnr[k]:.2f} dB at {k} step"), (name, r["score"])


def test_a_name_prints_its_model_card_and_a_wrong_one_lists_the_choices(capsys):
    name = next(iter(BUNDLED_WEIGHTS))
    assert main(["weights", name]) == 0
    assert capsys.readouterr().out == BUNDLED_WEIGHTS[name].model_card.read_text(encoding="utf-8")
    assert main(["weights", name, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == name
    assert main(["weights", "mzsr_x3_nothing"]) == 2
    err = capsys.readouterr().err
    assert "mzsr_x3_nothing" in err and name in err


def test_the_photo_default_is_one_helper_for_the_library_the_cli_and_the_listing():
    from metasr_adapter.pipelines.photo import PHOTO_WEIGHTS, default_photo_weights

    first = next(n for n in PHOTO_WEIGHTS if n in BUNDLED_WEIGHTS)
    assert default_photo_weights() == first == default_photo_weights(BUNDLED_WEIGHTS[first].arch)
    other = {w.arch for w in BUNDLED_WEIGHTS.values()} - {BUNDLED_WEIGHTS[n].arch for n in PHOTO_WEIGHTS if n in BUNDLED_WEIGHTS}
    for arch in other:  # e.g. --arch mzsr on the photo path: no photo weights of that architecture
        assert default_photo_weights(arch) is None
