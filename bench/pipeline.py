"""Throughput of the whole camcore pipeline against the bare forward pass, torch-cam and grad-cam.

Usage::

    python bench/pipeline.py --device cpu|cuda [--images N] [--batch-size B] [--input-size S]

On the same images (the shared raccoon-kangaroo photos), the same model (EfficientNet-Lite0 with
ImageNet weights and a 2-class GAP head) and the same batches, in one run, it measures images/s of:

1. ``forward``: the bare ``model(x)`` on pre-decoded, pre-resized batches (normalisation included);
2. ``pipeline``: decode -> resize -> forward + CAM -> boxes -> PNG heatmap per map, from the
   files: (a) serially per batch, nothing overlapped (``pipeline_serial_vs_forward``); (b) as
   deployed, the whole set with decoding and PNG rendering overlapped with the forward pass in a
   thread pool, alternated with whole bare-forward runs (``pipeline_vs_forward``);
3. ``camlabel maps``: forward + CAM of the top class (no boxes/PNG) on the same batches as 1;
4. ``torchcam CAM`` and ``grad-cam GradCAM``: the same maps with those libraries.

Timings are best-of-``--repeats``, interleaved, so that bursts of load on a shared machine hit
every method alike. The last line is ``pipeline_vs_forward=<ratio>`` (overlapped pipeline / bare
forward, whole runs).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch

from camcore.cam import forward_with_cams
from camcore.concept_maps import render_heatmap_png
from camcore.images import load_image
from camcore.models import ModelSpec, build_model
from camcore.pipeline import BoxParams, ImageResult, Localizer, preprocess

DATASET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "raccoon-kangaroo"
DISPLAY_MAX = 640  # heatmap PNGs are rendered at the image size capped to this longest side


def _files(n: int) -> list[Path]:
    raccoon = sorted((DATASET / "raccoon" / "images").glob("*.jpg"))
    kangaroo = sorted((DATASET / "kangaroo" / "images").glob("*.jpg"))
    mixed = [f for pair in zip(raccoon, kangaroo) for f in pair] + raccoon[len(kangaroo):]
    if not mixed:
        sys.exit(f"no images under {DATASET}")
    return mixed[:n]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _display_size(size: tuple[int, int]) -> tuple[int, int]:
    w, h = size
    scale = min(1.0, DISPLAY_MAX / max(w, h))
    return max(1, round(w * scale)), max(1, round(h * scale))


def _load_batch(paths: list[Path], input_size: int) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    images = [load_image(p) for p in paths]
    return preprocess(images, input_size), [im.size for im in images]


def _render(results: list[ImageResult]) -> int:
    total = 0
    for r in results:
        for m in r.maps.values():
            total += len(render_heatmap_png(m, _display_size(r.image_size)))
    return total


def run_pipeline(loc: Localizer, files: list[Path], batch_size: int, workers: int) -> float:
    """Seconds for decode -> resize -> forward+CAM -> boxes -> PNG over ``files``, overlapped."""
    chunks = [files[i : i + batch_size] for i in range(0, len(files), batch_size)]
    device = loc.device
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending_render: list[Future[int]] = []
        next_batch = pool.submit(_load_batch, chunks[0], loc.spec.input_size)
        for i in range(len(chunks)):
            batch, sizes = next_batch.result()
            if i + 1 < len(chunks):
                next_batch = pool.submit(_load_batch, chunks[i + 1], loc.spec.input_size)
            results = loc.localize_batch(batch, sizes, None, top_k=1)
            pending_render.append(pool.submit(_render, results))
        for f in pending_render:
            f.result()
    _sync(device)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--input-size", type=int, default=384)
    parser.add_argument("--workers", type=int, default=2, help="threads for decoding and PNG rendering")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (best per batch kept)")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA (forward and pipeline alike)")
    parser.add_argument("--skip-libraries", action="store_true", help="skip the torch-cam / grad-cam comparison")
    parser.add_argument("--method", default=None, help="map method of the pipeline (default: BoxParams() default)")
    args = parser.parse_args(argv)

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device available")
    device = torch.device(args.device)
    torch.manual_seed(0)
    spec = ModelSpec(class_names=["raccoon", "kangaroo"], input_size=args.input_size)
    model = build_model(spec, weights="imagenet").to(device).eval()
    amp = torch.bfloat16 if (args.amp and device.type == "cuda") else None
    params = BoxParams() if args.method is None else BoxParams(method=args.method)
    loc = Localizer(model, spec, device=device, autocast_dtype=amp, params=params)
    files = _files(args.images)
    n = len(files)
    print(f"device={device} torch_threads={torch.get_num_threads()} images={n} batch={args.batch_size} "
          f"input={args.input_size} amp={amp} pipeline_method={params.method} box_mode={params.mode}")

    # Pre-decoded, pre-resized batches for the forward-only measurements.
    chunks = [files[i : i + args.batch_size] for i in range(0, n, args.batch_size)]
    batches = [_load_batch(c, args.input_size) for c in chunks]

    def bare_forward(i: int) -> None:
        with torch.inference_mode(), loc._autocast():
            model(loc.normalize(batches[i][0]))

    def pipeline(i: int) -> None:  # decode -> resize -> forward+CAM -> boxes -> PNG, from the files
        batch, sizes = _load_batch(chunks[i], args.input_size)
        _render(loc.localize_batch(batch, sizes, None, top_k=1))

    def camlabel_maps(i: int) -> None:
        with loc._autocast():
            forward_with_cams(model, loc.normalize(batches[i][0]), None, top_k=1, method="cam").maps.cpu()

    methods: dict[str, Callable[[int], None]] = {"forward": bare_forward, "pipeline": pipeline, "camlabel_maps": camlabel_maps}
    if not args.skip_libraries:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
        from torchcam.methods import CAM

        def torchcam_maps(i: int) -> None:
            with CAM(model, target_layer=model.backbone, fc_layer=model.classifier) as extractor:
                with torch.no_grad(), loc._autocast():
                    scores = model(loc.normalize(batches[i][0]))
                extractor(scores.argmax(1).tolist(), scores)[0].cpu()

        def gradcam_maps(i: int) -> None:
            with GradCAM(model=model, target_layers=[model.backbone]) as cam:
                x = loc.normalize(batches[i][0])
                with torch.no_grad():
                    top = model(x).argmax(1).tolist()
                cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in top])

        methods["torchcam"] = torchcam_maps
        methods["gradcam"] = gradcam_maps

    # warm-up (allocator, kernels, thread pools)
    for fn in methods.values():
        fn(0)
    # Interleaved: in every round each method runs once on each batch, back to back; the best
    # time per (method, batch) is kept, so a burst of load on a shared machine hits all alike.
    best = {name: [float("inf")] * len(batches) for name in methods}
    for _ in range(args.repeats):
        for i in range(len(batches)):
            for name, fn in methods.items():
                _sync(device)
                t0 = time.perf_counter()
                fn(i)
                _sync(device)
                best[name][i] = min(best[name][i], time.perf_counter() - t0)
    ips = {name: n / sum(times) for name, times in best.items()}
    labels = {
        "forward": "forward only",
        "pipeline": "camlabel pipeline (decode..PNG)",
        "camlabel_maps": "camlabel forward+CAM (top-1 maps)",
        "torchcam": "torch-cam CAM (forward+maps)",
        "gradcam": "grad-cam GradCAM (fwd+bwd+maps)",
    }
    for name, value in ips.items():
        print(f"{labels[name]:34s}: {value:8.2f} images/s")
    # The deployable configuration: decoding of the next batch and PNG rendering of the previous
    # one overlap the forward pass in a thread pool. Whole runs, alternated with whole bare-forward
    # runs over the same batches, best of --repeats each.
    t_fwd_run = t_overlap = float("inf")
    for _ in range(args.repeats):
        _sync(device)
        t0 = time.perf_counter()
        for i in range(len(batches)):
            bare_forward(i)
        _sync(device)
        t_fwd_run = min(t_fwd_run, time.perf_counter() - t0)
        t_overlap = min(t_overlap, run_pipeline(loc, files, args.batch_size, args.workers))
    print(f"{'forward only, whole runs':34s}: {n / t_fwd_run:8.2f} images/s")
    print(f"{'pipeline, overlapped, whole runs':34s}: {n / t_overlap:8.2f} images/s")
    print(f"pipeline_serial_vs_forward={ips['pipeline'] / ips['forward']:.3f}")
    if "torchcam" in ips:
        print(f"camlabel_maps_vs_torchcam={ips['camlabel_maps'] / ips['torchcam']:.3f}")
        print(f"camlabel_maps_vs_gradcam={ips['camlabel_maps'] / ips['gradcam']:.3f}")
        print(f"pipeline_vs_torchcam_maps={ips['pipeline'] / ips['torchcam']:.3f}")
        print(f"pipeline_vs_gradcam_maps={ips['pipeline'] / ips['gradcam']:.3f}")
    print(f"pipeline_vs_forward={t_fwd_run / t_overlap:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
