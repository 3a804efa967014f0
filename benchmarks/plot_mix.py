"""Held-out real accuracy against the synthetic share: the mix sweep of issue 5, as a table and a PNG.

    python benchmarks/plot_mix.py [--workspace WS] [--dataset digits@working] [--seeds 0 1 2 3 4]
                                  [--out benchmarks/mix.png] [--dvc]

Runs ``registry.downstream.train.train`` with the digits ``train`` section of the workspace's params.yaml
(defaults when absent) for synthetic_share 0, 0.25, 0.5, 0.75 and 1, plus two references: "all real"
(every real train image, no synthetic; train_size = the whole train split) and "unfiltered synthetic only"
(share 1, rejected images included). Each row is the mean (and min-max) over ``--seeds``; the seed picks
the real few-shot images, the synthetic images and the initial weights.

Without ``--workspace`` it builds one under the system temp folder: the default recipe (1,000 images,
about 40 s on 2 cores) generated and filtered by the library. With ``--workspace`` it copies that
workspace's ``data/NAME`` (and ``releases/NAME``) into a temporary one, so nothing in the original is
written. Runs go to a temporary MLflow SQLite store; the temporary folder is removed at the end.

With ``--dvc`` every point is a DVC experiment instead: ``dvc exp run --temp -S
datasets.digits.train.synthetic_share=... -S datasets.digits.train.seed=... ...`` in the workspace
(default: this repository, after ``make run``), which is left as it was; the runs go to its MLflow store,
the experiments stay in ``dvc exp show``, and the table and plot are read back from ``dvc exp show
--json``. Same numbers, about 10 s of DVC overhead more per point."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from registry.records.config import TrainParams, load_params  # noqa: E402
from registry.store.releases import parse_ref  # noqa: E402

SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)


def build_workspace(ws: Path) -> None:
    """The default recipe, generated and filtered, in ``ws`` (a copy of the recipe and the model)."""
    from generators.filter import filter_manifest
    from generators.generate import generate

    shutil.copytree(REPO / "generators/tiny_digits/model", ws / "generators/tiny_digits/model")
    (ws / "recipes").mkdir()
    shutil.copy(REPO / "recipes/digits.yaml", ws / "recipes/digits.yaml")
    params = load_params(REPO / "params.yaml")
    started = time.perf_counter()
    res = generate(Path("recipes/digits.yaml"), ws, "data/digits/candidates", params.generate)
    f = filter_manifest("data/digits/candidates", ws, "data/digits/filtered", params.filter)
    print(
        f"built {res.images} images in {time.perf_counter() - started:.0f} s; "
        f"{f.accepted}/{f.total} accepted {dict(f.reasons)}"
    )


def copy_workspace(src: Path, ws: Path, name: str) -> None:
    for part in (f"data/{name}", f"releases/{name}"):
        if (src / part).is_dir():
            shutil.copytree(src / part, ws / part, ignore=shutil.ignore_patterns("train"))


def configs(base: TrainParams, real_train: int) -> list[tuple[str, float, TrainParams]]:
    """(label, x position, params) for every point of the sweep."""
    rows = [(f"share {s:g}", s, base.model_copy(update={"synthetic_share": s})) for s in SHARES]
    rows.append(
        (
            f"all real ({real_train})",
            0.0,
            base.model_copy(update={"synthetic_share": 0.0, "real_per_class": -1, "train_size": real_train}),
        )
    )
    rows.append(
        (
            "unfiltered synthetic only",
            1.0,
            base.model_copy(update={"synthetic_share": 1.0, "use_rejected": True}),
        )
    )
    return rows


def plot(results: list[dict], base: TrainParams, dataset: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = [r for r in results if r["label"].startswith("share")]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    xs = [r["x"] for r in sweep]
    means = [r["mean"] for r in sweep]
    err = [[r["mean"] - r["min"] for r in sweep], [r["max"] - r["mean"] for r in sweep]]
    ax.errorbar(
        xs, means, yerr=err, marker="o", capsize=3, label=f"{base.real_per_class} real/digit + synthetic"
    )
    for r, style in zip([r for r in results if not r["label"].startswith("share")], ("--", ":"), strict=True):
        ax.axhline(r["mean"], linestyle=style, color="grey", label=r["label"])
    ax.set_xlabel(f"synthetic share of {base.train_size} training images")
    ax.set_ylabel("held-out real accuracy (360 images)")
    ax.set_title(f"Real/synthetic mix on {dataset}")
    ax.set_xticks(list(SHARES))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def in_process(ws: Path, name: str, dataset: str):
    """Run one point with ``registry.downstream.train.train`` in this process.

    -> (metrics, n_real, n_synthetic)"""
    from registry.downstream.train import train

    def run(params: TrainParams) -> tuple[dict, int, int]:
        p = params.model_copy(update={"metrics": f"data/{name}/train/{params.seed}.json"})
        with contextlib.redirect_stderr(io.StringIO()):  # MLflow's "Created version N" lines
            res = train(ws, p, dataset)
        return res.metrics, res.n_real, res.n_synthetic

    return run


def through_dvc(ws: Path):
    """Run one point as ``dvc exp run --temp -S ...`` in workspace ``ws`` (left untouched; the runs go to
    its MLflow store unless MLFLOW_TRACKING_URI is set) -> (metrics, n_real, n_synthetic)."""
    import json
    import re
    import subprocess

    dvc = str(Path(sys.executable).with_name("dvc"))
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{ws.resolve() / 'mlflow.db'}")

    def run(params: TrainParams) -> tuple[dict, int, int]:
        sets = {
            "synthetic_share": params.synthetic_share,
            "seed": params.seed,
            "real_per_class": params.real_per_class,
            "train_size": params.train_size,
            "use_rejected": str(params.use_rejected).lower(),
        }
        cmd = [
            dvc,
            "exp",
            "run",
            "--temp",
            *[a for k, v in sets.items() for a in ("-S", f"datasets.digits.train.{k}={v}")],
        ]
        proc = subprocess.run(cmd, cwd=ws, env=env, capture_output=True, text=True)
        found = re.search(r"Ran experiment\(s\): (\S+)", proc.stdout)
        if proc.returncode != 0 or not found:
            raise SystemExit(f"{' '.join(cmd[1:])} failed:\n{proc.stdout}\n{proc.stderr}")
        show = [dvc, "exp", "show", "--json"]
        shown = subprocess.run(show, cwd=ws, env=env, capture_output=True, text=True)
        for exp in [e for base in json.loads(shown.stdout) for e in base["experiments"] or []]:
            for rev in exp["revs"]:
                if rev["name"] == found.group(1):
                    m = rev["data"]["metrics"][params.metrics]["data"]
                    return m, m["n_real"], m["n_synthetic"]
        raise SystemExit(f"experiment {found.group(1)} is not in `dvc exp show --json`")

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", type=Path, help="workspace with a filtered manifest (default: build one)")
    ap.add_argument("--dataset", default=None, help="dataset ref (default: params.yaml's train.dataset)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "mix.png")
    ap.add_argument(
        "--dvc",
        action="store_true",
        help="run every point as `dvc exp run --temp -S datasets.digits.train....` in --workspace "
        "(default: this repo, after `make run`); the experiments stay listed by `dvc exp show`",
    )
    args = ap.parse_args()

    from generators.tiny_digits.real_digits import load_splits

    source = (args.workspace or REPO).resolve()
    base = load_params(source / "params.yaml").dataset("digits").train
    dataset = args.dataset or base.dataset
    if args.dvc and args.dataset:
        raise SystemExit("--dvc trains on params.yaml's train.dataset; change it there, not with --dataset")
    name = parse_ref(dataset)[0] if dataset != "working" else "digits"
    real_train = len(load_splits()[0].labels)
    with tempfile.TemporaryDirectory(prefix="synthreg-mix-") as tmp:
        if args.dvc:
            run = through_dvc(source)
        else:
            ws = Path(tmp)
            if args.workspace:
                copy_workspace(source, ws, name)
            else:
                build_workspace(ws)
            os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{ws / 'mlflow.db'}"
            run = in_process(ws, name, dataset)
        results = []
        for label, x, params in configs(base, real_train):
            accs, gaps, sizes = [], [], ""
            started = time.perf_counter()
            for seed in args.seeds:
                metrics, n_real, n_synthetic = run(params.model_copy(update={"seed": seed}))
                accs.append(metrics["accuracy"])
                gaps.append(metrics["worst_group_gap"])
                sizes = f"{n_real} + {n_synthetic}"
            row = {
                "label": label,
                "x": x,
                "sizes": sizes,
                "mean": statistics.mean(accs),
                "min": min(accs),
                "max": max(accs),
                "gap": statistics.mean(gaps),
                "seconds": (time.perf_counter() - started) / len(args.seeds),
            }
            results.append(row)
            print(
                f"{label:28} {sizes:>12}  acc {row['mean']:.4f} [{row['min']:.4f}-{row['max']:.4f}]  "
                f"gap {row['gap']:.4f}  {row['seconds']:.1f} s/run",
                flush=True,
            )

    how = "dvc exp run --temp" if args.dvc else "in process"
    print(f"\n{dataset}; epochs {base.epochs} x {base.train_size} examples; seeds {args.seeds}; {how}\n")
    print("| mix | real + synthetic | accuracy (mean) | min-max | worst-group gap (mean) |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        spread = f"{r['min']:.4f}-{r['max']:.4f}"
        print(f"| {r['label']} | {r['sizes']} | {r['mean']:.4f} | {spread} | {r['gap']:.4f} |")
    plot(results, base, dataset, args.out)
    print(f"\nplot: {args.out}")


if __name__ == "__main__":
    main()
