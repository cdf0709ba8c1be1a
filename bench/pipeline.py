"""Throughput of the whole camcore pipeline against the bare forward pass, torch-cam and grad-cam.

Usage::

    python bench/pipeline.py --device cpu|cuda [--images N] [--batch-size B] [--input-size S] [--loader processes|threads]
    python bench/pipeline.py --device cpu --host-only [--images N]

Images come from ``$CAMLABEL_BENCH_DATASET`` (a folder laid out like the shared raccoon-kangaroo
collection: ``raccoon/images/*.jpg``, ``kangaroo/images/*.jpg``), else that collection beside the
checkout (``../shared/datasets/raccoon-kangaroo``).

On the same images (the shared raccoon-kangaroo photos), the same model (EfficientNet-Lite0 with
ImageNet weights and a 2-class GAP head) and the same batches, in one run, it measures images/s of:

1. ``forward``: the bare ``model(x)`` on pre-decoded, pre-resized batches (normalisation included);
2. ``pipeline``: decode -> resize -> forward + CAM -> boxes -> float16 map per map (the blob an
   infer job stores), from the files, as deployed: (a) per batch, phased, interleaved with the
   other methods (``pipeline_serial_vs_forward``); (b) whole runs over all images through
   :meth:`camcore.localizer.Localizer.localize_files` (the streaming loader of the device:
   worker processes decoding ahead on CUDA, phased host threads on a CPU; boxes in worker
   processes while the next batch runs on CUDA), alternated with whole bare-forward runs
   (``pipeline_vs_forward``);
3. ``camlabel maps``: forward + CAM of the top class (no boxes/PNG) on the same batches as 1;
4. ``torchcam CAM`` and ``grad-cam GradCAM``: the same maps with those libraries, given the model
   as loaded (NCHW, BatchNorm unfolded); torch-cam also once on camlabel's prepared network.

The model is prepared as :class:`camcore.localizer.Localizer` prepares it (on a CPU an inference
copy with BatchNorm folded into the convolutions, channels-last; on CUDA the variant its measured
probe picks, printed as ``variant=``); "forward" is the bare forward pass of that same network, so
``pipeline_vs_forward`` measures only what the pipeline adds.

``--host-only`` measures the host work of the pipeline with the forward pass excluded: the maps
are computed first (untimed), then decode + resize + boxes + float16 map encoding of every image
run in 1 and then 2 worker processes; it prints ``host_cpu_ms_per_image=<x>`` (CPU time of every
process, per image, from the 1-process run), the CPU time per stage, and
``host_scaling_1_to_2=<ratio>`` (images/s with 2 processes / with 1). As after a
train job, per-class objectness statistics are fitted on the images first (untimed; pass
``--no-objectness-stats`` for the per-image fallback).

Timings are best-of-``--repeats``, interleaved, so that bursts of load on a shared machine hit
every method alike. The last line is ``pipeline_vs_forward=<ratio>`` (pipeline / bare forward,
whole runs). Like camlabel's worker processes, the benchmark keeps freed memory for reuse
(:func:`camcore.allocator.keep_freed_memory`; ``--release-freed-memory`` measures glibc's defaults).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from camcore.allocator import keep_freed_memory
from camcore.boxes import BoxParams, boxes_from_maps
from camcore.concept_maps import encode_map
from camcore.images import ImageLoadError, load_image, original_size
from camcore.localizer import ImageResult, Localizer
from camcore.methods import forward_with_cams
from camcore.models import GapClassifier, ModelSpec, build_model
from camcore.objectness import fit_objectness
from camcore.transforms import resize_into

DATASET = Path(os.environ.get("CAMLABEL_BENCH_DATASET") or Path(__file__).resolve().parents[2] / "shared" / "datasets" / "raccoon-kangaroo")


def _files(n: int) -> list[Path]:
    raccoon = sorted((DATASET / "raccoon" / "images").glob("*.jpg"))
    kangaroo = sorted((DATASET / "kangaroo" / "images").glob("*.jpg"))
    mixed = [f for pair in zip(raccoon, kangaroo, strict=False) for f in pair] + raccoon[len(kangaroo):]
    if not mixed:
        sys.exit(f"no images under {DATASET}")
    return mixed[:n]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _load_batch(loc: Localizer, paths: list[Path]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Decode and resize as the infer job does: in parallel on the localizer's host threads."""
    images = loc.load_images(paths)
    bad = [im for im in images if isinstance(im, Exception)]
    if bad:
        raise SystemExit(f"cannot load {bad[0]}")
    decoded = [im for im in images if not isinstance(im, Exception)]
    return loc.preprocess(decoded), [original_size(im) for im in decoded]


