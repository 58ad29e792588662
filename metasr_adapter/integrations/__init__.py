"""Optional integrations with other libraries' networks (imported only when used): BasicSR architectures and
spandrel's community checkpoints as networks MetaSR can wrap. They use nothing else of this package; the
adapters' registry and ``io.pretrained`` build on them."""
