"""Exports of a release for people and machines: dataset card, Croissant JSON-LD, W3C PROV.

Pure functions of the release record (and the policy report it was gated on); the caller writes
the files (``registry.release`` puts them beside ``release.json``).
"""

from registry.exports.card import render_card
from registry.exports.croissant import croissant_jsonld
from registry.exports.policy_md import render_markdown
from registry.exports.prov import prov_document, prov_json
from registry.exports.report_html import dataset_html, model_html, release_html

__all__ = [
    "croissant_jsonld",
    "dataset_html",
    "model_html",
    "prov_document",
    "prov_json",
    "release_html",
    "render_card",
    "render_markdown",
]
