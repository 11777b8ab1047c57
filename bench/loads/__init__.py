"""The client side of each scenario, run inside ``python -m bench.load``."""
