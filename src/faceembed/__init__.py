"""faceembed: train, export, run offline and evaluate deep face-embedding models."""

__version__ = "0.1.0"
