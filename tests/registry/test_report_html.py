"""The HTML audit report: written by release, made again by `synthreg report` (after a withdrawal it
shows it), for a model with its metrics per group; bad input writes nothing. What a browser makes of
the page is in test_report_browser.py."""

from __future__ import annotations

import base64
import hashlib
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


# --- signatures and approvals, models and their evaluation split (issue 21) ------------------------------


def section_of(page: str, sid: str) -> str:
    found = re.search(rf'<section id="{sid}">(.*?)</section>', page, re.S)
    assert found, f"no section {sid}"
    return found.group(1)


def test_the_release_report_names_the_releaser_about_to_sign(released: Built, solo_trust) -> None:
    """The report is part of what the releaser signs, so it names the sign-off about to be made, with what
    the trust root in force says of the key; approvals come later (`synthreg report`)."""
    sigs = section_of((folder(released.ws, "1.0.0") / "report.html").read_text(), "signatures")
    digest = hashlib.sha256(solo_trust.trust.read_bytes()).hexdigest()
    assert f"Trust root: <code>{solo_trust.trust}</code>, sha256 <code>{digest}</code>" in sigs
    assert "Release status: <b>signing</b>" in sigs
    row = f"<td><code>{solo_trust.keyid}</code></td><td>Solo Tester</td><td>releaser+approver</td>"
    assert row in sigs and '<span class="st-pass">trusted</span>' in sigs
    models = section_of((folder(released.ws, "1.0.0") / "report.html").read_text(), "models")
    assert "Not asked: this report was made without reading the MLflow store." in models


def test_the_report_checks_every_signoff_against_this_machines_root(released: Built, solo_trust) -> None:
    sigs = section_of(dataset_html(released.ws, "digits@1.0.0"), "signatures")
    digest = hashlib.sha256(solo_trust.trust.read_bytes()).hexdigest()
    assert (
        f"Trust root: <code>{solo_trust.trust}</code>, sha256 <code>{digest}</code>, format version 1" in sigs
    )
    assert "Release status: <b>solo</b>: approved by 2 of 2" in sigs
    assert f"<td><code>{solo_trust.keyid}</code></td><td>Solo Tester</td>" in sigs
    assert sigs.count('<span class="st-pass">trusted</span>') == 1


