"""The HTML audit report: written by release, made again by `synthreg report` (after a withdrawal it
shows it), for a model with its metrics per group; bad input writes nothing. What a browser makes of
the page is in test_report_browser.py."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from registry.cli import app
from registry.downstream import tracking
from registry.lineage.report import dataset_html, model_html
from registry.releases.withdraw import withdraw
from tests.registry.conftest import WAIVED, Built, folder

runner = CliRunner()
DATASET_SECTIONS = [
    "status",
    "signatures",
    "policy",
    "not-run",
    "filter",
    "marking",
    "representation",
    "samples",
    "licences",
    "waivers",
    "models",
    "timeline",
    "lineage",
]
MODEL_SECTIONS = [
    "status",
    "metrics",
    "evaluation",
    "training-data",
    "licences",
    "waivers",
    "timeline",
    "lineage",
]


def sections(page: str) -> list[str]:
    return re.findall(r'<section id="([a-z-]+)">', page)


def images(page: str) -> list[Image.Image]:
    """Every embedded image, decoded (a broken one raises)."""
    found = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    return [Image.open(io.BytesIO(base64.b64decode(b))) for b in found]


def banner(page: str) -> str:
    m = re.search(r'<div class="banner [a-z]+" data-status="([a-z]+)">([^<]*)</div>', page)
    assert m, "no status banner"
    return f"{m.group(1)}: {m.group(2)}"


def test_release_writes_the_report_with_every_section(released: Built, solo_trust) -> None:
    page = (folder(released.ws, "1.0.0") / "report.html").read_text()
    assert sections(page) == DATASET_SECTIONS
    assert banner(page) == f"waived: passed with {len(WAIVED)} waiver(s) and 1 warning(s)"  # never green
    # charts of identities and of the stroke attribute, 12 thumbnails (all 12 images), the lineage graph
    pics = images(page)
    assert len(pics) == 1 + 1 + 12 + 1, len(pics)  # identity chart, attribute chart, samples, lineage
    assert all(p.size[0] > 0 for p in pics)
    for rule in WAIVED:
        assert f"<code>{rule}</code>" in page
    approver = f"Solo Tester (key <code>{solo_trust.keyid[:16]}</code>)"  # who signed each waiver
    assert page.count(approver) == len(WAIVED)
    assert "<h3>The generators' own training data</h3><table>" in page  # a table, not "none declared"
    assert "<script" not in page  # nothing runs, nothing is fetched
    # and the Markdown policy report travels with the release, the same as validate wrote it
    released_md = (folder(released.ws, "1.0.0") / "policy-report.md").read_text()
    assert released_md == (released.ws / "data/digits/policy/report.md").read_text()
    assert "http://" not in page.split("<body>")[1].split("licences")[0]  # no remote resource before links


def test_report_after_withdrawal_shows_it(released_copy: Path, tmp_path: Path) -> None:
    withdraw(released_copy, "digits@1.0.0", "consent of a source revoked", "Auditor")
    out = tmp_path / "after.html"
    res = runner.invoke(app, ["report", "digits@1.0.0", "--out", str(out), "-w", str(released_copy)])
    assert res.exit_code == 0, res.output
    assert res.output == f"report {out}\n"
    page = out.read_text()
    assert banner(page).startswith("withdrawn: WITHDRAWN on ")
    assert banner(page).endswith("by Auditor: consent of a source revoked")
    assert sections(page) == DATASET_SECTIONS
    # the timeline holds generate, filter, validate, release and the withdrawal, oldest first
    kinds = re.findall(r"<tr><td>[0-9T:-]+</td><td>([a-z]+)</td>", page)
    assert kinds[0] == "generate" and kinds[-1] == "withdrawal" and "release" in kinds, kinds


def test_report_default_path_and_hostile_text_is_escaped(released_copy: Path) -> None:
    path = folder(released_copy, "1.0.0") / "release.json"
    record = json.loads(path.read_text())
    record["actor"] = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    path.write_text(json.dumps(record))
    res = runner.invoke(app, ["report", "digits@1.0.0", "-w", str(released_copy)])
    assert res.exit_code == 0, res.output
    page = (released_copy / "reports" / "digits@1.0.0.html").read_text()
    assert "<script" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page


def test_report_of_an_unknown_version_writes_nothing(released: Built, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    res = runner.invoke(app, ["report", "digits@9.9.9", "--out", str(out), "-w", str(released.ws)])
    assert res.exit_code == 1
    assert res.output == "error: digits@9.9.9 is not released; see `synthreg list`\n"
    assert not out.exists()
    res = runner.invoke(app, ["report", "digits", "--out", str(out), "-w", str(released.ws)])
    assert (res.exit_code, res.output) == (
        1,
        "error: 'digits' names no version; give NAME@X.Y.Z (see `synthreg list`)\n",
    )
    res = runner.invoke(app, ["report", "--out", str(out), "-w", str(released.ws)])
    assert res.exit_code == 1 and "give a dataset version NAME@X.Y.Z or --model" in res.output
    assert not out.exists()


def log_model(ws: Path, metrics: dict[str, float]) -> str:
    """A run that trained on digits@1.0.0 by registry.downstream.tracking's conventions, registered as a model
    (what `synthreg train` logs, without training)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    from registry.store.releases import load_release

    r = load_release(ws, "digits@1.0.0")
    c = tracking.client(ws)
    exp = c.create_experiment("report", artifact_location=(ws / "artifacts").as_uri())
    run = c.create_run(
        exp,
        run_name="mix",
        tags={
            tracking.TAG_DATASET: "digits@1.0.0",
            tracking.TAG_MANIFEST: r.manifest_sha256,
            tracking.TAG_SHARE: "0.5",
        },
    )
    ds = Dataset(
        name="digits@1.0.0",
        digest=r.manifest_sha256[:36],
        source_type="synthreg",
        source=tracking.dataset_source("digits", "1.0.0", r.git_commit),
    )
    c.log_inputs(run.info.run_id, [DatasetInput(ds, [InputTag("mlflow.data.context", "training")])])
    for k, v in metrics.items():
        c.log_metric(run.info.run_id, k, v)
    c.set_terminated(run.info.run_id)
    c.create_registered_model("digit-clf")
    c.create_model_version("digit-clf", source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    return run.info.run_id


def test_model_report_has_metrics_per_group_and_its_data(
    released_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    per_group = {f"accuracy.identity_{d}": 0.5 + d / 20 for d in range(10)}
    run_id = log_model(released_copy, {"accuracy": 0.81, "worst_group_gap": 0.45, **per_group})
    page = model_html(released_copy, "digit-clf/1")
    assert sections(page) == MODEL_SECTIONS
    assert banner(page) == "waived: trained on released data that passed policy with waivers"
    assert run_id in page and "<td>accuracy.identity_7</td><td>0.8500</td>" in page
    assert len(images(page)) == 2  # metrics per group, lineage
    # the dataset report now knows the model
    assert "digit-clf/1" in dataset_html(released_copy, "digits@1.0.0")
    withdraw(released_copy, "digits@1.0.0", "bad source", "Auditor")
    assert (
        banner(model_html(released_copy, "digit-clf/1"))
        == "withdrawn: trained on WITHDRAWN data: digits@1.0.0"
    )


def test_report_of_an_unknown_model_writes_nothing(
    released: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    out = tmp_path / "m.html"
    res = runner.invoke(app, ["report", "--model", "nope/1", "--out", str(out), "-w", str(released.ws)])
    assert res.exit_code == 1
    # (MLflow logs its table creation to stderr first)
    assert res.output.splitlines()[-1] == f"error: model 'nope' not found in {uri}; no model is registered"
    assert not out.exists()


# --- the banner states the worst status (issue 21: never green over a warning or a check not run) -------

BANNERS = [
    # (policy results changed, waivers kept, expected class, expected words)
    ({}, False, "warned", "passed with 1 warning(s): bias.observed-balance"),
    ({"privacy.memorised-copies": "not run"}, False, "warned", "; 1 check(s) NOT RUN"),
    ({"bias.observed-balance": "pass", "privacy.memorised-copies": "not run"}, False, "notrun",
     "passed the rules that ran; 1 check(s) NOT RUN: privacy.memorised-copies"),
    ({"bias.observed-balance": "pass"}, False, "passed", "passed every policy rule"),
    ({"bias.observed-balance": "pass", "leakage.eval-split": "not applicable"}, False, "passed",
     "passed every rule that applies; not applicable: leakage.eval-split"),
    ({}, True, "waived", " waiver(s) and 1 warning(s)"),
    ({"licence.known": "fail"}, True, "failed", "policy FAILED"),
]  # fmt: skip


def released_page(ws: Path, changes: dict[str, str], waivers: bool) -> str:
    from registry.exports.report_html import dataset_page
    from registry.releases.report import read_report, report_data
    from registry.store.releases import load_release

    record = load_release(ws, "digits@1.0.0")
    results = {**record.policy_results, **changes}
    record = record.model_copy(
        update={
            "policy_results": results,
            "policy_passed": "fail" not in results.values(),
            "waivers": record.waivers if waivers else [],
        }
    )
    if not waivers:
        results = {k: "pass" if v == "waived" else v for k, v in results.items()}
        record = record.model_copy(update={"policy_results": results})
    folder_ = folder(ws, "1.0.0")
    return dataset_page(report_data(ws, folder_, record, read_report(folder_)))


@pytest.mark.parametrize(("changes", "waivers", "cls", "words"), BANNERS)
def test_the_banner_states_the_worst_status(
    released: Built, changes: dict[str, str], waivers: bool, cls: str, words: str
) -> None:
    assert released.record is not None and released.record.policy_results["bias.observed-balance"] == "warn"
    status, _, text = banner(released_page(released.ws, changes, waivers)).partition(": ")
    assert status == cls and words in text, text


def test_the_checks_that_did_not_run_have_their_own_section(released: Built) -> None:
    """Issue 21: a reviewer sees which checks did not run, and why, apart from the rest."""
    page = (folder(released.ws, "1.0.0") / "report.html").read_text()
    ran = re.search(r'<section id="not-run">(.*?)</section>', page, re.S)
    assert ran and "Every check of the policy packs ran." in ran.group(1)
    from registry.exports.report_html import dataset_page
    from registry.releases.report import read_report, report_data
    from registry.store.releases import load_release

    record = load_release(released.ws, "digits@1.0.0")
    report = read_report(folder(released.ws, "1.0.0"))
    assert report is not None
    results = [
        r.model_copy(update={"status": "not run", "message": "not run: no row has a distance <x>"})
        if r.rule_id == "privacy.memorised-copies"
        else r
        for r in report.results
    ]
    page = dataset_page(
        report_data(
            released.ws, folder(released.ws, "1.0.0"), record, report.model_copy(update={"results": results})
        )
    )
    section = re.search(r'<section id="not-run">(.*?)</section>', page, re.S)
    assert section and "<b>1 check(s) did not run</b>" in section.group(1)
    assert "<code>privacy.memorised-copies</code>" in section.group(1) and "&lt;x&gt;" in section.group(1)
