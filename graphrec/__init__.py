"""graphrec: graph neural network homepage personalisation for e-commerce."""

__version__ = "0.1.0"