def _render(results: list[ImageResult]) -> int:
    total = 0
    for r in results:
        for m in r.maps.values():
            total += len(encode_map(m))  # what an infer job stores per map: the raw float16 map
    return total


def run_pipeline(loc: Localizer, files: list[Path], batch_size: int) -> float:
    """Seconds for decode -> resize -> forward+CAM -> boxes -> float16 maps over ``files``, through
    :meth:`Localizer.localize_files` (the localizer's loader and box workers; ``batch_size`` is
    the localizer's)."""
    start = time.perf_counter()
    results = []
    for _position, result in loc.localize_files(files, None, top_k=1):
        if isinstance(result, ImageLoadError):
            raise SystemExit(f"cannot load {result}")
        results.append(result)
    _render(results)
    _sync(loc.device)
    return time.perf_counter() - start


# -- host work only (--host-only) -----------------------------------------------------------

def _host_init() -> None:
    import torch as _torch

    _torch.set_num_threads(1)  # one core per process, as the loader and box processes run


def _host_pause(seconds: float) -> int:
    time.sleep(seconds)  # keeps a worker busy so that every worker of the pool gets started
    return os.getpid()


def _host_work(items: list[tuple[str, dict[int, np.ndarray], np.ndarray]], params: dict[str, Any],
               input_size: int) -> dict[str, float]:
    """Decode + resize + boxes + float16 map encoding of ``items`` in this process; CPU seconds per stage."""
    import torch as _torch

    spent = {"decode": 0.0, "resize": 0.0, "boxes": 0.0, "encode": 0.0}
    box_params = BoxParams.from_dict(params)
    out = np.empty((3, input_size, input_size), dtype=np.uint8)
    for path, maps, scores in items:
        t0 = time.process_time()
        img = load_image(path, min_size=input_size)
        t1 = time.process_time()
        resize_into(img, input_size, out)
        t2 = time.process_time()
        tensors = {c: _torch.from_numpy(m) for c, m in maps.items()}
        boxes_from_maps(tensors, original_size(img), box_params, class_scores=_torch.from_numpy(scores))
        t3 = time.process_time()
        for m in tensors.values():
            encode_map(m)
        t4 = time.process_time()
        spent["decode"] += t1 - t0
        spent["resize"] += t2 - t1
        spent["boxes"] += t3 - t2
        spent["encode"] += t4 - t3
    return spent


