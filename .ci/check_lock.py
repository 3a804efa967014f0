"""What `.ci/check-lock` compares (issue 9), kept out of the shell script so that a test can run it.

generate@digits samples the tiny-digits model on the CPU, and torch's CPU kernels differ in the last
bits between CPU kinds: an AMD EPYC with AVX2 and an Intel Xeon with AVX-512 give a few different
pixels, so different shard bytes, and every entry downstream of them differs too (seen on CI's two
kinds, 2026-12-05; forcing torch, MKL and oneDNN to AVX2 on the Intel did not give the AMD's bytes).
dvc.lock is locked on one kind, which `.ci/lock-kind` names. On that kind the check is whole: a fresh
clone's entries equal the committed ones. On another kind it cannot be, and the script says so and
checks what still holds there:

- `stale`: every entry's command, parameters and dependencies that are not pipeline data (code, the
  recipe, the policies) carry the committed md5s, so dvc.lock is not stale for the code on HEAD;
- `same`: two runs on this machine give the same entries, so outputs carry no per-run values.

`md5 STAGE PATH` prints what DVC records for a dependency of a stage that is not pipeline data, as
`dvc commit` would hash it now (a folder's `.dir` md5 with its size and file count): for a change of
code alone, whose outputs a run on any kind shows unchanged, on a machine of another kind than the lock's.

Usage: python .ci/check_lock.py kind
       python .ci/check_lock.py whole|stale|same A B     (A, B: dvc.lock files; `HEAD` is git's)
       python .ci/check_lock.py md5 STAGE PATH           (e.g. md5 validate@digits policies)
"""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import yaml

STAGES = ("generate@digits", "filter@digits", "validate@digits")
DATA = "data/"  # pipeline outputs, and the dependencies that are another stage's outputs


def kind() -> str:
    """The CPU kind that decides generate's bytes: the vendor, torch's CPU capability and version."""
    import torch

    vendor = platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        lines = cpuinfo.read_text().splitlines()
        vendor = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("vendor_id")), vendor)
    return f"{vendor} {torch.backends.cpu.get_cpu_capability()} torch {torch.__version__}"


def read(lock: str) -> dict:
    if lock == "HEAD":
        git = ["git", "show", "HEAD:dvc.lock"]
        text = subprocess.run(git, capture_output=True, text=True, check=True).stdout
    else:
        text = Path(lock).read_text()
    stages = yaml.safe_load(text)["stages"]
    return {s: stages.get(s) for s in STAGES}


def code(entry: dict | None) -> dict | None:
    """An entry without what the pipeline's data decides: its outputs and its data dependencies."""
    if entry is None:
        return None
    deps = [d for d in entry.get("deps", []) if not d["path"].startswith(DATA)]
    return {k: v for k, v in entry.items() if k not in ("deps", "outs")} | {"deps": deps}


def differ(a: dict, b: dict, how: str) -> list[str]:
    if how == "stale":
        return [s for s in STAGES if code(a[s]) != code(b[s])]
    return [s for s in STAGES if a[s] != b[s]]


SAYS = {
    "whole": "a fresh clone's {bad} differ from the committed entries; run `dvc repro` and commit dvc.lock, "
    "and keep per-run values (times, hosts) out of stage outputs",
    "stale": "the committed {bad} name other code, recipe, policies or parameters than HEAD's: dvc.lock is "
    "stale; relock (CONTRIBUTING.md, 'Data and weights') and commit it",
    "same": "two runs of {bad} on this machine differ: a stage output carries a per-run value (a time, a "
    "host, a run id); keep those in the stage's audit event",
}


def dependency_md5(stage: str, path: str, root: Path = Path(".")) -> dict:
    """The entry DVC would write for dependency ``path`` of ``stage`` (md5, size, and a folder's file
    count), hashed by DVC's own code from the files in ``root`` (``.dvcignore`` applies)."""
    if path.startswith(DATA):
        raise SystemExit(f"{path} is pipeline data: its md5 comes from a run, not from the tree")
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        for found in repo.index.stages:
            if found.addressing == stage:
                for dep in found.deps:
                    if str(dep.def_path) == path:
                        dep.save()
                        out = {"path": path, "hash": "md5", "md5": dep.hash_info.value, "size": dep.meta.size}
                        return out | ({"nfiles": dep.meta.nfiles} if dep.meta.isdir else {})
    raise SystemExit(f"no dependency {path} of stage {stage} in dvc.yaml")


def main(argv: list[str]) -> int:
    if argv[:1] == ["kind"]:
        print(kind())
        return 0
    if argv[:1] == ["md5"] and len(argv) == 3:
        print(yaml.safe_dump([dependency_md5(argv[1], argv[2])], sort_keys=False), end="")
        return 0
    if len(argv) != 3 or argv[0] not in SAYS:
        sys.exit(__doc__)
    how, a, b = argv
    bad = differ(read(a), read(b), how)
    if bad:
        print("dvc.lock: " + SAYS[how].format(bad=", ".join(bad)), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
