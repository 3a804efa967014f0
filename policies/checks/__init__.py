"""One module per kind of rule. Each check takes (rule, context) and returns an Outcome."""

__all__ = ["licence", "prompt", "provenance", "quality", "representation"]
