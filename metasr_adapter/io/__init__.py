"""Files: weights (PyTorch, numpy, TensorFlow checkpoints without TensorFlow), the bundled weights
registry, atomic and checksummed writes."""
