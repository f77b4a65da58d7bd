"""The verdict, the exit status and the files of a run: gpucheck.json (every check, every bench
row, the environment, the stages' seconds) and summary.md (the same for a reader)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from fused_inception.gpucheck import EXIT_FAILED, EXIT_OK
from fused_inception.gpucheck.env import environment_lines

STAGES = ("parity", "gradient", "multi_gpu", "sanitizer", "graph")


def failed_checks(checks: Sequence[dict]) -> list[dict]:
    """Checks that ran and failed (ok False; None is skipped)."""
    return [c for c in checks if c["ok"] is False]


def verdict(checks: Sequence[dict]) -> str:
    """ "FAIL" if any check failed, "PASS" if at least one passed and none failed, else
    "NOTHING CHECKED"."""
    if failed_checks(checks):
        return "FAIL"
    return "PASS" if any(c["ok"] for c in checks) else "NOTHING CHECKED"


def exit_status(checks: Sequence[dict]) -> int:
    """EXIT_FAILED if any check failed, else EXIT_OK."""
    return EXIT_FAILED if failed_checks(checks) else EXIT_OK


def _cell(value, fmt: str = "") -> str:
    if value is None:
        return "-"
    text = format(value, fmt) if fmt else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def check_counts(checks: Sequence[dict]) -> list[tuple[str, int, int, int]]:
    """(stage, passed, failed, skipped) per stage, in STAGES order, then any other stage."""
    stages = list(STAGES) + sorted({c["stage"] for c in checks} - set(STAGES))
    counts = []
    for stage in stages:
        mine = [c["ok"] for c in checks if c["stage"] == stage]
        if mine:
            counts.append((stage, mine.count(True), mine.count(False), mine.count(None)))
    return counts


BENCH_HEADER = (
    "block",
    "batch",
    "dtype",
    "impl",
    "median ms",
    "speedup",
    "TFLOP/s",
    "roofline",
    "compile s",
    "MODEL ms",
    "measured / MODEL",
)


def bench_table(rows: Sequence[dict]) -> list[str]:
    """One line per bench row: measurement, roofline fraction and the MODEL beside it."""
    cells = [
        [
            r["block"],
            str(r["batch"]),
            r["dtype"],
            r["impl"],
            _cell(r["median_ms"], ".4g"),
            _cell(r["speedup"], ".2f") + "x",
            _cell(r["tflops"], ".3g"),
            _cell(r["roofline_fraction"], ".0%"),
            _cell(r["compile_s"], ".1f"),
            _cell(r.get("model_ms"), ".4g"),
            _cell(r.get("measured_over_model"), ".2f"),
        ]
        for r in rows
    ]
    return _table(BENCH_HEADER, cells)


def markdown(
    env: dict,
    checks: Sequence[dict],
    rows: Sequence[dict],
    budget: dict,
    notes: Sequence[str] = (),
) -> str:
    """summary.md: verdict, environment, stage times, check counts, failures and skips, the
    benchmark table."""
    failed = failed_checks(checks)
    lines = [
        "# fused_inception gpucheck",
        "",
        f"**Verdict: {verdict(checks)}** ({len(failed)} of {len(checks)} checks failed; exit "
        f"status {exit_status(checks)})",
        "",
        *(f"    {line}" for line in environment_lines(env)),
        "",
        "## Stages",
        "",
        *_table(
            ("stage", "seconds"),
            [[name, f"{s:.1f}"] for name, s in budget.get("stages_s", {}).items()]
            + [["total", f"{budget.get('elapsed_s', 0):.1f} (budget {budget.get('total_s')})"]],
        ),
        "",
        "## Checks",
        "",
        *_table(
            ("stage", "passed", "failed", "skipped"),
            [[s, str(p), str(f), str(k)] for s, p, f, k in check_counts(checks)],
        ),
    ]
    listed = [c for c in checks if c["ok"] is not True]
    if listed:
        lines += ["", "### Failed and skipped", ""]
        lines += _table(
            ("stage", "check", "result", "detail"),
            [
                [
                    c["stage"],
                    _cell(c["name"]),
                    "FAIL" if c["ok"] is False else "skipped",
                    _cell(c.get("detail")),
                ]
                for c in listed
            ],
        )
    lines += ["", "## Benchmark", ""]
    if rows:
        lines += [
            "Medians of interleaved CUDA-event timings (fused_inception.bench). roofline: the "
            "fused roofline bound / median. MODEL ms: the work report's roofline MODEL (an "
            "estimate, not a measurement): the fused launches for fused rows (needs "
            "--work-json), the unfused cuDNN-class sequence for eager and compile rows.",
            "",
            *bench_table(rows),
        ]
    else:
        lines.append("(no rows)")
    if notes:
        lines += ["", "## Notes", "", *(f"- {n}" for n in notes)]
    return "\n".join(lines) + "\n"


def write_outputs(
    out_dir: str,
    env: dict,
    checks: Sequence[dict],
    rows: Sequence[dict],
    budget: dict,
    notes: Sequence[str] = (),
) -> tuple[str, str]:
    """Write gpucheck.json and summary.md into out_dir; their paths."""
    os.makedirs(out_dir, exist_ok=True)
    json_path = os.path.join(out_dir, "gpucheck.json")
    md_path = os.path.join(out_dir, "summary.md")
    data = {
        "verdict": verdict(checks),
        "exit_status": exit_status(checks),
        "environment": env,
        "budget": budget,
        "checks": list(checks),
        "bench_rows": list(rows),
        "notes": list(notes),
    }
    with open(json_path, "w") as f:
        json.dump(data, f, indent=1, default=str)
    with open(md_path, "w") as f:
        f.write(markdown(env, checks, rows, budget, notes))
    return json_path, md_path
