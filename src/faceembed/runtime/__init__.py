"""Backends (torch / ONNX Runtime / OpenVINO), batch inference over files."""
