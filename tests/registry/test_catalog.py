"""The catalog site (`synthreg catalog`, issue 23): every version with its status, approvals and policy,
the registered models, the offline search index, atomic writing; then the site in Chromium: navigation,
search, no network request at all, and hostile values (a prompt, signer names, a withdrawal reason, a
model name) shown as text and never run.

One workspace for the module: digits generated with a hostile prompt template and released three times
under a team trust root whose releaser and approver have hostile names: 1.0.0 final then withdrawn,
1.1.0 final, 1.2.0 a candidate.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from registry.cli import app
from registry.core.errors import WorkspaceError
from registry.downstream import tracking
from registry.lineage import catalog_site
from registry.lineage.catalog_site import MARKER, fnv1a, sample_hex, write_catalog
from registry.releases.approve import approve
from registry.releases.release import release
from registry.releases.withdraw import withdraw
from registry.trust.signing import keygen
from tests.conftest import TrustSetup
from tests.registry.conftest import build_base, clone
from tests.registry.test_report_browser import ARGS, CHROMIUM
from tests.registry.test_trust import _entry, write_trust

PROMPT = 'a digit {identity} </script><img src=x onerror="window.__pwned=1"> \'q\' "dq"\nline2 {stroke}'
RELEASER = 'Alice <img src=x onerror="window.__pwned=2">\'"'
APPROVER = "Bob</script><script>window.__pwned=5</script>"
REASON = 'consent revoked </script><img src=x onerror="window.__pwned=3">'
MODEL = "clf <img src=x onerror=window.__pwned=4> \"'"
RAW = ("<img src=x", "<script>window", "</script><img")  # markup that must never reach a page unescaped
runner = CliRunner()
expect: Any = None  # playwright.sync_api.expect, once the browser fixture found Playwright


@pytest.fixture(scope="module")
def team_ws(tmp_path_factory: pytest.TempPathFactory, solo_trust: TrustSetup) -> Iterator[Path]:
    top = tmp_path_factory.mktemp("catalog")
    built = build_base(top, solo_trust, recipe_extra={"prompt_templates": [PROMPT]})
    scratch = top / "scratch.yaml"
    for who, file, roles in ((RELEASER, "alice.pem", ["releaser"]), (APPROVER, "bob.pem", ["approver"])):
        keygen(top / "pub", top / file, name=who, roles=roles, trust=scratch)
    keys = yaml.safe_load(scratch.read_text())["keys"]
    solo = _entry(solo_trust.trust, solo_trust.keyid) | {"roles": ["approver"]}  # it signed the waivers
    team = write_trust(top / "team.yaml", [*keys, solo], approver=1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SYNTHREG_TRUST", str(team))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        ws = built.ws
        for version in ("1.0.0", "1.1.0", "1.2.0"):
            release("digits", version, ws, key=top / "alice.pem")
            if version != "1.2.0":
                approve(ws, f"digits@{version}", key=top / "bob.pem")
        withdraw(ws, "digits@1.0.0", REASON, "Auditor", key=top / "bob.pem")
        yield ws


@pytest.fixture(scope="module")
def site(team_ws: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site") / "catalog"
    s = write_catalog(team_ws, out)
    assert (s.datasets, s.versions, s.models, s.indexed_rows, s.not_indexed) == (1, 3, 0, 36, [])
    return out


def pages(site: Path) -> dict[str, str]:
    return {p.relative_to(site).as_posix(): p.read_text() for p in site.rglob("*.html")}


def shard_rows(site: Path, sample_id: str) -> list[list[Any]]:
    import json

    meta = json.loads((site / "search.html").read_text().split('id="catalog-meta">')[1].split("</script>")[0])
    return shard_rows_in(site, meta, sample_id)


# --- the pages -------------------------------------------------------------------------------------------


def test_every_version_has_its_status_approvals_policy_and_report(site: Path) -> None:
    page = pages(site)["datasets/digits.html"]
    for version, status in (("1.0.0", "withdrawn"), ("1.1.0", "final"), ("1.2.0", "candidate")):
        section = page.split(f'<section id="v-{version}">')[1].split("</section>")[0]
        assert f'data-status="{status}"' in section
        assert f'href="../reports/digits/{version}.html"' in section
        assert (site / "reports" / "digits" / f"{version}.html").is_file()
        assert "Alice &lt;img src=x onerror=&quot;window.__pwned=2&quot;&gt;&#x27;&quot;" in section
        assert ("Bob&lt;/script&gt;" in section) == (status != "candidate")  # the approver signed 2
    assert 'data-policy="withdrawn"' in page and page.count('data-policy="waived"') == 2
    assert "approved by 1 of 2 (releaser 1/1, approver 0/1)" in page
    assert "consent revoked &lt;/script&gt;&lt;img src=x" in page
    index = pages(site)["index.html"]
    assert '<a href="datasets/digits.html">digits</a>' in index
    assert "1 final, 1 candidate, 1 withdrawn, 0 invalid, 0 untrusted" in index
    assert (site / MARKER).is_file()


def test_no_page_holds_hostile_markup_or_an_outside_url(site: Path) -> None:
    for path, text in pages(site).items():
        for raw in RAW:
            assert raw not in text, path
        for tag, url in re.findall(r'<(\w+)[^>]*? (?:src|href)="([^"]*)"', text):  # the site's own files
            if path.startswith("reports/") and tag == "a" and url.startswith("https://"):
                continue  # a report cites licence texts (policies/licenses.yaml): links, never loaded
            assert not re.match(r"[a-z]+:|//|/", url) or url.startswith("data:image/png;base64,"), (path, url)
    script = (site / "assets" / "search.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "Function("):
        assert sink not in script  # values reach the page through textContent only
    search = pages(site)["search.html"]
    assert search.count("</script>") == 2  # the meta JSON and the script element: nothing broke out
    assert (
        "\\u003c/script\\u003e\\u003cimg" in search
        or "\\u003c/script\\u003e" in (site / "index" / "prompts" / "00000.js").read_text()
    )


def test_models_page_says_when_no_store_is_configured(site: Path) -> None:
    assert "No MLflow store is configured" in pages(site)["models.html"]


def test_models_page_lists_models_with_their_dataset_versions(
    team_ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    c = tracking.client(team_ws)
    exp = c.create_experiment("catalog", artifact_location=(tmp_path / "artifacts").as_uri())
    run = c.create_run(exp, tags={tracking.TAG_DATASET: "digits@1.1.0", tracking.TAG_SHARE: "0.5"})
    c.set_terminated(run.info.run_id)
    c.create_registered_model(MODEL)
    c.create_model_version(MODEL, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    s = write_catalog(team_ws, tmp_path / "site")
    assert (s.models, s.models_note) == (1, "")
    page = (tmp_path / "site" / "models.html").read_text()
    assert "clf &lt;img src=x onerror=window.__pwned=4&gt; &quot;&#x27;/1" in page
    assert '<a href="datasets/digits.html#v-1.1.0">digits@1.1.0</a>' in page
    assert not any(raw in page for raw in RAW)


def test_models_page_says_when_the_store_cannot_be_reached(
    team_ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # discard port: nothing listens
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setattr(catalog_site, "_reports", lambda ws, site, versions: None)  # they ask MLflow too
    s = write_catalog(team_ws, tmp_path / "site")
    assert s.models == 0 and s.models_note.startswith("The MLflow store http://127.0.0.1:9 could not be read")
    assert "could not be read" in (tmp_path / "site" / "models.html").read_text()


# --- the search index ----------------------------------------------------------------------------------


def test_fnv1a_and_shard_sizes() -> None:
    assert (fnv1a(""), fnv1a("a"), fnv1a("foobar")) == (0x811C9DC5, 0xE40C292C, 0xBF9CF968)  # FNV vectors
    assert [sample_hex(n) for n in (0, 1, 65_536, 65_537, 1_000_000, 1_048_577)] == [0, 1, 1, 2, 2, 3]


def test_every_sample_is_in_its_shard_once_per_release(site: Path, team_ws: Path) -> None:
    import duckdb

    manifest = team_ws / "releases/digits/1.1.0/data/manifest.parquet"
    ids = [r[0] for r in duckdb.sql(f"SELECT sample_id FROM read_parquet('{manifest}')").fetchall()]
    assert len(ids) == 12
    for sample_id in ids:
        rows = shard_rows(site, sample_id)
        assert [r[1] for r in rows] == [0, 1, 2]  # digits@1.0.0, 1.1.0, 1.2.0
    files = sorted(p.name for p in (site / "index" / "samples").glob("*.js"))
    assert files == [f"{n:x}.js" for n in range(16)]  # 36 rows: one hex digit, every shard written


# --- bad input and atomic writing ----------------------------------------------------------------------


def test_an_invalid_release_and_a_missing_manifest_are_said(team_ws: Path, tmp_path: Path) -> None:
    ws = clone(team_ws, tmp_path / "ws")
    record = ws / "releases/digits/1.1.0/release.json"
    record.write_text(record.read_text().replace('"actor": "Release Tester"', '"actor": "Mallory"'))
    (ws / "releases/digits/1.2.0/data/manifest.parquet").unlink()
    s = write_catalog(ws, tmp_path / "site")
    page = (tmp_path / "site" / "datasets/digits.html").read_text()
    section = page.split('<section id="v-1.1.0">')[1].split("</section>")[0]
    assert 'data-status="invalid"' in section and "edited after signing" in section
    assert s.not_indexed == [("digits@1.2.0", s.not_indexed[0][1])]
    assert "dvc pull" in s.not_indexed[0][1] and s.indexed_rows == 24


def test_a_folder_that_is_not_a_catalog_is_never_replaced(site: Path, team_ws: Path, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(WorkspaceError, match=r"is not empty and is not a catalog synthreg wrote"):
        write_catalog(team_ws, mine)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    link = tmp_path / "link"
    link.symlink_to(site)
    with pytest.raises(WorkspaceError, match="is a symbolic link"):
        write_catalog(team_ws, link)
    (tmp_path / "file").write_text("x")
    with pytest.raises(WorkspaceError, match="is a file, not a folder"):
        write_catalog(team_ws, tmp_path / "file")


def test_a_failure_midway_leaves_the_old_site_whole(
    site: Path, team_ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "catalog"
    shutil.copytree(site, out)
    (out / "stale.html").write_text("from an older catalog")
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))

    def boom(*a: Any, **k: Any) -> None:
        raise KeyboardInterrupt  # as a kill would stop it, after the reports were written

    monkeypatch.setattr(catalog_site, "build_index", boom)
    with pytest.raises(KeyboardInterrupt):
        write_catalog(team_ws, out)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalog"]  # no temporary folder left
    monkeypatch.undo()
    write_catalog(team_ws, out)  # a catalog is replaced as a whole
    assert not (out / "stale.html").exists() and (out / "index.html").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalog"]


def test_the_command(team_ws: Path, tmp_path: Path) -> None:
    out = runner.invoke(app, ["catalog", "--out", str(tmp_path / "site"), "-w", str(team_ws)])
    assert out.exit_code == 0, out.output
    assert out.stdout.startswith(f"catalog {tmp_path / 'site' / 'index.html'}: 1 dataset(s), 3 version(s), ")
    assert "36 sample row(s) searchable" in out.stdout and "No MLflow store is configured" in out.stdout
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "x").write_text("x")
    bad = runner.invoke(app, ["catalog", "--out", str(tmp_path / "mine"), "-w", str(team_ws)])
    assert bad.exit_code == 1 and "is not a catalog synthreg wrote" in bad.output


# --- in Chromium -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip(
            "Chromium is not installed (apt-get install -y chromium); the catalog is not checked in it"
        )
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')"
    )
    global expect
    expect = sync_api.expect
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


class Watched:
    """A page with every request, dialog, console error and page error recorded."""

    def __init__(self, browser: Any) -> None:
        self.page = browser.new_page()
        self.requests: list[str] = []
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def search(self, kind: str, query: str) -> list[list[str]]:
        p = self.page
        p.select_option("#kind", kind)
        p.fill("#q", query)
        p.click("button[type=submit]")
        # polled from here: a predicate evaluated in the page is refused by the site's CSP (no eval)
        expect(p.locator("#search-status")).not_to_have_text(re.compile(r"^(|searching\.\.\.)$"))
        return p.evaluate(
            "() => [...document.querySelectorAll('#results tr')].slice(1)"
            ".map(tr => [...tr.cells].map(td => td.textContent))"
        )

    def pwned(self) -> Any:
        return self.page.evaluate(
            "() => [window.__pwned, "
            "document.querySelectorAll('img[onerror], script:not([src]):not([type])').length]"
        )


def test_navigation_search_and_no_network_in_chromium(browser: Any, site: Path, team_ws: Path) -> None:
    import duckdb

    w = Watched(browser)
    p = w.page
    p.goto((site / "index.html").as_uri(), wait_until="load")
    p.click("text=digits")
    p.wait_for_url("**/datasets/digits.html")
    assert p.locator('[id="v-1.0.0"] .status').text_content() == "withdrawn"
    assert RELEASER in p.locator('[id="v-1.1.0"] table').nth(1).inner_text()  # the name, as text
    p.click('[id="v-1.1.0"] a.report')
    p.wait_for_url("**/reports/digits/1.1.0.html")
    assert p.title() == "digits@1.1.0" and p.locator(".banner").get_attribute("data-status") == "waived"
    p.goto((site / "search.html").as_uri(), wait_until="load")

    manifest = team_ws / "releases/digits/1.1.0/data/manifest.parquet"
    sample_id, digest, prompt = duckdb.sql(
        f"SELECT sample_id, weights_digest, prompt FROM read_parquet('{manifest}') ORDER BY sample_id LIMIT 1"
    ).fetchall()[0]
    rows = w.search("sample", sample_id)
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (sample_id, "digits@1.0.0", "withdrawn"),
        (sample_id, "digits@1.1.0", "final"),
        (sample_id, "digits@1.2.0", "candidate"),
    ]
    assert rows[0][6] == prompt  # the hostile prompt, newline and all, as text
    assert w.search("sample", sample_id[:-1]) == []
    assert p.locator("#search-status").text_content() == "no match"
    rows = w.search("digest", digest[:10].upper())
    assert [(r[0], r[1], r[3], r[5]) for r in rows] == [
        ("tiny-digits", digest, f"digits@1.{m}.0", "12") for m in (0, 1, 2)
    ]
    assert w.search("digest", "abc") == [] and "6 to 64 hex" in p.locator("#search-status").text_content()
    rows = w.search("prompt", "LINE2 THIN")
    assert len(rows) == 9 and all(r[0].endswith("line2 thin") and "</script><img" in r[0] for r in rows)
    assert {r[1] for r in rows} == {"digits@1.0.0", "digits@1.1.0", "digits@1.2.0"}
    rows = w.search("prompt", 'onerror="window.__pwned=1"')
    assert len(rows) == 18
    p.click("#results a >> nth=0")
    p.wait_for_url("**/datasets/digits.html#v-1.0.0")

    assert w.pwned() == [None, 0]
    assert w.dialogs == [] and w.errors == []
    root = site.as_uri() + "/"
    assert any(u.endswith("/index/prompts/00000.js") for u in w.requests)  # recording works
    assert [u for u in w.requests if not u.startswith(root)] == []
    p.close()


def test_hostile_names_never_run_on_any_page(browser: Any, site: Path) -> None:
    for path in ("index.html", "datasets/digits.html", "models.html", "search.html"):
        w = Watched(browser)
        w.page.goto((site / path).as_uri(), wait_until="load")
        assert w.pwned() == [None, 0] and w.dialogs == [] and w.errors == [], path
        assert [u for u in w.requests if not u.startswith(site.as_uri() + "/")] == []
        w.page.close()


def test_the_index_grows_in_shards_and_the_page_does_not(tmp_path: Path) -> None:
    """70,000 rows (a stand-in for 1M: the rule is the same, one more hex digit): 256 sample shards, each
    near 70,000 / 256 rows, one prompt chunk per 2,000 distinct prompts, and a search page of a few KB."""
    import duckdb

    from registry.exports.catalog_html import CatalogData, VersionEntry, catalog_pages

    manifest = tmp_path / "releases/big/1.0.0/data/manifest.parquet"
    manifest.parent.mkdir(parents=True)
    duckdb.sql(
        "COPY (SELECT 'big-' || i || '-' || md5(i::VARCHAR)[:8] AS sample_id, 'accepted' AS decision, "
        "(i % 10)::VARCHAR AS identity, 'gen' AS generator_name, repeat('ab', 32) AS weights_digest, "
        "'MIT' AS generator_licence, 'prompt ' || (i % 5000) AS prompt, NULL AS reason "
        f"FROM range(70000) t(i)) TO '{manifest}' (FORMAT parquet)"
    )
    v = VersionEntry("big", "1.0.0", "final", "final", None, ("passed", "passed"))
    meta = catalog_site.build_index(tmp_path, tmp_path / "site", [v])
    assert (meta["rows"], meta["sample_hex"], meta["prompt_chunks"]) == (70_000, 2, 3)
    assert meta["generators"] == [["gen", "ab" * 32, "MIT", [[0, 70_000]]]]
    shards = list((tmp_path / "site/index/samples").glob("*.js"))
    assert len(shards) == 256
    sizes = [len(p.read_text().splitlines()) for p in shards]
    assert min(sizes) > 180 and max(sizes) < 380  # about 273 rows each
    assert shard_rows_in(tmp_path / "site", meta, "big-12345-" + hashlib.md5(b"12345").hexdigest()[:8])
    page = catalog_pages(CatalogData([v], [], "none", "now", meta))["search.html"]
    assert len(page) < 8_000


def shard_rows_in(site: Path, meta: dict, sample_id: str) -> list[list[Any]]:
    import json

    k = meta["sample_hex"]
    name = f"samples/{fnv1a(sample_id) & ((1 << 4 * k) - 1):0{k}x}"
    rows = json.loads((site / "index" / f"{name}.js").read_text()[len(f'synthregShard("{name}",') : -3])
    return [r for r in rows if r[0] == sample_id]
