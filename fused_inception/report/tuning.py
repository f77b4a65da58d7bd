"""The tuning table: which autotuning candidates compile clean on sm_80 and sm_90.

    python -m fused_inception.report --tuning [--write] [--check] [--json PATH]
                                     [--blocks 3a ...] [--dtypes float16 ...] [--arch sm_80 ...]

On a GPU the Triton launchers time a few candidate configs per shape and keep the fastest
(fused_inception/triton/autotune.py). Which candidates may run is decided here, ahead of time:
GoogLeNet's nine blocks (both forms, 16-bit, batches 1, 2, 8, 32 and 128) run with every launch
intercepted and every launcher handing over each of its candidates
(`autotune.capture_candidates`); each distinct specialization Triton's JIT would compile for
them (fused_inception/report/specialization.py) is compiled for each arch, and a config is
clean on an arch when every one of its specializations compiled with no spill and no stack,
on tensor cores, within the arch's shared memory (the compile report's checks,
fused_inception/report/records.py). The rest are refused, with the reason.

--write stores the table as fused_inception/triton/tuning_table.json (what autotune reads).
--check compares with that file instead: every candidate captured (all nine blocks, always)
must be listed for every arch, and the configs compiled (those of --blocks/--dtypes/--arch)
must have the status and registers the file records; exit 1 otherwise. The tests run the check
on a slice (tests/test_autotune.py); a full run compiles about 600 builds (about 10 minutes on
2 cores, less with Triton's cache).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from fused_inception.report.records import ARCHS, SIXTEEN_BIT, record_problems
from fused_inception.report.specialization import (
    CapturedSpecialization,
    capture_specializations,
    googlenet_forwards,
)


def _config_classes() -> dict[str, Any]:
    from fused_inception.triton.block_1x1 import Block1x1Config
    from fused_inception.triton.block_kxk import BlockKxkConfig

    return {"block_1x1": Block1x1Config, "block_kxk": BlockKxkConfig}


def capture(archs: Sequence[str], blocks: Sequence[str] | None = None) -> list:
    """Every distinct specialization of every candidate of GoogLeNet's 16-bit launches."""
    import torch

    from fused_inception.triton import autotune

    forwards = googlenet_forwards(
        blocks, dtypes=(torch.float16, torch.bfloat16), layouts=("channels_last",)
    )
    with autotune.capture_candidates():
        return capture_specializations(forwards, archs)


def config_of(entry: CapturedSpecialization) -> tuple[str, str, tuple[int, ...]]:
    """(family, dtype, config values in the family's Config field order) of a specialization."""
    from fused_inception.report.triton import _by_name, _unlisted_name

    spec = entry.spec
    family = spec.fn.__name__.removesuffix("_kernel")
    cls = _config_classes()[family]
    constexprs = _by_name(spec.fn, spec.constexprs)
    values = tuple(
        int(spec.options[f]) if f in ("num_warps", "num_stages") else int(constexprs[f.upper()])
        for f in cls._fields
    )
    return family, _unlisted_name(spec)[1], values


def _dtype_of(label: str) -> str:
    """The dtype of a launch label "3a torchvision float16 N=8 channels_last"."""
    return label.split()[2]


def _block_of(label: str) -> str:
    return label.split()[0]


def compile_entries(entries: Sequence[CapturedSpecialization]) -> list[tuple[Any, dict]]:
    """(entry, compile record) for each, the record as the compile report makes it."""
    from fused_inception.report.triton import _captured_build, compile_build

    out = []
    start = time.perf_counter()
    for i, entry in enumerate(entries, 1):
        build = _captured_build(entry, None)
        record = compile_build(build, entry.spec.arch)
        out.append((entry, record))
        if i % 25 == 0 or i == len(entries):
            elapsed = time.perf_counter() - start
            print(f"  compiled {i}/{len(entries)} in {elapsed:.0f} s", file=sys.stderr, flush=True)
    return out


def build_table(compiled: Sequence[tuple[Any, dict]]) -> dict:
    """The table (autotune.TABLE_FORMAT) of compiled specializations."""
    import triton

    from fused_inception.triton import autotune

    per_config: dict[tuple, list[dict]] = {}
    for entry, record in compiled:
        family, dtype, values = config_of(entry)
        per_config.setdefault((entry.spec.arch, family, dtype, values), []).append(record)
    archs: dict = {}
    for (arch, family, dtype, values), records in sorted(per_config.items()):
        slot = archs.setdefault(arch, {}).setdefault(family, {})
        fields = list(_config_classes()[family]._fields)
        slot = slot.setdefault(dtype, {"fields": fields, "clean": [], "refused": []})
        problems = [
            f"{r['kernel']}: {'; '.join(record_problems(r))}" for r in records if record_problems(r)
        ]
        if problems:
            slot["refused"].append({"config": list(values), "why": problems[0]})
        else:
            slot["clean"].append(
                {
                    "config": list(values),
                    "registers": max(r["registers"] for r in records),
                    "shared_bytes": max(r["shared_bytes"] for r in records),
                    "specializations": len(records),
                }
            )
    return {
        "format": autotune.TABLE_FORMAT,
        "generated_by": "python -m fused_inception.report --tuning --write",
        "triton": triton.__version__,
        "archs": archs,
    }


