import hashlib
import io
import json
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image, ImageDraw

from onetok.data import debian_photos as dp


def _encode(img, fmt, **kwargs):
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


@pytest.fixture
def photos(sample_photos):
    out = []
    for array in sample_photos[:4]:
        img = Image.fromarray(array)
        img.thumbnail((120, 120))
        out.append(img)
    return out


def _drawing(size=(160, 120)):
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    draw.ellipse((20, 20, 100, 100), fill="red", outline="black")
    draw.rectangle((90, 30, 150, 110), fill="blue")
    return img


def test_carve_images_out_of_a_fake_rcc_bundle(photos):
    thumbnail = _encode(photos[3].resize((32, 24)), "JPEG")
    embedded = [
        ("webp", _encode(photos[0], "WEBP", lossless=True)),
        ("png", _encode(photos[1], "PNG")),
        # a JPEG carrying another whole JPEG in a comment: its first end marker is the thumbnail's
        ("jpg", _encode(photos[2], "JPEG", quality=90, comment=thumbnail)),
    ]
    blob = b"qres\x00\x00\x00\x03" + b"\x00resource-table" * 20
    offsets = []
    for _, data in embedded:
        offsets.append(len(blob))
        blob += data + b"\x00\x01padding-between-files" * 7
    blob += b"\x89PNG\r\n\x1a\n cut off"  # a truncated file at the end is not reported
    carved = list(dp.carve_images(blob))
    assert [(o, f) for o, f, _ in carved] == [(o, f) for o, (f, _) in zip(offsets, embedded)]
    for (_, _, data), (_, original) in zip(carved, embedded):
        assert data == original
    decoded = np.asarray(Image.open(io.BytesIO(carved[0][2])).convert("RGB"))
    assert np.array_equal(decoded, np.asarray(photos[0]))


def test_looks_like_photo(photos):
    assert all(dp.looks_like_photo(p) for p in photos)
    assert not dp.looks_like_photo(_drawing())
    assert not dp.looks_like_photo(photos[0].convert("L").convert("RGB"))  # greyscale
    assert not dp.looks_like_photo(photos[0].resize((48, 48)))  # too small
    assert dp.looks_like_photo(photos[0].quantize(256).convert("P"))  # palette photo: <= 256 colours


def _rgba_cutout(img):
    rgba = img.convert("RGBA")
    mask = Image.new("L", img.size, 0)
    ImageDraw.Draw(mask).ellipse((5, 5, img.width - 5, img.height - 5), fill=255)
    rgba.putalpha(mask)
    return rgba


def test_tuxpaint_rules_and_grey_composite(photos):
    stamp = _encode(_rgba_cutout(photos[0]), "PNG")
    files = {
        "usr/share/tuxpaint/stamps/animals/cat.png": stamp,
        "usr/share/tuxpaint/stamps/animals/cat_mirror.png": stamp,
        "usr/share/tuxpaint/stamps/people/cartoon/guy.png": stamp,
        "usr/share/tuxpaint/stamps/food/apple.png": stamp,
        "usr/share/tuxpaint/stamps/food/apple.svg": b"<svg/>",
    }
    candidates = list(dp._tuxpaint(files))
    assert [(c.class_name, c.source_path.rsplit("/", 1)[1]) for c in candidates] == [("tuxpaint-animals", "cat.png")]
    package = dp.PACKAGES[1]
    photo = dp.to_photo(candidates[0], package)
    img = Image.open(io.BytesIO(photo.data))
    assert img.mode == "RGB" and img.getpixel((0, 0)) == (128, 128, 128)  # transparent corner -> grey


def _candidate(img, name, cls, fmt="JPEG", ext="jpg"):
    return dp.Candidate(cls, f"usr/share/x/{name}.{ext}", _encode(img, fmt), ext)


