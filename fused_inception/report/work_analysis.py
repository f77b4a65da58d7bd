"""The work report's analysis (fused_inception.report.work): per kernel and block, the counted
work, the roofline MODEL of both GPUs (fused_inception.report.work_model) at batch N and 128,
the unfused sequence's MODEL and the verdict on the targets (TARGETS)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from fused_inception.configs import GOOGLENET_BLOCKS
from fused_inception.report import work_model as wm
from fused_inception.report.counting import KIND_COUNTERS

MODEL_BATCH = 128
# The targets of the Triton kernels' rewrite, per block and branch-3 kernel size.
TARGETS = {
    "exec_per_useful": {3: 1.25, 5: 1.30},
    "gathered": 0,
    "bytes_per_flop": 0.025,
    "launches": 2,
    "bank_conflict_degree": 1,  # counted on the shim only (cuda backend)
}


def _scales(name: str, tensor: dict, batch: int, activation: set[int]) -> bool:
    """Whether a tensor's bytes grow with the batch: the block's input and output, and any other
    argument whose first dimension is the batch and whose name is not a weight's or bias's."""
    if tensor["key"][0] in activation:
        return True
    return bool(tensor["shape"]) and tensor["shape"][0] == batch and not name.startswith(("w", "b"))


def match_build(records: Sequence[dict], launch: dict, arch: str, dtype: str) -> dict | None:
    """The compile report's record (python -m fused_inception.report --json) of the build this
    launch runs: same family (the function without "_kernel"), dtype and arch, and every field
    of the build name that is a launch parameter has the launch's value."""
    names = {"BM": "BLOCK_M", "BN": "BLOCK_N", "BR": "BLOCK_R", "BK": "BLOCK_K"}
    names |= {"warps": "num_warps", "stages": "num_stages"}
    params = {**launch["constexprs"], "num_warps": launch["num_warps"]}
    params["num_stages"] = launch["num_stages"]
    family = launch["function"].removesuffix("_kernel")
    for rec in records:
        if rec.get("arch") != arch or not rec.get("registers"):
            continue
        head, _, fields = rec["kernel"].partition("[")
        parts = fields.rstrip("]").split(",")
        if head != family or parts[0] != dtype:
            continue
        compared = ok = 0
        for part in parts[1:]:
            key, _, value = part.partition("=")
            key = names.get(key, key)
            if key in params and params[key] is not None:
                want = params[key]
                compared += 1
                ok += str(int(want) if isinstance(want, (bool, int)) else want) == value
        if compared and ok == compared:
            return rec
    return None


