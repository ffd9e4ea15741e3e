"""fabriclab: a network fabric emulator and congestion-control testbed for AI training clusters.

The Python API (see docs/api.md)::

    import fabriclab
    r = fabriclab.run("experiments/incast.yaml", reduced=True)   # a Result
    r.flows, r.ports, r.hosts, r.collectives, r.timeseries         # pandas DataFrames
    fabriclab.compare(...), fabriclab.sweep(...), fabriclab.load(...), fabriclab.Result.load(dir)

The API is imported on first use, so that ``import fabriclab`` (and the CLI) stays quick.
"""

__version__ = "0.1.0"

from . import native as _native  # noqa: E402 - the compiled simulator core, if current

_native.install()

_API = ("load", "run", "compare", "sweep", "Result", "Comparison", "Sweep")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'fabriclab' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_API))
