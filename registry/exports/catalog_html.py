"""The catalog site's pages: every dataset version, every registered model, and an offline search.

    pages = catalog_pages(CatalogData(versions=[...], models=[...], ...))   # {relative path: text}

Pure rendering of what ``registry.lineage.catalog_site`` gathered (it also writes the search index and
the reports). Every value from a record is escaped: in text and attributes with ``e``, in the JSON the
search page embeds with ``script_json`` (``<``, ``>`` and ``&`` as ``\\u00XX``, so ``</script>`` in a
prompt cannot close the element), and the search script sets ``textContent``, never ``innerHTML``.
Nothing is fetched from anywhere but the site's own folder: the stylesheet and the script are files
beside the pages, and a Content-Security-Policy on every page allows nothing else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from registry.exports.html_parts import e, table
from registry.records.lineage import ModelRow, WithdrawalState
from registry.records.release import Release

# Only files of the site itself: no network, no inline script (data: for nothing but images).
CSP = (
    "default-src 'none'; style-src 'self' file:; script-src 'self' file:; img-src 'self' file: data:; "
    "connect-src 'none'; form-action 'none'; base-uri 'none'"
)
STATUSES = ("final", "candidate", "withdrawn", "invalid", "untrusted", "unchecked")


@dataclass
class SignerRow:
    """One signature over a release: who, in which role(s), with which key, and whether it is trusted."""

    name: str
    roles: list[str]
    keyid: str
    time: str
    trusted: bool
    why_untrusted: str | None = None


@dataclass
class VersionEntry:
    """A released version as the catalog shows it."""

    name: str
    version: str
    status: str  # one of STATUSES
    status_text: str  # as `synthreg list` words it
    record: Release | None  # None: release.json cannot be read (then status is invalid)
    policy: tuple[str, str]  # the HTML report banner's class and words (``worst_status``)
    withdrawal: WithdrawalState | None = None
    signers: list[SignerRow] = field(default_factory=list)
    approvals: str = ""  # "approved by 1 of 2 (releaser 1/1, approver 0/1)"
    report: str | None = None  # the report's path in the site, or None (then ``report_note`` says why)
    report_note: str = ""
    indexed: str = ""  # why its samples are not searchable ("" when they are)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass
class CatalogData:
    versions: list[VersionEntry]
    models: list[ModelRow]
    models_note: str  # "" when the store was read; else why no model is listed
    made: str  # UTC time the site was made
    search_meta: dict[str, Any]  # what the search script needs (shard layout, releases, generators)


def dataset_page_path(name: str) -> str:
    return f"datasets/{name}.html"


def script_json(value: Any) -> str:
    """JSON safe inside a ``<script>`` element or a ``.js`` file: ASCII only, with ``<``, ``>`` and
    ``&`` escaped, so no string in it can end the element or open a comment."""
    text = json.dumps(value, ensure_ascii=True, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _page(title: str, root: str, body: str, script: str = "") -> str:
    nav = (
        f'<nav><a href="{root}index.html">Datasets</a> · <a href="{root}models.html">Models</a> · '
        f'<a href="{root}search.html">Search</a></nav>'
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{e(CSP)}">'
        f'<title>{e(title)}</title><link rel="stylesheet" href="{root}assets/catalog.css"></head>'
        f"<body>{nav}<h1>{e(title)}</h1>{body}{script}</body></html>\n"
    )


def _status(v: VersionEntry) -> str:
    return f'<span class="status st-{v.status}" data-status="{v.status}">{e(v.status)}</span>'


def _policy(v: VersionEntry) -> str:
    cls, words = v.policy
    return f'<span class="policy pol-{e(cls)}" data-policy="{e(cls)}">{e(words)}</span>'


def _index(d: CatalogData) -> str:
    by_name: dict[str, list[VersionEntry]] = {}
    for v in d.versions:
        by_name.setdefault(v.name, []).append(v)
    rows = [
        [
            f'<a href="{e(dataset_page_path(name))}">{e(name)}</a>',
            " ".join(f"{e(v.version)} {_status(v)}" for v in vs),
            _policy(vs[-1]),
        ]
        for name, vs in sorted(by_name.items())
    ]
    body = (
        table(["dataset", "versions and status", "policy of the latest version"], rows)
        if rows
        else "<p class='note'>No released dataset in this workspace (see <code>synthreg release</code>).</p>"
    )
    counts = ", ".join(f"{sum(v.status == s for v in d.versions)} {s}" for s in STATUSES)
    intro = (
        f"<p class='note'>synthreg catalog, made {e(d.made)}: {len(by_name)} dataset(s), "
        f"{len(d.versions)} version(s) ({e(counts)}), {len(d.models)} registered model version(s).</p>"
    )
    return _page("Catalog", "", intro + body)


def _signers(v: VersionEntry) -> str:
    rows = [
        [
            e(s.name),
            e("+".join(s.roles)),
            f"<code>{e(s.keyid)}</code>",
            e(s.time),
            "trusted" if s.trusted else f"<strong>NOT TRUSTED</strong>: {e(s.why_untrusted)}",
        ]
        for s in v.signers
    ]
    if not rows:
        return "<p class='note'>No signature could be read.</p>"
    return f"<p>{e(v.approvals)}</p>" + table(["who", "role", "key", "signed (UTC)", "trust"], rows)


def _version(v: VersionEntry) -> str:
    r = v.record
    parts = [f'<section id="v-{e(v.version)}"><h2>{e(v.ref)} {_status(v)}</h2>']
    parts.append(f"<p>Status: {e(v.status_text)}</p>")
    if v.withdrawal:
        w = v.withdrawal
        trusted = "" if w.trusted else f" (untrusted record: {e(w.why_untrusted)})"
        parts.append(
            f"<p class='withdrawn'>WITHDRAWN on {e(w.day)} by {e(w.actor)}: {e(w.reason)}{trusted}</p>"
        )
    parts.append(f"<p>Policy: {_policy(v)}</p>")
    if r is not None:
        facts = [
            [
                e(f"{r.created_at:%Y-%m-%d %H:%M} UTC"),
                e(r.actor),
                e(f"{r.counts.accepted} accepted / {r.counts.total}"),
                e(r.dataset_licence),
                e(", ".join(f"{g.name} ({g.weights_digest[:12]})" for g in r.generators)),
                f"<code>{e(r.manifest_sha256)}</code>",
            ]
        ]
        parts.append(table(["released", "by", "images", "licence", "generators", "manifest sha256"], facts))
    parts.append("<h3>Approvals</h3>" + _signers(v))
    if v.report:
        parts.append(f'<p><a class="report" href="../{e(v.report)}">HTML audit report of {e(v.ref)}</a>')
        parts.append(f" <span class='note'>{e(v.report_note)}</span></p>" if v.report_note else "</p>")
    else:
        parts.append(f"<p class='note'>No HTML report: {e(v.report_note)}</p>")
    if v.indexed:
        parts.append(f"<p class='note'>Not searchable: {e(v.indexed)}</p>")
    parts.append("</section>")
    return "".join(parts)


def _dataset(name: str, vs: list[VersionEntry]) -> str:
    return _page(name, "../", "".join(_version(v) for v in reversed(vs)))


def _models(d: CatalogData, released: set[str]) -> str:
    def num(x: float | None) -> str:
        return "" if x is None else f"{x:.4g}"

    def data(m: ModelRow) -> str:
        if m.dataset is None:
            return "<span class='note'>no synthreg dataset logged</span>"
        name = m.dataset.partition("@")[0]
        text = e(m.dataset) + (" <strong>UNRELEASED</strong>" if m.unreleased else "")
        if m.dataset in released:
            version = m.dataset.partition("@")[2]
            text = f'<a href="{e(dataset_page_path(name))}#v-{e(version)}">{text}</a>'
        return text + (f"<br><strong>WITHDRAWN DATA</strong>: {e(m.withdrawn)}" if m.withdrawn else "")

    rows = [
        [
            e(f"{m.name}/{m.version}"),
            e(", ".join(m.aliases)),
            data(m),
            e(num(m.synthetic_share)),
            e(num(m.accuracy)),
            f"<code>{e(m.run_id)}</code>",
        ]
        for m in d.models
    ]
    if d.models_note:
        body = f"<p class='note' id='models-note'>{e(d.models_note)}</p>"
    elif not rows:
        body = "<p class='note' id='models-note'>The MLflow store holds no registered model.</p>"
    else:
        body = table(["model", "aliases", "dataset version", "synthetic share", "accuracy", "run"], rows)
    return _page("Models", "", body)


def _search(d: CatalogData) -> str:
    body = (
        "<form id='search' autocomplete='off'><select id='kind' aria-label='search by'>"
        "<option value='sample'>sample id</option><option value='digest'>generator digest</option>"
        "<option value='prompt'>prompt text</option></select> "
        "<input id='q' size='60' aria-label='query'> <button type='submit'>Search</button></form>"
        "<p id='search-status' class='note'></p><table id='results'></table>"
        "<p class='note'>Sample ids match exactly; a generator digest by its first 6 or more hex "
        "characters; prompt text as a case-insensitive substring. The index is files of this site, "
        "loaded as they are needed: nothing leaves this computer.</p>"
    )
    meta = f'<script type="application/json" id="catalog-meta">{script_json(d.search_meta)}</script>'
    return _page("Search", "", body, meta + '<script src="assets/search.js"></script>')


def catalog_pages(d: CatalogData) -> dict[str, str]:
    """Every page and asset of the site, by path relative to its root."""
    by_name: dict[str, list[VersionEntry]] = {}
    for v in d.versions:
        by_name.setdefault(v.name, []).append(v)
    pages = {
        "index.html": _index(d),
        "models.html": _models(d, {v.ref for v in d.versions}),
        "search.html": _search(d),
        "assets/catalog.css": CSS,
        "assets/search.js": SEARCH_JS,
    }
    pages |= {dataset_page_path(name): _dataset(name, vs) for name, vs in by_name.items()}
    return pages


CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:72rem;padding:0 1rem;color:#222}
nav{margin-bottom:1rem} table{border-collapse:collapse;width:100%;margin:.5rem 0;font-size:.9rem}
th,td{border:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top;white-space:pre-wrap}
th{background:#f4f4f4} code{word-break:break-all;font-size:.85em} .note{color:#555;font-style:italic}
.status{padding:0 .3rem;border-radius:.2rem;font-size:.85em}.st-final{background:#e3f4e8}
.st-candidate,.st-unchecked{background:#fff4e0}.st-withdrawn,.st-invalid,.st-untrusted{background:#fde7e7}
.pol-failed,.pol-withdrawn,.withdrawn{color:#c62828;font-weight:600}.pol-waived,.pol-warned{color:#ef6c00}
.pol-notrun{color:#6a1b9a}.pol-passed{color:#2e7d32}
"""

