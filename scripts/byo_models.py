"""The foreign models of README's "Bring your own model", made here so the walkthrough can be rerun:

  python scripts/byo_models.py insightface mfn.pt insightface.src.onnx   # MobileFaceNet weights, insightface-style
  python scripts/byo_models.py tf-graph mnist_net.pb                     # a TensorFlow frozen graph (random weights)
  python scripts/byo_models.py tf-diff mnist_net.pb mnist_bins mnist_out # max |faceembed infer - TensorFlow|

insightface-style: NCHW [1, 3, 112, 96], fixed batch 1, BGR pixels in, (x - 127.5) / 128 inside the graph,
output 'output0', exported by PyTorch's TorchScript exporter as an arbitrary tool would. The TensorFlow graph:
input 'input_x' [-1, 28, 28, 1], output 'output:0' (10 logits), the reference workflow's conventions."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np


def insightface(ckpt: Path, out: Path) -> None:
    import torch
    from torch import nn

    from faceembed.models.checkpoint import load_checkpoint

    class Insightface(nn.Module):
        def __init__(self, model: nn.Module):
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # [1, 3, 112, 96] BGR pixels
            x = (x.flip(1) - 127.5) / 128.0
            return self.model(x)[0].reshape(1, 128)  # a Reshape to a constant: the graph runs at batch 1 only

    net = Insightface(load_checkpoint(ckpt)[0].eval()).eval()
    torch.onnx.export(net, (torch.zeros(1, 3, 112, 96),), str(out), input_names=["input.1"],
                      output_names=["output0"], opset_version=17, dynamo=False)


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    return tf


def tf_graph(out: Path) -> None:
    tf = _tf()
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    rng = np.random.default_rng(0)

    def var(*shape: int, std: float):
        return tf.Variable(rng.normal(0.0, std, shape).astype(np.float32))

    class Net(tf.Module):
        def __init__(self):
            super().__init__()
            self.w1, self.b1 = var(3, 3, 1, 8, std=0.3), var(8, std=0.1)
            self.w2, self.b2 = var(3, 3, 8, 16, std=0.15), var(16, std=0.1)
            self.w3, self.b3 = var(14 * 14 * 16, 10, std=0.02), var(10, std=0.1)

        @tf.function(input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32, name="input_x")])
        def __call__(self, x):
            y = tf.nn.relu(tf.nn.conv2d(x, self.w1, 1, "SAME") + self.b1)
            y = tf.nn.max_pool2d(y, 2, 2, "VALID")
            y = tf.nn.relu(tf.nn.conv2d(y, self.w2, 1, "SAME") + self.b2)
            return tf.identity(tf.matmul(tf.reshape(y, [-1, 14 * 14 * 16]), self.w3) + self.b3, name="output")

    frozen = convert_variables_to_constants_v2(Net().__call__.get_concrete_function())
    out.write_bytes(frozen.graph.as_graph_def().SerializeToString())


def tf_diff(pb: Path, tensors: Path, outputs: Path) -> None:
    tf = _tf()
    gd = tf.compat.v1.GraphDef()
    gd.ParseFromString(pb.read_bytes())
    run = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(gd, name=""), []).prune("input_x:0",
                                                                                                   "output:0")
    manifest = json.loads((tensors / "manifest.json").read_text())
    worst, rows, agree = 0.0, 0, 0
    for f in manifest["files"]:
        x = np.fromfile(tensors / f["name"], "<f4").reshape(f["count"], 28, 28, 1)
        ref = run(tf.constant(x)).numpy()
        got = np.fromfile(outputs / f["name"].replace(".bin", "_output_0.bin"), "<f4").reshape(ref.shape)
        worst = max(worst, float(np.abs(got - ref).max()))
        rows += len(x)
        agree += int((got.argmax(1) == ref.argmax(1)).sum())
    print(f"{rows} digits, {len(manifest['files'])} files: max |faceembed - TensorFlow| = {worst:.3g}, "
          f"top-1 agreement {agree}/{rows}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    a = sub.add_parser("insightface")
    a.add_argument("ckpt", type=Path)
    a.add_argument("out", type=Path)
    b = sub.add_parser("tf-graph")
    b.add_argument("out", type=Path)
    c = sub.add_parser("tf-diff")
    for name in ("pb", "tensors", "outputs"):
        c.add_argument(name, type=Path)
    args = ap.parse_args()
    if args.what == "insightface":
        insightface(args.ckpt, args.out)
    elif args.what == "tf-graph":
        tf_graph(args.out)
    else:
        tf_diff(args.pb, args.tensors, args.outputs)


if __name__ == "__main__":
    main()
