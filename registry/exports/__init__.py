"""Exports of a release for people and machines: dataset card, Croissant JSON-LD, W3C PROV.

Pure functions of the release record (and the policy report it was gated on); the caller writes
the files (``registry.releases.publish`` puts them beside ``release.json``).
"""

from registry.exports.card import render_card
from registry.exports.croissant import croissant_jsonld
from registry.exports.policy_md import render_markdown
from registry.exports.prov import prov_document, prov_json
from registry.exports.report_html import ReportData, dataset_page, model_page

__all__ = [
    "ReportData",
    "croissant_jsonld",
    "dataset_page",
    "model_page",
    "prov_document",
    "prov_json",
    "render_card",
    "render_markdown",
]
