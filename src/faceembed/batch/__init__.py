"""Tensor files in, tensor files out: ``tobin`` writes model inputs, ``infer`` runs them, ``verify`` scores."""
