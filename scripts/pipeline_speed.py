"""Photo-pipeline speed (issue 27): the ``faceembed bench --pipeline`` table, or MTCNN's nets per runtime.

``--detector-nets``: P-Net (16 photos' 75x75 pyramid level), R-Net (300 crops of 24x24) and O-Net (35 crops of
48x48), one thread, on ONNX Runtime and OpenVINO (f32 and bf16 hints), in rounds so machine load hits every
configuration alike; the median ms per call, each one's ratio to ONNX Runtime and its largest output difference
to ONNX Runtime. This is what ``MTCNNDetector(backend="auto")`` is chosen from.

``--detector-backends``: ``MTCNNDetector.detect_many`` per backend (ort, ort+openvino, openvino; one thread) in
rounds on 160 LFW photos (all 250x250) and on the same photos resized to random sizes (200-420 px), median ms
per photo: what ``backend="auto"`` is chosen from (P-Net's input size changes with every photo size and pyramid
level, which OpenVINO's dynamic shapes pay for).

Otherwise: the whole pipeline table (:func:`faceembed.bench.pipeline.run_pipeline_bench`), the same as
``faceembed bench --pipeline --data ../shared/data --photos 1000 --threads 2 --json p.json --plot p.png``.

    python scripts/pipeline_speed.py --data ../shared/data --photos 1000 --json runs/pipeline.json \\
        --plot docs/images/pipeline_stages.png
    python scripts/pipeline_speed.py --detector-nets --json runs/mtcnn_nets.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

NETS = (("pnet", (16, 3, 75, 75)), ("rnet", (300, 3, 24, 24)), ("onet", (35, 3, 48, 48)))


def _timed(fn, seconds: float) -> float:
    fn()
    t, k = time.perf_counter(), 0
    while time.perf_counter() - t < seconds:
        fn()
        k += 1
    return (time.perf_counter() - t) / max(k, 1) * 1e3


def detector_nets(rounds: int, seconds: float) -> list[dict]:
    """Median ms per call of each MTCNN net on each runtime (module doc)."""
    import onnxruntime as ort
    import openvino as ov

    from faceembed.faces.detect import prepare_onnx
    from faceembed.models.mtcnn_weights import mtcnn_checkpoint

    paths = prepare_onnx(mtcnn_checkpoint(None))
    core, rows = ov.Core(), []
    for name, shape in NETS:
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
        sess = ort.InferenceSession(str(paths[name]), opts, providers=["CPUExecutionProvider"])
        ref = sess.run(None, {"input": x})
        runs = {"ort": lambda s=sess, x=x: s.run(None, {"input": x})}
        diffs = {"ort": 0.0}
        for hint in ("f32", "bf16"):
            compiled = core.compile_model(core.read_model(str(paths[name])), "CPU", {
                "INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": 1, "PERFORMANCE_HINT": "LATENCY"})
            req = compiled.create_infer_request()
            req.infer({0: x})
            diffs[f"openvino {hint}"] = max(float(np.abs(np.array(t.data) - r).max())
                                            for t, r in zip(req.output_tensors, ref, strict=True))
            runs[f"openvino {hint}"] = lambda r=req, x=x: r.infer({0: x})
        times: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(rounds):
            for k, fn in runs.items():
                times[k].append(_timed(fn, seconds))
        base = float(np.median(times["ort"]))
        for k in runs:
            ms = float(np.median(times[k]))
            rows.append({"net": name, "input": list(shape), "runtime": k, "ms": round(ms, 3),
                         "speedup_vs_ort": round(base / ms, 2), "max_abs_diff_vs_ort": diffs[k]})
    return rows


def detector_backends(rounds: int) -> dict:
    """Median ms per photo of MTCNN per backend, same-size and mixed-size photos (module doc)."""
    import cv2

    from faceembed.data.images import read_image_rgb
    from faceembed.faces.detect import MTCNNDetector

    lfw = Path("../shared/data/lfw/images")
    images = [read_image_rgb(p) for p in sorted(lfw.glob("*/*.jpg"))[::50][:160]]
    rng = np.random.default_rng(0)
    mixed = [cv2.resize(im, (int(s), int(s * rng.uniform(0.8, 1.25))))
             for im, s in zip(images, rng.uniform(200, 420, len(images)), strict=True)]
    dets = {be: MTCNNDetector(backend=be, threads=1) for be in ("ort", "ort+openvino", "openvino")}
    report = {}
    for name, imgs in (("lfw_250x250", images), ("mixed_sizes", mixed)):
        times: dict[str, list[float]] = {be: [] for be in dets}
        for d in dets.values():
            d.detect_many(imgs[:32])
        for _ in range(rounds):
            for be, d in dets.items():
                t = time.perf_counter()
                for i in range(0, len(imgs), 32):
                    d.detect_many(imgs[i:i + 32])
                times[be].append((time.perf_counter() - t) / len(imgs) * 1e3)
        report[name] = {be: round(float(np.median(v)), 3) for be, v in times.items()}
    return report


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--photos", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work-dir", type=Path, default=Path("runs/bench"))
    ap.add_argument("--detector-nets", action="store_true", help="time MTCNN's nets per runtime instead")
    ap.add_argument("--detector-backends", action="store_true", help="time MTCNN per backend instead")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=0.3)
    ap.add_argument("--no-peer", action="store_true", help="leave out face_recognition's pipeline")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--plot", type=Path)
    args = ap.parse_args(argv)
    if args.detector_nets:
        report: object = detector_nets(args.rounds, args.seconds)
        for row in report:  # type: ignore[attr-defined]
            print(f"{row['net']} {row['runtime']:14s} {row['ms']:8.3f} ms  x{row['speedup_vs_ort']:.2f}  "
                  f"max diff {row['max_abs_diff_vs_ort']:.2e}", flush=True)
    elif args.detector_backends:
        report = detector_backends(args.rounds)
        print(json.dumps(report, indent=1))
    else:
        from faceembed.bench.pipeline import run_pipeline_bench

        report = run_pipeline_bench(args.data, args.photos, args.threads, args.work_dir, plot=args.plot,
                                    progress=False, peer=not args.no_peer)
        print(json.dumps(report, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
