"""Human-readable renderings of trace and impact results (the CLI's output without --json)."""

from __future__ import annotations

from registry import tracking


def _short(d: str | None, n: int = 16) -> str:
    return f"{d[:n]}..." if d and len(d) > n else str(d)


def format_trace(t: dict) -> list[str]:
    lines = []
    if "model" in t:
        m = t["model"]
        lines.append(f"model {m['name']}/{m['version']} ({m['status']}) <- run {m['run_id']}")
    run = t["run"]
    lines.append(
        f"run {run['run_id']} ({run['run_name']}) in experiment {run['experiment_id']}, {run['status']}"
        f"  [{t['tracking_uri']}]"
    )
    share = run["tags"].get(tracking.TAG_SHARE)
    if share is not None:
        lines.append(f"  synthetic share {share}")
    for d in t["datasets"]:
        lines.append("")
        head = f"dataset {d['name']}" + (f" ({d['context']})" if d.get("context") else "")
        if d.get("withdrawn"):
            head += "  ** WITHDRAWN **"
        lines.append(head)
        lines.append(f"  logged digest {d['digest']}  source {d['source_url'] or '-'}")
        for w in d["warnings"]:
            lines.append(f"  !! {w}")
        if d.get("drawn"):
            x = d["drawn"]
            lines.append(
                f"  drew {x['count']} sample(s), listed in artifact {x['artifact']} "
                f"(sha256 {_short(x['sha256'])})"
            )
        if d.get("unreleased"):
            lines += _unreleased(d)
            continue
        if not d.get("released"):
            lines += [f"  note: {n}" for n in d["notes"]]
            continue
        if d["digest_matches"]:
            lines.append(f"  digest matches the release's manifest sha256 ({d['digest_compared']})")
        else:
            lines.append("  digest DOES NOT MATCH the release's manifest sha256")
        lines.append(
            f"  released {d['created_at'][:16]} by {d['actor']} from git {d['git_commit'][:12]}; "
            f"licence {d['dataset_licence']}"
        )
        if d.get("derived_from"):
            x = d["derived_from"]
            lines.append(
                f"  derived from {x['parent']} without {x['removed']} sample(s): {x['reason']}"
                + (f" (sources {', '.join(x['excluded_sources'])})" if x["excluded_sources"] else "")
            )
        s, f = d["samples"], d["filter"]
        if s:
            lines.append(
                f"  samples {s['count']} ({s['accepted']} accepted); seeds {s['seed_min']}..{s['seed_max']} "
                f"(recipe seed {d['recipe_seed']})"
            )
        reasons = ", ".join(f"{k} {v}" for k, v in f["reasons"].items())
        lines.append(f"  filter: {f['accepted']} accepted / {f['rejected']} rejected ({reasons})")
        for g in d["generators"]:
            lines.append(
                f"  generator {g['name']} [{g['backend']}, {g['licence']}] weights {g['weights_digest']}"
                f" ({g['images']} images)"
            )
        for p in d["prompt_templates"]:
            lines.append(f"  prompt template {p!r}")
        for src in d["sources"]:
            status = src["status"] + (
                ", now on the withdrawn list" if src["withdrawn_since"] is not None else ""
            )
            only = f" (identities {', '.join(src['identities'])})" if src.get("identities") else ""
            lines.append(f"  source {src['name']} [{src['role']}, {status}] {src['licence']}{only}")
        pol = d["policy"]
        bad = {k: v for k, v in pol["results"].items() if v != "pass"}
        lines.append(f"  policy {'passed' if pol['passed'] else 'FAILED'}" + (f" ({bad})" if bad else ""))
        for w in pol["waivers"]:
            lines.append(f"  waiver {w['rule_id']} by {w['approver']} until {w['expires']}: {w['reason']}")
        lines += [f"  note: {n}" for n in d["notes"]]
    shown = {w for d in t["datasets"] for w in d["warnings"]}
    rest = [w for w in t["warnings"] if w not in shown]
    if rest:
        lines.append("")
        lines += [f"warning: {w}" for w in rest]
    return lines


