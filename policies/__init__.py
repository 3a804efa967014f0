"""The policy engine (``engine``: packs, waivers, the report), what a check sees (``context``) and the
checks by kind of rule (``checks``). The default pack and the licence knowledge base are YAML beside them.

The public modules are named in ``__all__``; importing the package imports none of them.
"""

__all__ = ["checks", "context", "engine"]
