"""ZSSR (Shocher, Cohen and Irani, CVPR 2018): an image-specific network trained on the LR image alone."""
from .core import ZSSR, ZSSRConfig, zssr_super_resolve

__all__ = ["ZSSR", "ZSSRConfig", "zssr_super_resolve"]
