"""The CPU work around the forward pass: parallel decoding/resizing, one-pass normalisation, and
the allocator setting that keeps freed tensor memory (real photos, real page-fault counts)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from camcore.images import ImageLoadError, load_image, load_images
from camcore.localizer import Localizer
from camcore.models import ModelSpec, build_model
from camcore.transforms import Normalizer, preprocess


def _photos(shared_dataset: Path, n: int) -> list[Path]:
    raccoons = sorted((shared_dataset / "raccoon" / "images").glob("*.jpg"))[: n // 2]
    kangaroos = sorted((shared_dataset / "kangaroo" / "images").glob("*.jpg"))[: n - n // 2]
    return raccoons + kangaroos


def test_load_images_in_parallel_keeps_order_and_puts_errors_in_place(shared_dataset: Path, tmp_path: Path) -> None:
    photos = _photos(shared_dataset, 6)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image at all")
    sources = photos[:3] + [broken] + photos[3:]
    with ThreadPoolExecutor(2) as pool:
        parallel = load_images(sources, min_size=448, executor=pool)
    serial = load_images(sources, min_size=448)
    assert isinstance(parallel[3], ImageLoadError) and "not a recognised image format" in str(parallel[3])
    assert load_images([serial[0], broken])[0] is serial[0]  # an image already loaded passes through
    for a, b in zip(parallel[:3] + parallel[4:], serial[:3] + serial[4:], strict=True):
        assert isinstance(a, Image.Image) and isinstance(b, Image.Image)
        assert a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b))


def test_preprocess_split_over_threads_is_identical_and_matches_torch(shared_dataset: Path) -> None:
    images = [load_image(p, min_size=448) for p in _photos(shared_dataset, 7)]
    images.append(images[0].resize((448, 448)))  # already at the input size: copied as is
    serial = preprocess(images, 448)
    with ThreadPoolExecutor(2) as pool:
        parallel = preprocess(images, 448, executor=pool, parts=3)
    assert serial.shape == (8, 3, 448, 448) and serial.dtype == torch.uint8 and serial.is_contiguous()
    assert torch.equal(serial, parallel)
    chw = torch.from_numpy(np.array(images[1])).permute(2, 0, 1).unsqueeze(0)
    expected = F.interpolate(chw, size=(448, 448), mode="bilinear", antialias=True, align_corners=False)[0]
    assert torch.equal(serial[1], expected)
    assert torch.equal(serial[7], torch.from_numpy(np.array(images[7])).permute(2, 0, 1))


def test_normalizer_is_the_per_channel_standardisation_in_the_wanted_layout() -> None:
    spec = ModelSpec(class_names=["a"], input_size=32)
    batch = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    expected = (batch.float() / 255.0 - mean) / std
    for layout in (torch.channels_last, torch.contiguous_format):
        out = Normalizer(spec, "cpu", layout)(batch)
        assert out.dtype == torch.float32 and out.is_contiguous(memory_format=layout)
        assert torch.allclose(out, expected, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="uint8"):
        Normalizer(spec)(batch.float())


def test_localizer_host_threads_change_nothing_but_speed(shared_dataset: Path) -> None:
    spec = ModelSpec(arch="tiny_cnn", class_names=["raccoon", "kangaroo"], input_size=64)
    torch.manual_seed(0)
    model = build_model(spec, weights=None).eval()
    paths = _photos(shared_dataset, 5)
    threaded, single = Localizer(model, spec, host_threads=2), Localizer(model, spec, host_threads=1)
    assert single.executor is None and threaded.executor is not None
    images = threaded.load_images(paths)
    assert all(isinstance(im, Image.Image) for im in images)
    a = threaded.localize(images)  # type: ignore[arg-type]
    b = single.localize([load_image(p, min_size=64) for p in paths])
    for ra, rb in zip(a, b, strict=True):
        assert torch.equal(ra.boxes, rb.boxes) and torch.equal(ra.class_scores, rb.class_scores)
    threaded.close()
    assert threaded.executor is None and len(threaded.localize(images[:1])) == 1  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="host_threads"):
        Localizer(model, spec, host_threads=0)


_FAULTS_SCRIPT = textwrap.dedent("""
    import json, resource, threading
    import torch
    from camcore.allocator import keep_freed_memory
    from camcore.models import ModelSpec, build_model

    applied = keep_freed_memory()
    torch.set_num_threads(1)
    spec = ModelSpec(class_names=["a", "b"], input_size=448)
    model = build_model(spec, weights=None).eval()
    x = torch.randn(2, 3, 448, 448)
    out = {}

    def passes():  # the forward passes of an infer job
        with torch.inference_mode():
            for _ in range(2):
                model(x)  # warm-up: the first passes fault their pages in
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            for _ in range(3):
                model(x)
        out["faults"] = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 3

    thread = threading.Thread(target=passes)  # the embedded worker runs jobs on a thread
    thread.start()
    thread.join()
    print(json.dumps({"applied": applied, "faults_per_pass": out["faults"]}))
""")


def _faults(env_switch: str) -> dict[str, object]:
    import json
    import os

    env = {**os.environ, "CAMLABEL_KEEP_FREED_MEMORY": env_switch}
    proc = subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT], capture_output=True, text=True, env=env, timeout=120, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # EfficientNet-Lite0 passes in two fresh processes
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc setting (no-op elsewhere)")
def test_keep_freed_memory_stops_page_faults_of_forward_passes() -> None:
    kept, released = _faults("1"), _faults("0")
    assert kept["applied"] is True and released["applied"] is False
    # EfficientNet-Lite0, 2 images at 448 px: with glibc's defaults every pass faults its
    # activations in again (tens of thousands of 4 KiB pages); kept, the pages are reused
    faults_kept, faults_released = float(kept["faults_per_pass"]), float(released["faults_per_pass"])  # type: ignore[arg-type]
    assert faults_released > 10_000, (faults_kept, faults_released)
    assert faults_kept < faults_released / 5, (faults_kept, faults_released)
