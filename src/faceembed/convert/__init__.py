"""Bring foreign models into faceembed: read what the graph tells, take the rest from the user's flags, prove
the resulting model card by running the model, and write the model with its card (``convert.onnx_model``)."""
