"""vidvec: turn videos into latent vectors.

    import vidvec
    for outcome in vidvec.extract(["videos/"], model="efficientnet_lite0", out="feats/"):
        print(outcome.source.path, outcome.status, outcome.features.shape)

The public names load lazily so that `import vidvec` (and each decode worker) stays cheap.
"""

from importlib import import_module

__version__ = "0.1.0"

_PUBLIC = {
    "extract": "extraction",
    "prepare": "extraction",
    "load_model": "weights",
    "list_models": "registry",
    "get_card": "registry",
    "SamplingSpec": "sampling",
    "read_features": "writers",
    "Store": "store",
    "Client": "client",
}
__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module 'vidvec' has no attribute {name!r}")