def scaled_work(launch: dict, n: int, batch: int) -> dict[str, float]:
    """A launch's counted work (counting.KIND_COUNTERS) at `batch` images from its count at n.

    With the launcher's row tiles (counting's `rows` and `by_kind`), tile by tile: the programs
    of "image" parts times batch / n, those of full row tiles times the ratio of full tiles
    (m // block_m at each batch), those of tail tiles times the ratio of tail tiles; a kind the
    count has none of (full tiles at a small batch, tail tiles where the rows divided evenly)
    is estimated from the other: a tail tile as a full one (an upper bound), a full tile as
    block_m / block_m_tail tail tiles. Exact for the programs and the executed MACs; the bytes
    of a tile vary with the masks at image borders. Without row tiles: everything times batch
    / n (a launch's tail tiles then scale with the batch as if every batch had them)."""
    rows, by_kind = launch.get("rows"), launch.get("by_kind") or {}
    if not rows or not by_kind:
        return {key: (launch[key] or 0) * batch / n for key in KIND_COUNTERS}
    from fused_inception.triton.tiles import row_programs

    bm, bmt = rows["block_m"], rows["block_m_tail"]
    full_n, tail_n = row_programs(rows["m"], bm, bmt)
    full_b, tail_b = row_programs(rows["m"] // rows["images"] * batch, bm, bmt)
    zero = dict.fromkeys(KIND_COUNTERS, 0)
    full, tail = by_kind.get("full", zero), by_kind.get("tail", zero)
    out = {}
    for key in KIND_COUNTERS:
        value = by_kind.get("image", zero)[key] * batch / n
        if full_n:
            value += full[key] * full_b / full_n
        elif full_b and tail_n:
            value += tail[key] / tail_n * (bm / bmt) * full_b
        if tail_n:
            value += tail[key] * tail_b / tail_n
        elif tail_b and full_n:
            value += full[key] / full_n * tail_b
        out[key] = value
    return out


def fused_model(case: dict, gpu_name: str, batch: int, records: Sequence[dict] = ()) -> dict:
    """MODEL of the fused launches of a counted case (or of an analysed result, which keeps
    the case's keys) on wm.GPUS[gpu_name] at `batch`, scaled from the counted batch: each
    launch's times, their sum "fused_ms", and the unfused sequence's MODEL "unfused"."""
    n, k = case["batch"], case["k"]
    gpu = wm.GPUS[gpu_name]
    activation = {key for keys in case.get("activation_keys", []) for key in keys}
    s = batch / n
    accesses, works = [], []
    for launch in case["launches"]:
        acc = []
        for name, t in launch["tensors"].items():
            f = s if _scales(name, t, n, activation) else 1.0
            acc.append(
                wm.Access(
                    tuple(t["key"]), t["read_bytes"] * f, t["written_bytes"] * f,
                    t["span_bytes"] * f,
                )
            )  # fmt: skip
        accesses.append(acc)
        rec = match_build(records, launch, wm.ARCH_OF[gpu_name], case["dtype"])
        ctas = 1
        if rec is not None and launch["num_warps"]:
            ctas = wm.ctas_per_sm(
                gpu, launch["num_warps"], rec["registers"], rec["shared_bytes"] or 0
            )
        work = scaled_work(launch, n, batch)
        works.append(
            wm.LaunchWork(
                work["mma_macs"], work["other_dot_macs"], work["gathered"],
                work["loaded_bytes"] + work["stored_bytes"], math.ceil(work["programs"]), ctas,
            )
        )  # fmt: skip
    drams = wm.dram_bytes(accesses, gpu.l2_bytes)
    times = [wm.launch_ms(gpu, w, d) for w, d in zip(works, drams, strict=True)]
    cfg = GOOGLENET_BLOCKS[case["block"]]
    return {
        "launches": times,
        "fused_ms": sum(t["ms"] for t in times),
        "unfused": wm.unfused_ms(gpu, cfg, k, batch, 2),
    }


def analyse(case: dict, records: Sequence[dict] = ()) -> dict:
    """Per kernel and block: the counted work, the MODEL times, the unfused MODEL, the verdict."""
    n, k = case["batch"], case["k"]
    launches = case["launches"]
    models = {
        f"{gpu_name}@{batch}": fused_model(case, gpu_name, batch, records)
        for gpu_name in wm.GPUS
        for batch in (n, MODEL_BATCH)
    }
    kernels: dict[str, dict] = {}
    for i, launch in enumerate(launches):
        row = kernels.setdefault(launch["kernel"], _empty_row(launch["function"]))
        _add_launch(row, launch, {m: v["launches"][i] for m, v in models.items()})
    total = _empty_row("")
    for i, launch in enumerate(launches):
        _add_launch(total, launch, {m: v["launches"][i] for m, v in models.items()})
    for row in (*kernels.values(), total):
        _ratios(row)
    return {
        "backend": case.get("backend", "triton"),
        **{key: case[key] for key in ("block", "k", "batch", "dtype", "hw", "count_s")},
        "count_cpu_s": case.get("count_cpu_s"),
        "block_useful_macs": case["block_useful_macs"],
        "activation_keys": case.get("activation_keys", []),
        "listener_calls": case["listener_calls"],
        "output_finite": case["output_finite"],
        "kernels": kernels,
        "total": total,
        "unfused": {m: v["unfused"] for m, v in models.items()},
        "verdict": verdict(total, k, models, launches),
        "launches": launches,
        "model_launches": {m: v["launches"] for m, v in models.items()},
    }


_SUMMED = ("launches", "programs", "useful_macs", "mma_macs", "other_dot_macs", "gathered")
_SUMMED += ("loaded_bytes", "stored_bytes")


# Summed over a row's launches; "bound" names the largest of compute, L2 and DRAM time.
_MODEL_SUMMED = ("ms", "waves", "dram_bytes", "compute_ms", "l2_ms", "dram_ms")


def _empty_row(function: str) -> dict:
    return {"functions": [function] if function else [], **dict.fromkeys(_SUMMED, 0), "model": {}}


def _add_launch(row: dict, launch: dict, model: dict) -> None:
    row["launches"] += 1
    for key in _SUMMED[1:]:
        row[key] += launch[key] or 0
    if launch["function"] not in row["functions"]:
        row["functions"].append(launch["function"])
    for m, t in model.items():
        entry = row["model"].setdefault(m, dict.fromkeys(_MODEL_SUMMED, 0.0))
        for key in _MODEL_SUMMED:
            entry[key] += t[key]
        terms = {"compute": entry["compute_ms"], "L2": entry["l2_ms"], "DRAM": entry["dram_ms"]}
        entry["bound"] = max(terms, key=terms.get)


def _ratios(row: dict) -> None:
    useful = row["useful_macs"]
    row["exec_per_useful"] = row["mma_macs"] / useful if useful else None
    row["gathered_per_mac"] = row["gathered"] / useful if useful else None
    row["loaded_bytes_per_flop"] = row["loaded_bytes"] / (2 * useful) if useful else None


def verdict(total: dict, k: int, models: dict, launches: Sequence[dict] = ()) -> dict:
    """Each target: (value, limit, met); the shim's launches (cuda backend) add the largest
    shared-memory bank-conflict degree of any access kind."""
    fused = models[f"H100@{MODEL_BATCH}"]["fused_ms"]
    unfused = models[f"H100@{MODEL_BATCH}"]["unfused"]["ms"]
    checks = {
        "exec_per_useful": (total["exec_per_useful"], TARGETS["exec_per_useful"][k]),
        "gathered": (total["gathered"], TARGETS["gathered"]),
        "bytes_per_flop": (total["loaded_bytes_per_flop"], TARGETS["bytes_per_flop"]),
        "launches": (total["launches"], TARGETS["launches"]),
        "h100_ms_vs_unfused": (fused, unfused),
    }
    degrees = [d for launch in launches for d in launch.get("bank_conflict_degree", {}).values()]
    if degrees:
        checks["bank_conflict_degree"] = (max(degrees), TARGETS["bank_conflict_degree"])
    out = {}
    for key, (value, limit) in checks.items():
        met = value is not None and (
            value < limit if key == "h100_ms_vs_unfused" else value <= limit
        )
        out[key] = {"value": value, "limit": limit, "met": met}
    return out
