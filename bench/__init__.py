"""equibench: one harness to measure equivariance, accuracy under rotation, and cost of equivariant CNNs."""

__version__ = "0.1.0"
