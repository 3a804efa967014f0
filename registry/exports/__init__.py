"""Exports of a release for people and machines: dataset card, Croissant JSON-LD, W3C PROV.

Pure functions of the release record (and the policy report it was gated on); the caller writes
the files (``registry.release`` puts them beside ``release.json``).
"""

from registry.exports.card import render_card
from registry.exports.croissant import croissant_jsonld
from registry.exports.prov import prov_document, prov_json

__all__ = ["croissant_jsonld", "prov_document", "prov_json", "render_card"]
