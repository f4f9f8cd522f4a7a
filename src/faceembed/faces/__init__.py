"""Faces from photos: MTCNN detection, 5-point alignment, embedding of photo folders."""
