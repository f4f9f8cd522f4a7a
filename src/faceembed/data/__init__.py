"""Data readers and writers: MNIST, LFW, alignment, tensor files, image folders."""
