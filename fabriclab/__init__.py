"""fabriclab: a network fabric emulator and congestion-control testbed for AI training clusters."""

__version__ = "0.1.0"
