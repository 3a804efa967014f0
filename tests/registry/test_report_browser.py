"""The HTML audit report in a real browser: Debian's Chromium driven by Playwright (its own browser
download cannot work offline, so the system binary is launched by path). The page loads from a file://
URL with no console error and no request leaving the file, every section is there, every image decodes,
and a screenshot is written. Without Chromium or Playwright these tests skip, saying which is missing.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from registry.lineage.report import dataset_html, model_html
from registry.releases.withdraw import withdraw
from tests.registry.conftest import Built
from tests.registry.test_report_html import DATASET_SECTIONS, MODEL_SECTIONS, log_model, released_page

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).parent.parent.parent / ".pytest_screenshots"  # ignored by git; look at them


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip(
            "Chromium is not installed (apt-get install -y chromium); the report is not checked in a browser"
        )
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')"
    )
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


def open_page(browser: Any, path: Path, shot: Path) -> dict:
    """Load ``path``; return console errors, page errors, requests that left the file, section ids and
    images (src kind, complete, naturalWidth), after writing a full-page screenshot to ``shot``."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url) if not r.url.startswith(("file:", "data:")) else None)
    page.goto(path.as_uri(), wait_until="load")
    found = page.evaluate(
        """() => ({
            sections: [...document.querySelectorAll('section')].map(s => s.id),
            images: [...document.images].map(i => [i.src.slice(0, 14), i.complete, i.naturalWidth]),
            scripts: document.scripts.length,
            banner: document.querySelector('.banner').dataset.status,
            words: document.querySelector('.banner').innerText,
            colour: getComputedStyle(document.querySelector('.banner')).borderTopColor,
        })"""
    )
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    page.close()
    return {"errors": errors, "requests": requests, **found}


def check(found: dict, sections: list[str], shot: Path) -> None:
    assert found["errors"] == []
    assert found["requests"] == []
    assert found["scripts"] == 0
    assert found["sections"] == sections
    assert found["images"], "no image at all"
    broken = [i for i in found["images"] if not (i[0] == "data:image/png" and i[1] and i[2] > 0)]
    assert broken == []
    assert shot.stat().st_size > 10_000  # a real rendering, not an empty page


def test_dataset_report_in_chromium(browser: Any, released_copy: Path, tmp_path: Path) -> None:
    report = tmp_path / "digits.html"
    withdraw(released_copy, "digits@1.0.0", "consent revoked", "Auditor")
    report.write_text(dataset_html(released_copy, "digits@1.0.0"))
    shot = SCREENSHOTS / "dataset-report.png"
    found = open_page(browser, report, shot)
    check(found, DATASET_SECTIONS, shot)
    assert found["banner"] == "withdrawn"
    assert len(found["images"]) == 15  # two charts, 12 samples, the lineage graph


def test_release_report_in_chromium(browser: Any, released: Built) -> None:
    shot = SCREENSHOTS / "release-report.png"
    found = open_page(browser, released.ws / "releases/digits/1.0.0/report.html", shot)
    check(found, DATASET_SECTIONS, shot)
    assert found["banner"] == "waived"


def test_model_report_in_chromium(
    browser: Any, released_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    log_model(released_copy, {"accuracy": 0.8, **{f"accuracy.identity_{d}": 0.7 + d / 40 for d in (1, 4, 7)}})
    report = tmp_path / "model.html"
    report.write_text(model_html(released_copy, "digit-clf/1"))
    shot = SCREENSHOTS / "model-report.png"
    found = open_page(browser, report, shot)
    check(found, MODEL_SECTIONS, shot)
    assert len(found["images"]) == 2


@pytest.mark.parametrize(
    ("changes", "status", "words", "colour"),
    [
        ({}, "warned", "passed with 1 warning(s): bias.observed-balance", "rgb(239, 108, 0)"),
        (
            {"bias.observed-balance": "pass", "privacy.memorised-copies": "not run"},
            "notrun",
            "passed the rules that ran; 1 check(s) NOT RUN: privacy.memorised-copies",
            "rgb(106, 27, 154)",
        ),
    ],
)
def test_a_warned_and_a_not_run_release_in_chromium(
    browser: Any, released: Built, tmp_path: Path, changes: dict, status: str, words: str, colour: str
) -> None:
    """Issue 21: the banner's words and colour follow the worst status; never green (rgb(46, 125, 50))."""
    report = tmp_path / f"{status}.html"
    report.write_text(released_page(released.ws, changes, waivers=False))
    shot = SCREENSHOTS / f"release-{status}.png"
    found = open_page(browser, report, shot)
    check(found, DATASET_SECTIONS, shot)  # signatures, marking, not run, filter settings, models among them
    assert (found["banner"], found["words"], found["colour"]) == (status, words, colour)


def test_new_sections_and_hostile_names_in_chromium(
    browser: Any, released_copy: Path, solo_trust, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 21: signatures and approvals (with this machine's root), marking, checks not run, filter
    settings and the models with their evaluation split are on the page; HTML in a signer's name (from the
    trust root) or a model's name is shown as text: no element is made of it and nothing runs."""
    import yaml

    from registry.downstream import tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    run_id = log_model(released_copy, {"accuracy": 0.8})
    hostile = "<img src=x onerror=alert(1)>"
    c = tracking.client(released_copy)
    c.create_registered_model(hostile)
    c.create_model_version(hostile, source=f"runs:/{run_id}/model", run_id=run_id)
    root = yaml.safe_load(solo_trust.trust.read_text())
    root["keys"][0]["name"] = "<b id=injected>Mallory</b>"
    trust = tmp_path / "trust.yaml"
    trust.write_text(yaml.safe_dump(root))
    report = tmp_path / "hostile.html"
    report.write_text(dataset_html(released_copy, "digits@1.0.0", trust=trust))
    page = browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(report.as_uri(), wait_until="load")
    found = page.evaluate(
        """() => ({
            headings: [...document.querySelectorAll('section h2')]
                .map(h => [h.parentElement.id, h.innerText]),
            injected: document.querySelectorAll('#injected, img[src="x"]').length,
            signatures: document.querySelector('#signatures').innerText,
            models: document.querySelector('#models').innerText,
        })"""
    )
    page.close()
    assert dialogs == [] and found["injected"] == 0
    headings = dict(found["headings"])
    assert headings["signatures"] == "Signatures and approvals"
    assert headings["marking"] == "Marking: AI-generated, machine-readable"
    assert headings["not-run"] == "Checks not run"
    assert headings["filter"] == "Filter settings"
    assert headings["models"] == "Models trained on this dataset (from the MLflow store)"
    assert "<b id=injected>Mallory</b> (signed as 'Solo Tester')" in found["signatures"]
    assert f"Trust root: {trust}" in found["signatures"] and "trusted" in found["signatures"]
    assert f"{hostile}/1" in found["models"] and "digit-clf/1" in found["models"]
    assert "evaluation split" in found["models"] and "unknown: the run does not say" in found["models"]
