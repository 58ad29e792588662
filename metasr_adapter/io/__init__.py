"""Files: weights (PyTorch, numpy, TensorFlow checkpoints without TensorFlow), and the bundled weights
registry. Atomic and checksummed writes, which every layer uses, are :mod:`metasr_adapter.atomic`."""
