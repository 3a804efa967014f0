"""Progress on long work: the library calls ``progress(done, total, what)``; the CLI draws a rich bar on
a terminal and, everywhere else (a pipe, `dvc repro`, CI), plain periodic lines on stderr, leaving
stdout to the result."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from registry.cli import app
from registry.cli.common import PlainProgress
from registry.records.config import TrainParams
from tests.registry.conftest import Built

runner = CliRunner()
LINE = r"(\d+)/(\d+) \((\d+)%\)(?:, [0-9.]+ [a-z]+/s)?(?:, \d+ s left)?"


def lines(text: str, label: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith(f"{label}: ")]


def test_plain_lines_are_throttled_and_end_with_the_last_count(capsys: pytest.CaptureFixture[str]) -> None:
    p = PlainProgress("generate", "img")
    now = [0.0]
    p.clock = lambda: now[0]
    p.start = p.last = 0.0
    p.every = 10
    for done in range(0, 101, 5):  # one update a second for 20 s
        now[0] = done / 5
        p.update(done, 100)
    p.close()
    shown = capsys.readouterr().err.splitlines()
    # one at 10 s and the last (shown because the run was long enough to show anything)
    assert shown == [
        "generate: 50/100 (50%), 5.0 img/s, 10 s left",
        "generate: 100/100 (100%), 5.0 img/s",
    ]


def test_quick_work_prints_no_progress(capsys: pytest.CaptureFixture[str]) -> None:
    p = PlainProgress("release", "shard")
    p.clock = lambda: 3.0
    p.start = p.last = 0.0
    p.every = 10
    p.update(0, 2)
    p.update(2, 2)
    p.close()
    assert capsys.readouterr().err == ""  # so an `error:` line is the first thing a script reads


def test_a_run_that_stops_between_lines_shows_where_it_stopped(capsys: pytest.CaptureFixture[str]) -> None:
    p = PlainProgress("filter", "img")
    now = [10.0]
    p.clock = lambda: now[0]
    p.start = p.last = 0.0
    p.every = 10
    p.update(0, 10)  # shown: 10 s into the work
    now[0] = 12.0
    p.update(7, 10)  # held back: within the interval
    p.close()
    assert capsys.readouterr().err.splitlines()[-1].startswith("filter: 7/10 (70%)")


def test_verify_and_validate_report_progress_on_stderr(
    released: Built, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SYNTHREG_PROGRESS_SECONDS", "0")  # every update becomes a line
    res = runner.invoke(app, ["verify", "digits@1.0.0", "-w", str(released.ws)])
    assert res.exit_code == 0, res.output
    out = res.stdout.splitlines()  # stdout keeps only the result: who signed, then the verdict
    assert (
        out[0].startswith("digits@1.0.0: approved by")
        and out[-1] == "digits@1.0.0: OK (12 samples in 2 shards)"
    )
    assert not any(ln.startswith("verify:") for ln in out)
    shown = lines(res.stderr, "verify")
    assert [re.fullmatch(f"verify: {LINE}", ln) is not None for ln in shown] == [True, True]
    assert shown[0].startswith("verify: 6/12 (50%)") and shown[-1].startswith("verify: 12/12 (100%)")

    res = runner.invoke(
        app, ["validate", "data/digits/filtered", "--out", str(tmp_path.name), "-w", str(released.ws)]
    )
    shown = lines(res.stderr, "validate")
    assert res.exit_code == 0, res.output
    assert shown[0] == "validate: 0/15 (0%) licence.known"  # which rule runs now
    assert shown[-1].startswith("validate: 15/15 (100%)")
    assert len(shown) == 16


def test_training_reports_each_epoch() -> None:
    from registry.downstream.classifier import fit

    seen: list[tuple[int, int, str]] = []
    params = TrainParams(epochs=3, train_size=8, batch_size=4, threads=1)
    size = params.image_size
    images = np.random.default_rng(0).random((8, size, size), dtype=np.float32)
    labels = np.arange(8) % 2
    fit(images, labels, params, 2, lambda *a: seen.append(a))
    assert [(d, t) for d, t, _ in seen] == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert seen[0][2] == "" and all(re.fullmatch(r"loss \d+\.\d{4}", w) for _, _, w in seen[1:])
