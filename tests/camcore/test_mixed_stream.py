"""Tagged and untagged images in one stream: ``Localizer.localize_files`` with a tag list for some
sources and ``None`` for others gives, in one pass through the loader processes, what a call for
the tagged images and another for the untagged ones give (real photos, a broken file)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from camcore.boxes import BoxParams
from camcore.images import ImageLoadError, load_image, original_size
from camcore.localizer import ImageResult, Localizer
from camcore.models import ModelSpec, build_model
from tests.prerequisites import shared_datasets

DATASET = shared_datasets() / "raccoon-kangaroo"


def _photos(n: int) -> list[Path]:
    raccoons = sorted((DATASET / "raccoon" / "images").glob("*.jpg"))[: n - n // 2]
    kangaroos = sorted((DATASET / "kangaroo" / "images").glob("*.jpg"))[: n // 2]
    return [p for pair in zip(raccoons, kangaroos, strict=False) for p in pair] + raccoons[len(kangaroos):]


def _same(a: ImageResult, b: ImageResult) -> None:
    """Same boxes, labels and maps; scores and maps to the last bit of a float32 (an image's
    forward pass in another batch may round differently)."""
    assert a.image_size == b.image_size
    assert torch.equal(a.boxes, b.boxes) and torch.equal(a.labels, b.labels)
    assert torch.allclose(a.scores, b.scores, rtol=1e-5, atol=1e-7)
    assert torch.allclose(a.class_scores, b.class_scores, rtol=1e-5, atol=1e-7)
    assert list(a.maps) == list(b.maps)
    for c in a.maps:
        assert torch.allclose(a.maps[c], b.maps[c], rtol=1e-4, atol=1e-6)


@pytest.mark.slow  # starts loader processes
@pytest.mark.usefixtures("shared_dataset")  # skipped without the dev photos, failed under CI
def test_one_stream_of_tagged_and_untagged_images_gives_the_two_calls_results(tmp_path: Path) -> None:
    torch.manual_seed(0)
    spec = ModelSpec(class_names=["raccoon", "kangaroo"], input_size=224)
    model = build_model(spec, weights="imagenet").eval()
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    sources: list[Path] = [*_photos(8)[:3], broken, *_photos(8)[3:]]
    tags: list[list[int] | None] = [[0], None, [0, 1], [1], None, None, [1], [0], None]
    streamed = Localizer(model, spec, params=BoxParams(), batch_size=4, loader="processes", loader_workers=2)
    phased = Localizer(model, spec, params=BoxParams(), batch_size=4, loader="threads")
    for top_k in (1, 2):
        got = list(streamed.localize_files(sources, tags, top_k=top_k))
        assert [p for p, _ in got] == list(range(len(sources)))
        assert isinstance(got[3][1], ImageLoadError) and "not a recognised image format" in got[3][1].reason
        tagged = [k for k, t in enumerate(tags) if t is not None]
        untagged = [k for k, t in enumerate(tags) if t is None]
        expected: dict[int, ImageResult | ImageLoadError] = {}
        for group, wanted in ((tagged, [tags[k] for k in tagged]), (untagged, None)):
            for position, outcome in phased.localize_files([sources[k] for k in group], wanted, top_k=top_k):
                expected[group[position]] = outcome
        for k, outcome in got:
            if k == 3:
                assert isinstance(expected[k], ImageLoadError)
                continue
            want = expected[k]
            assert isinstance(outcome, ImageResult) and isinstance(want, ImageResult)
            _same(outcome, want)
            # tagged: the tags' maps, boxes scored on the map alone; untagged: the top-k predicted classes
            t = tags[k]
            assert sorted(outcome.maps) == (sorted(t) if t is not None else sorted(outcome.class_scores.topk(top_k).indices.tolist()))
    # the batch API takes the same mixed tags
    images = [load_image(p, min_size=224) for p in _photos(4)]
    batch, sizes = phased.preprocess(images), [original_size(im) for im in images]
    mixed = phased.localize_batch(batch, sizes, [[1], None, None, [0]])
    assert [sorted(r.maps) for r in mixed[::3]] == [[1], [0]]
    alone = phased.localize_batch(batch[1:3], sizes[1:3], None)
    for a, b in zip(mixed[1:3], alone, strict=True):
        _same(a, b)
    streamed.close()
    phased.close()

