"""Whether reviewed objects are large enough for the maps' cells: the geometric bound, the
measurement and the suggested input size, on synthetic boxes and on the dev collections'
annotated boxes standing in for a reviewer's."""

from __future__ import annotations

import json
import random
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
from torchvision.ops import box_iou

from camcore.calibration import calibrate
from camcore.resolution import FINEST_SIDE_CELLS, ResolutionCheck, check_resolution
from tests.camcore.quality.synth import pyramid_map
from tests.prerequisites import dev_dataset

GRID = 14  # cells of the default model's maps: 448 px input at stride 32


def test_the_finest_side_is_where_half_a_cell_off_at_each_edge_still_gives_iou_one_half() -> None:
    for side, expected in ((FINEST_SIDE_CELLS, 0.5), (FINEST_SIDE_CELLS * 0.8, None), (FINEST_SIDE_CELLS * 1.25, None)):
        obj = torch.tensor([[10.0, 10.0, 10.0 + side, 10.0 + side]])
        boxed = obj + torch.tensor([[-0.5, -0.5, 0.5, 0.5]])  # each edge half a cell outward
        iou = float(box_iou(obj, boxed)[0, 0])
        if expected is not None:
            assert iou == pytest.approx(expected, abs=1e-6)
        else:
            assert (iou >= 0.5) == (side > FINEST_SIDE_CELLS)


def test_boxes_are_measured_in_cells_of_their_own_images_maps() -> None:
    sizes = {"wide": (640, 320), "square": (448, 448)}
    grids = {"wide": (7, 14), "square": (14, 14)}
    # 2 x 3 cells in the wide photo (a cell is 640/14 by 320/7 px), 1 x 1 cell in the square one
    reviewed = {"wide": [(0, [0.0, 0.0, 2 * 640 / 14, 3 * 320 / 7])], "square": [(1, [32.0, 32.0, 64.0, 64.0]), (1, [0.0, 0.0, 32.0, 32.0])],
                "no size": [(0, [0.0, 0.0, 10.0, 10.0])]}
    check = check_resolution(reviewed, sizes, grids)
    assert check.boxes == 3 and check.grid == 14
    assert check.median_side_cells == pytest.approx(1.0)  # sides sqrt(6), 1, 1
    assert check.too_small
    # the input at which the median object measures the finest side, rounded up to whole 32 px cells
    assert check.suggested_input_size(448) == 1088 and check.suggested_input_size(448) % 32 == 0
    assert check.suggested_input_size(448) * check.median_side_cells / 32 >= FINEST_SIDE_CELLS
    assert check.suggested_input_size(448, limit=1024) == 1024


def test_large_objects_and_no_boxes_are_not_flagged() -> None:
    large = check_resolution({"a": [(0, [0.0, 0.0, 200.0, 150.0])]}, {"a": (448, 448)}, {"a": (14, 14)})
    assert not large.too_small and large.suggested_input_size(448) == 448
    empty = check_resolution({}, {}, {})
    assert empty.boxes == 0 and not empty.too_small
    assert ResolutionCheck.from_dict(large.to_dict()).to_dict() == large.to_dict()  # as stored in the calibration
    with pytest.raises(ValueError, match="malformed resolution check"):
        ResolutionCheck.from_dict({"boxes": 3})
    with pytest.raises(ValueError, match="input_size"):
        large.suggested_input_size(0)


def test_calibration_reports_the_reviewed_objects_size_in_cells() -> None:
    size = (240, 180)
    maps, truth = {}, {}
    for i, side in enumerate((8.0, 10.0, 12.0)):  # objects about one cell of a 24 x 24 map
        m, box = pyramid_map((100.0, 80.0, 100.0 + side, 80.0 + side), 0.5, size)
        maps[i], truth[i] = {0: m}, [(0, list(box))]
    report = calibrate(maps, dict.fromkeys(maps, size), truth)["extra"]["calibration"]["resolution"]
    assert report["boxes"] == 3 and report["grid"] == 24 and report["too_small"] is True
    # a cell is 10 x 7.5 px: the median 10 px square measures 10 / sqrt(10 * 7.5) cells
    assert report["median_side_cells"] == pytest.approx(10.0 / 75**0.5, rel=0.05)


def _coco_reviewed(root: Path, n: int) -> tuple[dict, dict]:
    gt = json.loads((root / "gt.json").read_text())
    images = {im["id"]: (im["width"], im["height"]) for im in gt["images"]}
    boxes: dict[int, list] = {}
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        boxes.setdefault(a["image_id"], []).append((a["category_id"], [x, y, x + w, y + h]))
    drawn = random.Random(0).sample(sorted(boxes), n)
    return {k: boxes[k] for k in drawn}, {k: images[k] for k in drawn}


def _voc_reviewed(root: Path, n: int) -> tuple[dict, dict]:
    files = sorted(root.glob("*/annotations/*.xml"))
    reviewed, sizes = {}, {}
    for path in random.Random(0).sample(files, n):
        xml = ET.parse(path).getroot()
        sizes[path] = (int(xml.findtext("size/width") or 0), int(xml.findtext("size/height") or 0))
        reviewed[path] = [(0, [float(o.findtext(f"bndbox/{k}") or 0) for k in ("xmin", "ymin", "xmax", "ymax")])
                          for o in xml.findall("object")]
    return reviewed, sizes


def test_twenty_reviewed_images_flag_aquarium_fish_and_not_cards_or_animals() -> None:
    flagged = {}
    for name in ("aquarium", "playing_cards", "raccoon-kangaroo"):
        root = dev_dataset(name)
        reviewed, sizes = _voc_reviewed(root, 20) if name == "raccoon-kangaroo" else _coco_reviewed(root, 20)
        check = check_resolution(reviewed, sizes, dict.fromkeys(reviewed, (GRID, GRID)))
        assert check.boxes >= 20
        flagged[name] = check
    assert flagged["aquarium"].too_small and flagged["aquarium"].median_side_cells < 2.0
    assert 448 < flagged["aquarium"].suggested_input_size(448) <= 1088
    assert not flagged["playing_cards"].too_small and not flagged["raccoon-kangaroo"].too_small
    assert flagged["playing_cards"].median_side_cells > 3.0 and flagged["raccoon-kangaroo"].median_side_cells > 5.0