# The search: an index of files beside the page, read by adding <script src> elements (fetch() of a
# file: URL is refused by browsers, a script element is not). Sample ids are sharded by the low bits of
# their 32-bit FNV-1a hash (the same function as registry.lineage.catalog_site.fnv1a), so an exact id
# reads one shard; prompts are read chunk by chunk until enough rows are found. Every value is put into
# the page with textContent.
SEARCH_JS = r"""
"use strict";
(function () {
  const meta = JSON.parse(document.getElementById("catalog-meta").textContent);
  const loaded = {}, waiting = {};
  const LIMIT = 200;
  window.synthregShard = function (name, rows) {
    loaded[name] = rows;
    if (waiting[name]) { waiting[name].resolve(rows); delete waiting[name]; }
  };
  function load(name) {
    if (name in loaded) return Promise.resolve(loaded[name]);
    if (waiting[name]) return waiting[name].promise;
    let resolve, reject;
    const promise = new Promise((ok, no) => { resolve = ok; reject = no; });
    waiting[name] = { promise, resolve };
    const s = document.createElement("script");
    s.src = "index/" + name + ".js";
    s.onerror = () => { delete waiting[name]; reject(new Error("index/" + name + ".js cannot be read")); };
    document.head.appendChild(s);
    return promise;
  }
  function fnv1a(text) {
    let h = 0x811c9dc5;
    for (const b of new TextEncoder().encode(text)) h = Math.imul(h ^ b, 0x01000193) >>> 0;
    return h;
  }
  function sampleShard(id) {
    const k = meta.sample_hex;
    return "samples/" + (fnv1a(id) & ((1 << (4 * k)) - 1)).toString(16).padStart(k, "0");
  }
  function promptChunk(pid) {
    return "prompts/" + String(Math.floor(pid / meta.prompt_chunk)).padStart(5, "0");
  }
  async function promptText(pid) {
    const rows = await load(promptChunk(pid));
    return rows[pid % meta.prompt_chunk][0];
  }
  function cell(tr, value, href) {
    const td = document.createElement("td");
    if (href) {
      const a = document.createElement("a");
      a.href = href;
      a.textContent = value;
      td.appendChild(a);
    } else {
      td.textContent = value == null ? "" : String(value);
    }
    tr.appendChild(td);
  }
  function release(i) {
    const r = meta.releases[i];
    return { ref: r[0], page: r[1], status: r[2] };
  }
  async function bySample(q) {
    if (meta.sample_hex === 0) return [];
    const rows = (await load(sampleShard(q))).filter((r) => r[0] === q);
    const out = [];
    for (const r of rows) {
      const rel = release(r[1]), g = meta.generators[r[4]];
      out.push([[r[0]], [rel.ref, rel.page], [rel.status], [r[2]], [r[3]], [g[0] + " " + g[1].slice(0, 12)],
                [await promptText(r[5])], [r[6]]]);
    }
    return out;
  }
  function byDigest(q) {
    if (!/^[0-9a-f]{6,64}$/.test(q)) {
      throw new Error("give 6 to 64 hex characters of a generator's weights digest");
    }
    const out = [];
    for (const g of meta.generators) {
      if (!g[1].startsWith(q)) continue;
      for (const [i, n] of g[3]) {
        const rel = release(i);
        out.push([[g[0]], [g[1]], [g[2]], [rel.ref, rel.page], [rel.status], [n]]);
      }
    }
    return out;
  }
  async function byPrompt(q) {
    const needle = q.toLowerCase(), out = [];
    for (let c = 0; c < meta.prompt_chunks && out.length < LIMIT; c++) {
      const rows = await load("prompts/" + String(c).padStart(5, "0"));
      for (const [text, uses] of rows) {
        if (!text.toLowerCase().includes(needle)) continue;
        for (const [i, n, examples] of uses) {
          const rel = release(i);
          out.push([[text], [rel.ref, rel.page], [rel.status], [n], [examples.join(" ")]]);
        }
      }
    }
    return out.slice(0, LIMIT);
  }
  const HEADS = {
    sample: ["sample id", "release", "status", "decision", "identity", "generator", "prompt", "reason"],
    digest: ["generator", "weights sha256", "licence", "release", "status", "images"],
    prompt: ["prompt", "release", "status", "images", "first sample ids"],
  };
  async function run(kind, raw) {
    const status = document.getElementById("search-status"), table = document.getElementById("results");
    table.replaceChildren();
    const q = kind === "prompt" ? raw : raw.trim();
    if (!q) { status.textContent = "type a query"; return; }
    status.textContent = "searching...";
    try {
      const rows = kind === "sample" ? await bySample(q)
        : kind === "digest" ? byDigest(q.toLowerCase()) : await byPrompt(q);
      const head = document.createElement("tr");
      for (const h of HEADS[kind]) {
        const th = document.createElement("th");
        th.textContent = h;
        head.appendChild(th);
      }
      table.appendChild(head);
      for (const r of rows) {
        const tr = document.createElement("tr");
        for (const [value, href] of r) cell(tr, value, href);
        table.appendChild(tr);
      }
      const more = rows.length >= LIMIT ? " (the first " + LIMIT + ")" : "";
      status.textContent = rows.length ? rows.length + " row(s)" + more : "no match";
    } catch (err) {
      status.textContent = String(err.message || err);
    }
  }
  document.getElementById("search").addEventListener("submit", (ev) => {
    ev.preventDefault();
    run(document.getElementById("kind").value, document.getElementById("q").value);
  });
  const nots = meta.not_indexed.map((n) => n[0] + " (" + n[1] + ")");
  if (nots.length) {
    document.getElementById("search-status").textContent = "not searchable: " + nots.join("; ");
  }
})();
"""

__all__ = [
    "CSP",
    "STATUSES",
    "CatalogData",
    "SignerRow",
    "VersionEntry",
    "catalog_pages",
    "dataset_page_path",
    "script_json",
]