def test_pool_pipeline_dedupes_splits_and_writes_manifest(photos, tmp_path):
    package = dp.DebPackage("fake-photos", "1.0-1", "CC0", "usr/share/x/", lambda files: iter(()))
    candidates = [_candidate(p, f"p{i}", "fake-big") for i, p in enumerate(photos)]
    decoded_p0 = Image.open(io.BytesIO(candidates[0].data)).convert("RGB")
    candidates.append(_candidate(decoded_p0, "same-pixels", "fake-big", "PNG", "png"))  # other bytes, same pixels
    candidates.append(dp.Candidate("fake-big", "usr/share/x/again.jpg", candidates[0].data, "jpg"))  # same bytes
    candidates.append(_candidate(photos[1].transpose(Image.Transpose.FLIP_LEFT_RIGHT), "alone", "fake-tiny"))
    candidates.append(_candidate(_drawing(), "drawing", "fake-big", "PNG", "png"))
    found = [p for p in (dp.to_photo(c, package) for c in candidates) if p is not None]
    assert len(found) == 7  # the drawing is dropped
    unique = dp.dedupe(found)
    assert [p.candidate.source_path.rsplit("/", 1)[1] for p in unique] == ["p0.jpg", "p1.jpg", "p2.jpg", "p3.jpg", "alone.jpg"]
    by_class = dp.merge_small_classes(unique, min_size=2)
    assert {k: len(v) for k, v in by_class.items()} == {"fake-big": 4, "fake-other": 1}
    records = dp.write_pool(by_class, tmp_path, val_fraction=0.25)
    assert [r["split"] for r in records].count("val") == 1  # one of fake-big's 4, none from a class of 1
    val = next(r for r in records if r["split"] == "val")
    assert val["sha256"] == min(r["sha256"] for r in records if r["class"] == "fake-big")  # deterministic pick
    lines = [json.loads(l) for l in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert lines == records
    for r in lines:
        data = (tmp_path / r["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == r["sha256"]
        assert r["licence"] == "CC0" and r["source_package"] == "fake-photos" and r["source_version"] == "1.0-1"
    assert dp.class_counts(tmp_path) == {"fake-big": {"train": 3, "val": 1}, "fake-other": {"train": 1, "val": 0}}


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_fetch_from_a_cached_deb(photos, tmp_path):
    tree = tmp_path / "pkg"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        "Package: fake-photos\nVersion: 2.0-1\nArchitecture: all\nMaintainer: t <t@t>\nDescription: test\n"
    )
    (tree / "usr/share/doc/fake-photos").mkdir(parents=True)
    (tree / "usr/share/doc/fake-photos/copyright").write_text("License: CC0\n")
    pictures = tree / "usr/share/fake/pics"
    pictures.mkdir(parents=True)
    for i, p in enumerate(photos):
        p.save(pictures / f"photo{i}.jpg")
    debs = tmp_path / "root" / "debs"
    debs.mkdir(parents=True)
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(tree), str(debs / "fake-photos_2.0-1_all.deb")], check=True, capture_output=True)
    package = dp.DebPackage("fake-photos", "2.0-1", "CC0", "usr/share/fake/pics/", dp._jpgs_in(lambda p: "fake-pics"))
    pool = dp.fetch_debian_photos(tmp_path / "root", val_fraction=0.25, min_class_size=2, packages=(package,))
    assert pool == tmp_path / "root" / "debian-photos"
    assert dp.class_counts(pool) == {"fake-pics": {"train": 3, "val": 1}}
    assert (pool / "licences" / "fake-photos.copyright").read_text() == "License: CC0\n"
    assert not [p for p in (tmp_path / "root").iterdir() if p.name.startswith(".")]  # no temp folder left
    arrays = dp.predecode_pool(pool, 32)
    assert np.load(arrays[0]).shape == (3, 32, 32, 3) and np.load(arrays[1]).shape == (1, 32, 32, 3)


def test_missing_apt_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # neither dpkg-deb nor apt-get can be found
    package = dp.DebPackage("fake-photos", "9.9", "CC0", "usr/", lambda files: iter(()))
    with pytest.raises(dp.FetchError, match="needs a Debian/Ubuntu system"):
        dp.download_deb(package, tmp_path / "debs")
