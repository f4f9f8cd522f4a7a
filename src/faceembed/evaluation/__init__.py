"""Classification, verification and identification metrics."""