def _status(table: dict) -> dict[tuple, tuple[str, int | None]]:
    """(arch, family, dtype, config) -> ("clean", registers) or ("refused", None)."""
    found = {}
    for arch, families in table.get("archs", {}).items():
        for family, dtypes in families.items():
            for dtype, slot in dtypes.items():
                for item in slot["clean"]:
                    found[(arch, family, dtype, tuple(item["config"]))] = (
                        "clean",
                        item["registers"],
                    )
                for item in slot["refused"]:
                    found[(arch, family, dtype, tuple(item["config"]))] = ("refused", None)
    return found


def check(committed: dict, captured: Sequence[CapturedSpecialization], computed: dict) -> list[str]:
    """What differs between the committed table and this run: candidates it does not list,
    and configs whose status or registers differ from those compiled now."""
    listed = _status(committed)
    problems = []
    for entry in captured:
        family, dtype, values = config_of(entry)
        key = (entry.spec.arch, family, dtype, values)
        if key not in listed:
            problems.append(f"not in the table: {key} (run --tuning --write)")
    for key, status in _status(computed).items():
        if listed.get(key) != status:
            problems.append(f"{key}: compiled now {status}, the table says {listed.get(key)}")
    return sorted(set(problems))


def summary(table: dict) -> list[str]:
    lines = []
    for arch, families in sorted(table["archs"].items()):
        for family, dtypes in sorted(families.items()):
            for dtype, slot in sorted(dtypes.items()):
                lines.append(
                    f"{arch} {family:<10} {dtype:<9} clean {len(slot['clean']):>3}  "
                    f"refused {len(slot['refused']):>3}"
                )
                for item in slot["refused"]:
                    lines.append(f"    refused {item['config']}: {item['why']}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    from fused_inception.configs import GOOGLENET_BLOCKS
    from fused_inception.triton import autotune

    parser = argparse.ArgumentParser(
        prog="python -m fused_inception.report --tuning",
        description="Compile every autotuning candidate of GoogLeNet's launches for sm_80/sm_90 "
        "and list which compile clean (the table autotune prunes by).",
    )
    parser.add_argument("--write", action="store_true", help=f"write {autotune.TABLE_PATH.name}")
    parser.add_argument("--check", action="store_true", help="compare with the committed table")
    parser.add_argument("--json", metavar="PATH", help="write the table there too")
    parser.add_argument("--blocks", nargs="+", choices=list(GOOGLENET_BLOCKS))
    parser.add_argument("--dtypes", nargs="+", choices=list(SIXTEEN_BIT), default=SIXTEEN_BIT)
    parser.add_argument("--arch", nargs="+", choices=list(ARCHS), default=list(ARCHS))
    args = parser.parse_args(argv)
    partial = args.blocks or set(args.dtypes) != set(SIXTEEN_BIT) or set(args.arch) != set(ARCHS)
    if args.write and partial:
        parser.error("--write needs the whole table: no --blocks, --dtypes or --arch")
    start = time.perf_counter()
    # The check of coverage always captures every block and arch (capture is cheap).
    captured = capture(ARCHS if args.check else args.arch, None if args.check else args.blocks)
    print(
        f"captured {len(captured)} specializations in {time.perf_counter() - start:.0f} s",
        file=sys.stderr,
        flush=True,
    )
    selected = [
        entry
        for entry in captured
        if entry.spec.arch in args.arch
        and any(
            _dtype_of(label) in args.dtypes
            and (args.blocks is None or _block_of(label) in args.blocks)
            for label in entry.launches
        )
    ]
    # A config is clean only if all its specializations are: compile every one of those the
    # selection touches, including those launched by other blocks.
    touched = {(entry.spec.arch, config_of(entry)) for entry in selected}
    selected = [e for e in captured if (e.spec.arch, config_of(e)) in touched]
    table = build_table(compile_entries(selected))
    for line in summary(table):
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(table, f, indent=1)
    if args.write:
        autotune.TABLE_PATH.write_text(json.dumps(table, indent=1) + "\n")
        print(f"wrote {autotune.TABLE_PATH}")
    if args.check:
        problems = check(autotune.table(), captured, table)
        for p in problems:
            print(f"MISMATCH {p}")
        print(f"check: {len(problems)} mismatches")
        if problems:
            return 1
    # A pick that is not clean would also fail the compile report; here it only prints.
    return 0
