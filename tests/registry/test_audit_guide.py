"""docs/guide/audit.md answers issue 21's twelve audit questions by pointing at the HTML report's sections,
`synthreg show`'s rows and the keys of `verify --json` (and of `models`, `trace image`). This test reads the
guide's table and checks, on a release made by the fixtures (with a model trained on it, then withdrawn),
that every pointer is in the real outputs, and that the answers say what the guide says they do."""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from registry.cli import app
from registry.lineage.report import dataset_html, model_html
from registry.releases.withdraw import withdraw
from tests.registry.conftest import folder, table_rows
from tests.registry.test_report_html import log_model, section_of, sections

GUIDE = Path(__file__).parents[2] / "docs" / "guide" / "audit.md"
runner = CliRunner()


def questions() -> dict[int, str]:
    """Question number -> its row of the guide's table."""
    rows = re.findall(r"^\| (\d+) \| (.*)$", GUIDE.read_text(), re.M)
    return {int(n): row for n, row in rows}


def resolve(doc: Any, path: str) -> list[Any]:
    """The values at ``path`` (``.a.b[].c``; ``[]``: every element of a non-empty list)."""
    values = [doc]
    for part in re.findall(r"\.([a-z0-9_]+)(\[\])?", path):
        key, each = part
        found = []
        for v in values:
            assert isinstance(v, dict) and key in v, f"{path}: no key {key!r} in {str(v)[:200]}"
            found.append(v[key])
        if each:
            assert all(isinstance(v, list) and v for v in found), f"{path}: {key} is not a non-empty list"
            found = [x for v in found for x in v]
        values = found
    return values


