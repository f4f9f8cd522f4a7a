"""Training loops: SphereFace classifiers and PFE uncertainty heads."""
