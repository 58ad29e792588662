"""Image operations, batched NCHW torch end to end: resampling and degradations, kernels, image
files, metrics, losses, geometric augmentation and back-projection."""