def host_only(args: argparse.Namespace) -> int:
    """Host CPU time per image with the forward pass excluded, and its scaling from 1 to 2 processes."""
    torch.manual_seed(0)
    spec = ModelSpec(class_names=["raccoon", "kangaroo"], input_size=args.input_size)
    model = build_model(spec, weights="imagenet").eval()
    files = _files(args.images)
    tags = [[spec.class_names.index(f.parent.parent.name)] for f in files]
    spec.extra["objectness"] = fit_objectness(model, spec, files, tags, device="cpu").to_dict()
    loc = Localizer(model, spec, device="cpu", batch_size=args.batch_size)
    items: list[tuple[str, dict[int, np.ndarray], np.ndarray]] = []
    for position, result in loc.localize_files(files, None, top_k=1):  # the forward pass: not timed
        assert isinstance(result, ImageResult), result
        items.append((str(files[position]), {c: m.numpy() for c, m in result.maps.items()}, result.class_scores.numpy()))
    loc.close()
    params = loc.params.to_dict()
    n = len(items)
    wall: dict[int, float] = {}
    cpu: dict[int, dict[str, float]] = {}
    for procs in (1, 2):
        best_wall, best_cpu = float("inf"), None
        with ProcessPoolExecutor(procs, mp_context=multiprocessing.get_context("fork"), initializer=_host_init) as pool:
            list(pool.map(_host_pause, [0.5] * procs))  # every worker started
            pool.submit(_host_work, items[:2], params, spec.input_size).result()  # warm: imports, caches
            for _ in range(args.repeats):
                parts = [items[k::procs * 4] for k in range(procs * 4)]
                parent0 = time.process_time()
                t0 = time.perf_counter()
                stages = list(pool.map(_host_work, parts, [params] * len(parts), [spec.input_size] * len(parts)))
                seconds = time.perf_counter() - t0
                spent = {k: sum(s[k] for s in stages) for k in stages[0]}
                spent["parent"] = time.process_time() - parent0
                if seconds < best_wall:
                    best_wall, best_cpu = seconds, spent
        assert best_cpu is not None  # at least one repeat ran
        wall[procs], cpu[procs] = best_wall, best_cpu
    one = cpu[1]
    total_ms = 1000 * sum(one.values()) / n
    print(f"device=cpu images={n} input={spec.input_size} box_method={loc.params.method} box_mode={loc.params.mode} "
          f"cores={os.cpu_count()} (forward pass excluded; PNG overlays not rendered)")
    print("host_cpu_ms_per_stage: " + " ".join(f"{k}={1000 * v / n:.3f}" for k, v in one.items()))
    for procs in (1, 2):
        print(f"host work in {procs} process(es): {n / wall[procs]:8.1f} images/s, "
              f"{1000 * sum(cpu[procs].values()) / n:.3f} CPU-ms/image")
    print(f"host_scaling_1_to_2={wall[1] / wall[2]:.3f}")
    print(f"host_cpu_ms_per_image={total_ms:.3f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--input-size", type=int, default=ModelSpec().input_size, help="network input side (default: the product's)")
    parser.add_argument("--host-threads", type=int, default=2, help="Localizer host_threads (decoding and resizing)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (best per batch kept)")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA (forward and pipeline alike)")
    parser.add_argument("--skip-libraries", action="store_true", help="skip the torch-cam / grad-cam comparison")
    parser.add_argument("--no-objectness-stats", action="store_true",
                        help="ddt_cam without fitted per-class statistics (per-image fallback)")
    parser.add_argument("--method", default=None, help="map method of the pipeline (default: BoxParams() default)")
    parser.add_argument("--release-freed-memory", action="store_true",
                        help="leave glibc malloc at its defaults (the worker's camcore.allocator.keep_freed_memory off)")
    parser.add_argument("--loader", choices=["processes", "threads"], default=None,
                        help="how the whole-run pipeline decodes (default: the Localizer's choice for the device)")
    parser.add_argument("--box-workers", type=int, default=None, help="box worker processes (default: the Localizer's)")
    parser.add_argument("--host-only", action="store_true",
                        help="host CPU time per image (decode, resize, boxes, map encoding), forward pass excluded")
    args = parser.parse_args(argv)
    if args.host_only:
        if args.device != "cpu":
            sys.exit("--host-only measures on the CPU: pass --device cpu")
        return host_only(args)
    # As camlabel's worker processes run: freed tensor memory kept for reuse (applies to every
    # method measured here alike; --release-freed-memory measures glibc's defaults).
    kept = False if args.release_freed_memory else keep_freed_memory()

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device available")
    device = torch.device(args.device)
    torch.manual_seed(0)
    spec = ModelSpec(class_names=["raccoon", "kangaroo"], input_size=args.input_size)
    model = build_model(spec, weights="imagenet").to(device).eval()
    amp = torch.bfloat16 if (args.amp and device.type == "cuda") else None
    params = BoxParams() if args.method is None else BoxParams(method=args.method)
    files = _files(args.images)
    n = len(files)
    if params.method == "ddt_cam" and not args.no_objectness_stats:
        # As deployed: the train job fits per-class objectness statistics into the spec, and
        # infer jobs use them (without them each image's own descriptors are decomposed).
        tags = [[spec.class_names.index(f.parent.parent.name)] for f in files]
        spec.extra["objectness"] = fit_objectness(model, spec, files, tags, device=device).to_dict()
    loc = Localizer(model, spec, device=device, autocast_dtype=amp, params=params, host_threads=args.host_threads,
                    batch_size=args.batch_size, loader=args.loader, box_workers=args.box_workers)
    net = loc.model  # the network the pipeline runs (on a CPU the prepared inference copy, channels-last)
    args.batch_size = loc.batch_size  # the probe may pick a larger batch on CUDA
    print(f"device={device} torch_threads={torch.get_num_threads()} images={n} batch={args.batch_size} "
          f"input={args.input_size} amp={amp} pipeline_method={params.method} box_mode={params.mode} "
          f"objectness_stats={'objectness' in spec.extra} keep_freed_memory={kept} prepared={loc.inference_report} "
          f"variant={loc.variant.describe()} loader={loc.loader} loader_workers={loc.loader_workers} "
          f"box_workers={loc.boxes.processes}")

    # Pre-decoded, pre-resized batches for the forward-only measurements.
    chunks = [files[i : i + args.batch_size] for i in range(0, n, args.batch_size)]
    batches = [_load_batch(loc, c) for c in chunks]

    def bare_forward(i: int) -> None:  # the same network the pipeline runs, nothing else
        with torch.inference_mode(), loc._autocast():
            net(loc.normalize(batches[i][0]))

    def loaded_forward(i: int) -> None:  # the model as loaded (NCHW, BN unfolded): what a notebook runs
        with torch.inference_mode(), loc._autocast():
            model(loc.normalize(batches[i][0]).contiguous())

    def pipeline(i: int) -> None:  # decode -> resize -> forward+CAM -> boxes -> float16 maps, from the files (phased)
        batch, sizes = _load_batch(loc, chunks[i])
        _render(loc.localize_batch(batch, sizes, None, top_k=1))

    def camlabel_maps(i: int) -> None:
        with loc._autocast():
            forward_with_cams(net, loc.normalize(batches[i][0]), None, top_k=1, method="cam").maps.cpu()

    methods: dict[str, Callable[[int], None]] = {"forward": bare_forward, "loaded_forward": loaded_forward, "pipeline": pipeline,
                                                 "camlabel_maps": camlabel_maps}
    if not args.skip_libraries:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
        from torchcam.methods import CAM

        def torchcam_on(target: GapClassifier, contiguous: bool) -> Callable[[int], None]:
            def run(i: int) -> None:
                with CAM(target, target_layer=target.backbone, fc_layer=target.classifier) as extractor:
                    with torch.no_grad(), loc._autocast():
                        x = loc.normalize(batches[i][0])
                        scores = target(x.contiguous() if contiguous else x)
                    extractor(scores.argmax(1).tolist(), scores)[0].cpu()
            return run

        def gradcam_maps(i: int) -> None:
            with GradCAM(model=model, target_layers=[model.backbone]) as cam:
                x = loc.normalize(batches[i][0]).contiguous()
                with torch.no_grad():
                    top = model(x).argmax(1).tolist()
                cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in top])

        # torch-cam and grad-cam run the model as the user loaded it (they have no inference
        # preparation); "torchcam_prepared" hands torch-cam camlabel's prepared network instead.
        methods["torchcam"] = torchcam_on(model, contiguous=True)
        methods["torchcam_prepared"] = torchcam_on(net, contiguous=False)
        methods["gradcam"] = gradcam_maps

    # warm-up (allocator, kernels, thread pools); GradCAM (a backward pass, 10-50x slower than the
    # rest) is timed in the first round only
    for name, fn in methods.items():
        if name != "gradcam":
            fn(0)
    # Interleaved: in every round each method runs once on each batch, back to back; the best
    # time per (method, batch) is kept, so a burst of load on a shared machine hits all alike.
    best = {name: [float("inf")] * len(batches) for name in methods}
    for round_ in range(args.repeats):
        for i in range(len(batches)):
            for name, fn in methods.items():
                if name == "gradcam" and round_ > 0:
                    continue
                _sync(device)
                t0 = time.perf_counter()
                fn(i)
                _sync(device)
                best[name][i] = min(best[name][i], time.perf_counter() - t0)
    ips = {name: n / sum(times) for name, times in best.items()}
    labels = {
        "forward": "forward only (prepared network)",
        "loaded_forward": "forward only (model as loaded)",
        "torchcam_prepared": "torch-cam CAM on the prepared net",
        "pipeline": "camlabel pipeline (decode..maps)",
        "camlabel_maps": "camlabel forward+CAM (top-1 maps)",
        "torchcam": "torch-cam CAM (forward+maps)",
        "gradcam": "grad-cam GradCAM (fwd+bwd+maps)",
    }
    for name, value in ips.items():
        print(f"{labels[name]:34s}: {value:8.2f} images/s")
    # Whole runs over all images, alternated with whole bare-forward runs over the same batches,
    # best of --repeats each.
    t_fwd_run = t_pipe_run = float("inf")
    for _ in range(args.repeats):
        _sync(device)
        t0 = time.perf_counter()
        for i in range(len(batches)):
            bare_forward(i)
        _sync(device)
        t_fwd_run = min(t_fwd_run, time.perf_counter() - t0)
        t_pipe_run = min(t_pipe_run, run_pipeline(loc, files, args.batch_size))
    print(f"{'forward only, whole runs':34s}: {n / t_fwd_run:8.2f} images/s")
    print(f"{'pipeline, whole runs':34s}: {n / t_pipe_run:8.2f} images/s")
    print(f"prepared_vs_loaded_forward={ips['forward'] / ips['loaded_forward']:.3f}")
    print(f"pipeline_serial_vs_forward={ips['pipeline'] / ips['forward']:.3f}")
    print(f"pipeline_serial_vs_loaded_forward={ips['pipeline'] / ips['loaded_forward']:.3f}")
    if "torchcam" in ips:
        print(f"camlabel_maps_vs_torchcam={ips['camlabel_maps'] / ips['torchcam']:.3f}")
        print(f"camlabel_maps_vs_torchcam_same_net={ips['camlabel_maps'] / ips['torchcam_prepared']:.3f}")
        print(f"camlabel_maps_vs_gradcam={ips['camlabel_maps'] / ips['gradcam']:.3f}")
        print(f"pipeline_vs_torchcam_maps={ips['pipeline'] / ips['torchcam']:.3f}")
        print(f"pipeline_vs_gradcam_maps={ips['pipeline'] / ips['gradcam']:.3f}")
    print(f"pipeline_vs_forward={t_fwd_run / t_pipe_run:.3f}")
    loc.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
