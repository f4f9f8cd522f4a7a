"""Edits of a QDQ-quantized ONNX graph: keep residual paths in float, and put chosen layers back to float.

ONNX Runtime's quantizer puts one QuantizeLinear -> DequantizeLinear pair on a tensor and feeds *every*
consumer from it. In a residual network the tensor entering a block's first convolution is also the skip
input of the block's Add, so the identity path gets rounded to int8 in every block and the errors add up
along the whole network. ``float_skip_paths`` feeds the consumers that are not quantized layers from the float
tensor again: convolutions still read int8, the residual stream stays exact.
"""

from __future__ import annotations

import copy

import onnx

LAYER_OPS = ("Conv", "Gemm", "MatMul")


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output}


def _is_qdq_activation(tensor: str, producer: dict[str, onnx.NodeProto]) -> str | None:
    """The float tensor behind ``tensor`` when it is DequantizeLinear(QuantizeLinear(float)), else None."""
    dq = producer.get(tensor)
    if dq is None or dq.op_type != "DequantizeLinear":
        return None
    q = producer.get(dq.input[0])
    return q.input[0] if q is not None and q.op_type == "QuantizeLinear" else None


def quantized_layers(model: onnx.ModelProto) -> list[str]:
    """Names of the Conv / Gemm / MatMul nodes that read an int8 (QDQ) activation, in graph order."""
    producer = _producers(model.graph)
    return [n.name for n in model.graph.node
            if n.op_type in LAYER_OPS and n.input and _is_qdq_activation(n.input[0], producer)]


def float_skip_paths(model: onnx.ModelProto) -> int:
    """Rewire, in place, every non-layer consumer of a QDQ activation to the float tensor; returns how many."""
    producer = _producers(model.graph)
    changed = 0
    for node in model.graph.node:
        if node.op_type in LAYER_OPS or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for i, tensor in enumerate(node.input):
            source = _is_qdq_activation(tensor, producer)
            if source is not None:
                node.input[i] = source
                changed += 1
    prune(model)
    return changed


def restore_float(quantized: onnx.ModelProto, float_model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of ``quantized`` whose layers ``names`` read their float inputs and weights again (taken from
    ``float_model``, the graph that was quantized: node and tensor names are shared)."""
    model = copy.deepcopy(quantized)
    originals = {n.name: n for n in float_model.graph.node if n.name in names}
    float_inits = {t.name: t for t in float_model.graph.initializer}
    # A tensor may still be defined: ONNX Runtime names a dequantized bias after the float one it replaces.
    have = {t.name for t in model.graph.initializer} | {o for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.name not in originals:
            continue
        del node.input[:]
        node.input.extend(originals[node.name].input)
        for tensor in node.input:
            if tensor in float_inits and tensor not in have:
                model.graph.initializer.append(float_inits[tensor])
                have.add(tensor)
    prune(model)
    return model


def prune(model: onnx.ModelProto) -> None:
    """Drop, in place, nodes whose outputs nothing reads and initializers no node reads."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    while True:
        used = outputs | {t for n in graph.node for t in n.input}
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    used = {t for n in graph.node for t in n.input} | outputs
    for init in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(init)
