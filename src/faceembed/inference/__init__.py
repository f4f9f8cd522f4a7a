"""Backends (PyTorch, ONNX Runtime, OpenVINO), ``--backend auto`` and timing: a model file in, arrays out."""
