"""Feature models, one module per family (see ``vidvec.registry.FAMILIES``).

A family's module registers its cards with ``@register_model`` and imports no torch; the network code it
builds (``base.py``, a family's ``*_net.py``, the ``pyslowfast`` port) is imported when a card's ``build`` runs.
"""