def cli(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert "internal error" not in result.output, result.output
    return result.stdout


@pytest.fixture(scope="module")
def outputs(released, solo_trust, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every output the guide points to, for digits@1.0.0 with a model trained on it, then withdrawn."""
    from tests.registry.conftest import clone

    top = tmp_path_factory.mktemp("audit")
    ws = clone(released.ws, top / "ws")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{top}/mlflow.db")
    try:
        log_model(ws, {"accuracy": 0.8, "accuracy.identity_7": 0.9})
        withdraw(ws, "digits@1.0.0", "consent of a source revoked", "Auditor")
        shard = folder(ws, "1.0.0") / "data" / released.record.shards[0].path
        with tarfile.open(shard) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith(".png"))
            image = top / "one.png"
            image.write_bytes(tar.extractfile(member).read())  # type: ignore[union-attr]
        w = ["-w", str(ws)]
        return {
            "html": dataset_html(ws, "digits@1.0.0", trust=solo_trust.trust),
            "model html": model_html(ws, "digit-clf/1"),
            "show": cli("show", "digits@1.0.0", *w),
            "show --json": json.loads(cli("show", "digits@1.0.0", "--json", *w)),
            "verify --json": json.loads(cli("verify", "digits@1.0.0", "--json", "--require", "signed", *w)),
            "models --json": json.loads(cli("models", "--json", *w)),
            "trace image --json": json.loads(cli("trace", "image", str(image), "--json", *w)),
            "list": cli("list", *w),
            "log --verify": cli("log", "--verify", *w),
            "log --verify --json": json.loads(cli("log", "--verify", "--json", *w)),
        }
    finally:
        mp.undo()


def test_the_guide_answers_all_twelve_questions_with_pointers() -> None:
    found = questions()
    assert sorted(found) == list(range(1, 13))
    for n, row in found.items():
        pointers = re.findall(
            r"`(#[a-z-]+|show: [^`]+|[a-z ]+ --json \.[^`]+|synthreg [^`]+|model#[a-z-]+)`", row
        )
        assert pointers, f"question {n} points nowhere"


@pytest.mark.parametrize("n", range(1, 13))
def test_every_pointer_of_the_guide_is_in_the_outputs(outputs: dict[str, Any], n: int) -> None:
    row = questions()[n]
    page = outputs["html"]
    for sid in re.findall(r"`#([a-z-]+)`", row):
        assert sid in sections(page), f"question {n}: the report has no section #{sid}"
    for sid in re.findall(r"`model#([a-z-]+)`", row):
        assert sid in sections(outputs["model html"]), f"question {n}: a model's report has no #{sid}"
    shown = outputs["show"]
    labels = {r[0] for r in table_rows(shown) if r} | {line.strip() for line in shown.splitlines()}
    for label in re.findall(r"`show: ([^`]+)`", row):
        assert label in labels, f"question {n}: `synthreg show` has no row or table {label!r}"
    for command, path in re.findall(r"`(show|verify|models|trace image) --json (\.[^`]+)`", row):
        resolve(outputs[f"{command} --json"], path)


def test_the_answers_say_what_the_guide_says(outputs: dict[str, Any], solo_trust) -> None:
    page = outputs["html"]
    # 1: versions and their status
    assert "digits: 1.0.0 (" in outputs["list"] and "withdrawn" in outputs["list"]
    assert "<td>digits@1.0.0</td>" in section_of(page, "lineage") and "WITHDRAWN" in section_of(
        page, "lineage"
    )
    # 2: who signed, with which key, trusted by my root (named)
    sigs = section_of(page, "signatures")
    assert (
        f"<code>{solo_trust.keyid}</code>" in sigs and ">trusted<" in sigs and str(solo_trust.trust) in sigs
    )
    signer = resolve(outputs["verify --json"], ".approval.signers[]")[0]
    assert (signer["keyid"], signer["trusted"]) == (solo_trust.keyid, True)
    # 3: generators by weights digest, their licence, their own training data
    record = outputs["show --json"]
    assert record["generators"][0]["weights_digest"] in section_of(page, "licences")
    assert "generator-training" in resolve(record, ".sources[].role")
    # 4: the prompt and seed of an image
    (im,) = outputs["trace image --json"]["images"]
    assert im["prompt"] and isinstance(im["seed"], int)
    # 5: filter settings, rejections and reasons, checks not run
    key = next(iter(sorted(record["filter"]["params"])))
    assert f"<code>{key}</code>" in section_of(page, "filter")
    assert sum(record["counts"]["reasons"].values()) >= record["counts"]["rejected"]
    # 6: bias requested and observed, waivers with who, why, until when
    assert "bias.observed-balance" in section_of(page, "policy")
    assert all(w["approver"] and w["reason"] and w["expires"] for w in record["waivers"])
    # 7: licence fit with the intended use
    assert record["policy_results"]["licence.intended-use"] == "pass"
    # 8 and 9: the model, its metrics, share, split, and the withdrawn data that reached it
    (model,) = outputs["models --json"]["models"]
    assert (model["metrics"]["accuracy"], model["synthetic_share"]) == (0.8, 0.5)
    assert model["evaluation_split"] == "unknown"  # log_model says nothing of its evaluation data
    assert model["withdrawn"].startswith("digits@1.0.0 withdrawn on ")
    models = section_of(page, "models")
    assert "digit-clf/1" in models and "unknown: the run does not say" in models and "withdrawn on" in models
    assert "trained on WITHDRAWN data: digits@1.0.0" in section_of(outputs["model html"], "status")
    assert "withdrawn on " in section_of(outputs["model html"], "evaluation")
    assert outputs["verify --json"]["withdrawn"]["reason"] == "consent of a source revoked"
    # 10: every image marked, and how to check one
    checks = {c["check"]: c for c in outputs["verify --json"]["checks"]}
    assert checks["images"]["status"] == "pass" and outputs["verify --json"]["unmarked"] == {}
    assert "exiftool -XMP-iptcExt:DigitalSourceType" in section_of(page, "marking")
    # 11: what verify checked, each with its status
    assert all(c["what"] and c["status"] in ("pass", "withdrawn", "not run") for c in checks.values())
    assert outputs["verify --json"]["samples_checked"] == record["counts"]["total"]
    # 12: the audit log's integrity
    assert outputs["log --verify"].startswith("audit log: intact")
    # ... and what no signature covers yet, in every output (issue 20's signed or named tail)
    log = outputs["log --verify --json"]
    assert log["intact"] and log["covered"] + log["uncovered"] == log["events"] > 0
    assert (log["uncovered"] == 0) == (log["uncovered_since"] is None) == (log["risk"] is None)
    assert ("unsigned" in outputs["log --verify"]) == (log["uncovered"] > 0)
    assert "withdrawal" in section_of(page, "timeline")