def _unreleased(d: dict) -> list[str]:
    """A working input: what its manifest (when found) and the run's logged profile say."""
    lines = [
        f"  UNRELEASED manifest sha256 {d['manifest_sha256']}  DVC md5 {d['dvc_md5'] or '-'}",
        f"  found in {d['resolved_from']}"
        if d["resolved"]
        else f"  NOT FOUND; looked in {'; '.join(d['looked'])}",
    ]
    s, f = d["samples"], d["filter"]
    if s:
        lines.append(
            f"  samples {s['count']} ({s['accepted']} accepted); seeds {s['seed_min']}..{s['seed_max']} "
            f"(recipe seed {d['recipe_seed']}, recipe sha256 {_short(d['recipe_sha256'])})"
        )
        reasons = ", ".join(f"{k} {v}" for k, v in f["reasons"].items())
        lines.append(f"  filter: {f['accepted']} accepted / {f['rejected']} rejected ({reasons})")
    for g in d["generators"]:
        lines.append(
            f"  generator {g['name']} [{g['backend']}, {g['licence']}] weights {g['weights_digest']}"
            f" ({g['images']} images)"
        )
    for p in d["prompt_templates"]:
        lines.append(f"  prompt template {p!r}")
    for src in d["sources"]:
        status = src["status"] + (", now on the withdrawn list" if src["withdrawn_since"] is not None else "")
        lines.append(f"  source {src['name']} [{src['role']}, {status}] {src['licence']}")
    pol = d["policy"]
    verdict = {True: "passed", False: "FAILED", None: "never validated"}[pol["passed"]]
    lines.append(f"  policy (as logged) {verdict}")
    lines += [f"  note: {n}" for n in d["notes"]]
    return lines


def format_image(t: dict) -> list[str]:
    how = "exact sha256" if t["match"] == "exact" else f"perceptual hash (phash {t['phash']})"
    lines = [f"{t['file']}: {len(t['images'])} sample(s) by {how}, in {', '.join(t['versions'])}"]
    for im in t["images"]:
        lines.append("")
        dist = f", distance {im['distance']}" if t["match"] != "exact" else ""
        lines.append(f"sample {im['sample_id']} (identity {im['identity']}{dist})")
        lines.append(
            f"  generator {im['generator_name']} [{im['generator_licence']}] weights {im['weights_digest']}"
        )
        lines.append(f"  prompt {im['prompt']!r}  negative {im['negative_prompt']!r}")
        lines.append(
            f"  seed {im['seed']}, {im['steps']} steps, guidance {im['guidance']}, "
            f"{im['width']}x{im['height']}"
        )
        lines.append(f"  image sha256 {im['image_sha256']}  in {im['shard']}:{im['member']}")
        for v in im["versions"]:
            flag = "  ** WITHDRAWN **" if v["withdrawn"] else ""
            lines.append(f"  in {v['release']}: {v['decision']} ({v['reason']}){flag}")
        for src in im["versions"][0]["sources"]:
            lines.append(f"  source {src['name']} [{src['role']}, {src['status']}] {src['licence']}")
    if t["warnings"]:
        lines.append("")
        lines += [f"warning: {w}" for w in t["warnings"]]
    return lines


def format_impact(t: dict) -> list[str]:
    ((kind, value),) = t["selector"].items()
    c = t["counts"]
    lines = [
        f"{kind} {value!r}: {c['versions']} version(s), {c['samples']} sample(s) ({c['accepted']} accepted), "
        f"{c['runs']} run(s), {c['model_versions']} model version(s)"
    ]
    for v in t["versions"]:
        flag = "  ** WITHDRAWN **" if v["withdrawn"] else ""
        if v.get("unreleased"):
            flag = f"  ** UNRELEASED ** (manifest {_short(v['manifest_sha256'])} in {v['resolved_from']})"
        lines.append(f"  version {v['release']}: {v['samples']} samples ({v['accepted']} accepted){flag}")
    for r in t["runs"]:
        drew = {True: "; drew it", False: "", None: ""}[r.get("drew")] if "sample" in t["selector"] else ""
        lines.append(
            f"  run {r['run_id']} ({r['run_name']}, experiment {r['experiment_id']}, {r['status']}) "
            f"used {', '.join(r['datasets'])}" + (" [UNRELEASED]" if r.get("unreleased") else "") + drew
        )
    for u in t.get("unresolved_runs", []):
        lines.append(f"  run {u['run_id']} on {u['dataset']}: UNRESOLVED ({u['why']})")
    for m in t["model_versions"]:
        lines.append(f"  model {m['name']}/{m['version']} ({m['status']}) from run {m['run_id']}")
    lines += [f"warning: {w}" for w in t["warnings"]]
    return lines