def test_without_a_trust_root_no_key_is_called_trusted(
    released: Built, solo_trust, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNTHREG_TRUST", str(tmp_path / "absent.yaml"))
    sigs = section_of(dataset_html(released.ws, "digits@1.0.0"), "signatures")
    assert "Not checked: no trust root." in sigs and f"no trust root at {tmp_path / 'absent.yaml'}" in sigs
    assert "Release status: <b>not checked</b>: not checked: no trust root" in sigs
    assert f"<td><code>{solo_trust.keyid}</code></td><td>Solo Tester</td>" in sigs  # as the sign-off claims
    assert ">trusted<" not in sigs and "not checked: no trust root</span>" in sigs
    unreadable = tmp_path / "bad.yaml"
    unreadable.write_text("keys: [not, a, key]\n")
    sigs = section_of(dataset_html(released.ws, "digits@1.0.0", trust=unreadable), "signatures")
    assert "Not checked: no trust root." in sigs and ">trusted<" not in sigs


def test_a_key_the_root_does_not_hold_is_not_trusted_and_hostile_names_stay_text(
    released: Built, solo_trust, tmp_path: Path
) -> None:
    import yaml

    from registry.trust.signing import keygen

    other = keygen(tmp_path / "pub", tmp_path / "other.pem", name="Other", trust=tmp_path / "other.yaml")
    sigs = section_of(dataset_html(released.ws, "digits@1.0.0", trust=other.trust), "signatures")
    assert "Release status: <b>UNTRUSTED</b>" in sigs
    assert f"NOT TRUSTED: key {solo_trust.keyid[:16]} is not in the trust root {other.trust}" in sigs
    assert ">trusted<" not in sigs
    # the root's name for the key is shown (with the name it signed as): HTML in it stays text
    root = yaml.safe_load(solo_trust.trust.read_text())
    root["keys"][0]["name"] = '<img src=x onerror=alert(1)>"'
    hostile = tmp_path / "hostile.yaml"
    hostile.write_text(yaml.safe_dump(root))
    page = dataset_html(released.ws, "digits@1.0.0", trust=hostile)
    assert "<img src=x" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;&quot; (signed as &#x27;Solo Tester&#x27;)" in page


def test_the_report_lists_the_models_the_store_knows_with_their_evaluation_split(
    released_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No store anywhere: none named, and no mlflow.db (an earlier test may have made one in the shared
    # released workspace this copy comes from, by asking it for models).
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (released_copy / "mlflow.db").unlink(missing_ok=True)
    page = dataset_html(released_copy, "digits@1.0.0")
    models = section_of(page, "models")
    assert "No MLflow store configured: no model is known." in models
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    run_id = log_model(released_copy, {"accuracy": 0.75})
    c = tracking.client(released_copy)
    c.log_param(run_id, tracking.PARAM_EVAL_SPLIT, "real held-out")
    hostile = "<img src=x onerror=alert(1)>"
    c.create_registered_model(hostile)
    c.create_model_version(hostile, source=f"runs:/{run_id}/model", run_id=run_id)
    withdraw(released_copy, "digits@1.0.0", "consent revoked", "Auditor")
    models = section_of(dataset_html(released_copy, "digits@1.0.0"), "models")
    assert f"The MLflow store <code>{uri}</code> as read " in models
    assert "2 registered model version(s) trained on digits." in models
    row = re.search(r"<tr><td>digit-clf/1</td>(.*?)</tr>", models)
    assert row, models
    cells = re.findall(r"<td>(.*?)</td>", row.group(1))
    assert cells[:5] == [f"<code>{run_id}</code>", "digits@1.0.0", "accuracy 0.75", "0.5", "real held-out"]
    assert cells[5].startswith("<b>digits@1.0.0 withdrawn on ") and "consent revoked" in cells[5]
    assert "<img src=x" not in models and "&lt;img src=x onerror=alert(1)&gt;/1" in models
    # the model's own page: its split and the withdrawn data in its lineage
    page = model_html(released_copy, "digit-clf/1")
    evaluation = section_of(page, "evaluation")
    assert "<td>real held-out</td>" in evaluation and "withdrawn on " in evaluation


def test_a_store_that_cannot_be_read_is_said(
    released: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    uri = f"sqlite:///{tmp_path}/a-file/mlflow.db"  # cannot be created
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    models = section_of(dataset_html(released.ws, "digits@1.0.0"), "models")
    assert f"The MLflow store {uri} could not be read: " in models


def test_a_release_made_through_the_cli_reader_lists_the_stores_models(
    fresh: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`synthreg release` passes ``models_seen``: the signed report says what the store held then."""
    from registry.lineage.report import models_seen
    from registry.releases.release import release

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    tracking.client(fresh).create_registered_model("unrelated")  # a model, but of no digits run
    release("digits", "1.0.0", fresh, models=models_seen)
    models = section_of((folder(fresh, "1.0.0") / "report.html").read_text(), "models")
    assert f"The MLflow store <code>{uri}</code> as read " in models
    assert "0 registered model version(s) trained on digits" in models


@pytest.mark.parametrize(
    ("params", "inputs", "split"),
    [
        ({"evaluation_split": "synthetic"}, [], "synthetic"),
        ({"evaluation": "held-out real digits (sklearn-digits, 360 images)"}, [], "real held-out"),
        ({"evaluation": "held-out synthetic split (3 images of pets@1.0.0)"}, [], "synthetic"),
        ({}, [("evaluation", "synthreg")], "synthetic"),  # a user's own run: log_dataset(context=...)
        ({}, [("evaluation", "http")], "unknown"),  # someone's own data: real or not, the run does not say
        ({}, [("training", "synthreg")], "unknown"),
        ({"evaluation_split": "made up"}, [], "unknown"),
    ],
)
def test_the_evaluation_split_is_what_the_run_says_else_unknown(
    params: dict[str, str], inputs: list[tuple[str, str]], split: str
) -> None:
    from types import SimpleNamespace as NS

    from registry.downstream.model_index import evaluation_split

    run = NS(
        inputs=NS(
            dataset_inputs=[
                NS(tags=[NS(key="mlflow.data.context", value=ctx)], dataset=NS(source_type=kind))
                for ctx, kind in inputs
            ]
        )
    )
    assert evaluation_split(params, run) == split


def test_chart_legends_sit_outside_the_bars() -> None:
    """Issue 21: legends covered the bars. The legend's box lies outside the axes (so off every bar) and
    inside the figure (so it is not cut off), for tall bars and many categories alike."""
    from registry.exports.charts import bars_figure

    for categories, values in ((["bold", "thin"], [0.99, 0.98]), ([str(d) for d in range(14)], [1.0] * 14)):
        fig = bars_figure("t", categories, {"requested": values, "observed": values[::-1]}, "share")
        fig.canvas.draw()
        r = fig.canvas.get_renderer()
        ax = fig.axes[0]
        legend = ax.get_legend().get_window_extent(r)
        bars = [p.get_window_extent(r) for p in ax.patches]
        assert len(bars) == 2 * len(categories)
        assert not any(legend.overlaps(b) for b in bars)
        assert not legend.overlaps(ax.get_window_extent(r))
        assert legend.x0 >= 0 and legend.x1 <= fig.bbox.x1 and legend.y0 >= 0 and legend.y1 <= fig.bbox.y1


def test_dollar_signs_in_names_are_drawn_as_text_not_parsed() -> None:
    """A model or identity named ``$\\frac{$`` (matplotlib's mathtext) must not break the report."""
    from registry.exports import charts

    hostile = "$\\frac{$ <b>"
    bars = charts.grouped_bars(hostile, [hostile, "b"], {hostile: [1.0, 0.5]}, hostile)
    graph = charts.lineage_graph(
        [[("m", hostile, "model")], [("v", "digits@1.0.0", "version")]], [("m", "v")]
    )
    assert all(Image.open(io.BytesIO(png)).size[0] > 0 for png in (bars, graph))


def test_unreadable_signoffs_are_said_never_trusted(released_copy: Path) -> None:
    (folder(released_copy, "1.0.0") / "signoffs.json").write_text('{"not": "a list"}')
    sigs = section_of(dataset_html(released_copy, "digits@1.0.0"), "signatures")
    assert "Release status: <b>INVALID</b>: the signatures cannot be read" in sigs
    assert "must hold a list of DSSE envelopes" in sigs and ">trusted<" not in sigs


def test_other_versions_are_read_as_outlines_for_the_lineage(
    released_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """issue 22: the page shows of the dataset's other versions only their lineage, so they are read as
    ``ReleaseOutline`` (no shards, no excluded ids): the report of a derive at 10,000,000 images held four
    whole records, 154 -> 49 MB of Python objects at its peak. The outline is the record's, and a damaged
    record, or one copied into another version's folder, is refused as ``load_release`` refuses it."""
    from registry.core.errors import ReleaseError
    from registry.lineage import report as lineage_report
    from registry.records.release import ReleaseOutline
    from registry.store.releases import load_outline, load_release

    ws = released_copy
    other = folder(ws, "1.0.0").parent / "1.0.1"
    other.mkdir()
    record = json.loads((folder(ws, "1.0.0") / "release.json").read_text())
    (other / "release.json").write_text(json.dumps({**record, "version": "1.0.1"}))
    given: list = []
    page = lineage_report.dataset_page
    monkeypatch.setattr(lineage_report, "dataset_page", lambda d: given.append(d) or page(d))
    html = dataset_html(ws, "digits@1.0.0")
    assert [(type(o).__name__, o.version) for o, _ in given[0].others] == [("ReleaseOutline", "1.0.1")]
    assert "digits@1.0.1" in html and "digits@1.0.0" in html
    full = load_release(ws, "digits@1.0.1")
    assert load_outline(ws, "digits@1.0.1").model_dump() == full.model_dump(
        include=set(ReleaseOutline.model_fields)
    )
    from registry.releases import report as release_report

    monkeypatch.setattr(release_report, "dataset_page", lambda d: given.append(d) or "")
    at = folder(ws, "1.0.0")
    release_report.release_html(at, load_release(ws, "digits@1.0.0"), release_report.read_report(at))
    assert [(type(o).__name__, o.version) for o, _ in given[-1].others] == [
        ("ReleaseOutline", "1.0.0"),
        ("ReleaseOutline", "1.0.1"),
    ]
    # What load_release refuses, load_outline refuses: a review found a lenient outline read a damaged one.
    (other / "release.json").write_text(json.dumps({**record, "version": "1.0.1", "shards": "garbage"}))
    with pytest.raises(ReleaseError, match="is not a valid release record"):
        load_outline(ws, "digits@1.0.1")
    (other / "release.json").write_text(json.dumps(record))  # 1.0.0's record in 1.0.1's folder
    with pytest.raises(ReleaseError, match=re.escape("is the record of digits@1.0.0, not digits@1.0.1")):
        load_outline(ws, "digits@1.0.1")
