from __future__ import annotations

import numpy as np
import pytest
import torch

from metasr_adapter.ops.imageio import list_images, modcrop, read_icc_profile, read_image, to_tensor, write_image


def test_png_roundtrip_rgb_gray_rgba(tmp_path, rng):
    for shape in [(9, 7, 3), (9, 7), (9, 7, 4)]:
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        p = write_image(tmp_path / f"x{len(shape)}{shape[-1]}.png", img)
        assert np.array_equal(read_image(p), img)
    assert not list(tmp_path.glob(".*.tmp")), "no temp files left behind"


def test_write_float_and_tensor(tmp_path):
    f = np.linspace(0, 1, 2 * 3 * 3).reshape(2, 3, 3)
    p = write_image(tmp_path / "f.png", f)
    assert np.array_equal(read_image(p), np.round(f * 255).astype(np.uint8))
    t = torch.from_numpy(f).permute(2, 0, 1)[None]
    assert np.array_equal(read_image(write_image(tmp_path / "t.png", t)), read_image(p))


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp"])
def test_the_exif_orientation_is_applied_as_viewers_do(tmp_path, rng, orientation, suffix):
    """A phone photo stores its pixels sideways with an EXIF orientation tag that every viewer applies: read as
    stored, its SR image came out rotated against the photo it was made from. read_image turns it upright as
    PIL's ``exif_transpose`` does (the reference here), in every format that carries the tag."""
    from PIL import Image, ImageOps

    rgb = np.repeat(np.repeat(rng.integers(0, 256, (6, 10, 3), dtype=np.uint8), 4, 0), 4, 1)  # 24x40, not square
    pil = Image.fromarray(rgb)
    exif = pil.getexif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}{suffix}"
    pil.save(path, exif=exif, **({"quality": 100} if suffix == ".jpg" else {"lossless": True} if suffix == ".webp" else {}))
    with Image.open(path) as f:
        want = np.asarray(ImageOps.exif_transpose(f).convert("RGB"))
    got = read_image(path)
    assert got.shape == want.shape, (orientation, got.shape, want.shape)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= (8 if suffix == ".jpg" else 0)


def test_orientation_keeps_alpha_and_16_bits(tmp_path):
    from PIL import Image

    rgba = np.arange(3 * 5 * 4, dtype=np.uint8).reshape(3, 5, 4)
    pil = Image.fromarray(rgba, "RGBA")
    exif = pil.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    pil.save(tmp_path / "a.png", exif=exif)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), np.rot90(rgba, -1))
    deep = (np.arange(4 * 6, dtype=np.uint16).reshape(4, 6) * 2000)
    write_image(tmp_path / "d.png", deep)  # no EXIF: unchanged, 16 bits kept
    np.testing.assert_array_equal(read_image(tmp_path / "d.png"), deep)


def _profile(size: int = 0) -> bytes:
    """A real sRGB ICC profile, padded with a private tag area to ``size`` bytes when asked (long profiles, e.g.
    a camera's, span several JPEG segments)."""
    from PIL import ImageCms

    data = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return data + bytes(max(0, size - len(data)))


@pytest.mark.parametrize("suffix,size", [(".png", 0), (".jpg", 0), (".jpg", 150_000), (".png", 150_000)])
def test_the_colour_profile_travels_to_the_output(tmp_path, rng, suffix, size):
    """A photo in Display P3 or Adobe RGB carries an ICC profile; written without it, colour-managed viewers show the
    SR image in other colours than the photo. write_image embeds it (pixels and encoding as without it)."""
    from PIL import Image

    profile = _profile(size)
    img = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    plain, tagged = write_image(tmp_path / f"a{suffix}", img), write_image(tmp_path / f"b{suffix}", img, icc_profile=profile)
    with Image.open(tagged) as f:
        assert f.info.get("icc_profile") == profile
    np.testing.assert_array_equal(read_image(tagged), read_image(plain))
    assert read_icc_profile(tagged) == profile and read_icc_profile(plain) is None
    deep = rng.integers(0, 65536, (6, 5, 3), dtype=np.uint16)
    if suffix == ".png":  # 16 bits too
        np.testing.assert_array_equal(read_image(write_image(tmp_path / "d.png", deep, icc_profile=profile)), deep)
        assert read_icc_profile(tmp_path / "d.png") == profile


def test_a_format_that_cannot_carry_the_profile_says_so(tmp_path, rng):
    img = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    with pytest.warns(UserWarning, match=r"\.bmp.*ICC.*\.png"):
        write_image(tmp_path / "a.bmp", img, icc_profile=_profile())
    np.testing.assert_array_equal(read_image(tmp_path / "a.bmp"), img)


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        read_image(tmp_path / "nope.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="decode"):
        read_image(tmp_path / "bad.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no images"):
        list_images(empty)
    with pytest.raises(FileNotFoundError, match="folder"):
        list_images(tmp_path / "missing")


def test_modcrop():
    assert modcrop(np.zeros((7, 9, 3)), 2).shape == (6, 8, 3)
    assert modcrop(np.zeros((12, 13)), 4).shape == (12, 12)


def test_to_tensor_and_restore_formats(rng):
    u8 = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    t, alpha, fmt = to_tensor(u8)
    assert t.shape == (1, 3, 5, 6) and alpha is None and t.dtype == torch.float32
    assert np.array_equal(fmt.restore(t), u8)
    gray = u8[:, :, 0]
    t, _, fmt = to_tensor(gray)
    assert t.shape == (1, 3, 5, 6)
    assert np.array_equal(fmt.restore(t), gray)
    rgba = rng.integers(0, 256, (5, 6, 4), dtype=np.uint8)
    t, alpha, fmt = to_tensor(rgba)
    assert t.shape == (1, 3, 5, 6) and alpha.shape == (1, 1, 5, 6)
    assert np.array_equal(fmt.restore(t, alpha), rgba)
    chw = torch.rand(3, 5, 6, dtype=torch.float64)
    t, _, fmt = to_tensor(chw)
    out = fmt.restore(t)
    assert out.shape == (3, 5, 6) and out.dtype == torch.float64
    assert torch.allclose(out, chw, atol=1e-6)


def test_to_tensor_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        to_tensor(np.full((4, 4, 3), 200.0))
    with pytest.raises(ValueError, match="batch"):
        to_tensor(torch.rand(2, 3, 4, 4))
    with pytest.raises(TypeError, match="float"):
        to_tensor(torch.zeros(1, 3, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="NaN"):
        to_tensor(np.full((4, 4, 3), np.nan, np.float32))
    with pytest.raises(ValueError, match="5 channels"):
        to_tensor(np.zeros((4, 4, 5), np.uint8))
