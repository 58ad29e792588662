"""``metasr train``: recipes, the resumable pretrain → meta-train → evaluate run, and its plots."""
