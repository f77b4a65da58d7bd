"""GoogLeNet's per-layer table (the paper's Table 1), computed from a model's modules.

One row per top-level child that runs in an eval-mode forward, in the order it runs. Shapes come
from forward hooks on a real forward pass, parameters from the modules, multiply-adds from hooks
on every nn.Conv2d / nn.Linear inside a row (conv: output elements * Cin/groups * kh * kw;
linear: in * out; pools, LRN, ReLU, BatchNorm and dropout count 0, like the paper).

Conventions, matching Table 1:
- The 1x1 reduction and the 3x3 convolution of the stem (paper conv2_reduce + conv2,
  torchvision conv2 + conv3) are one "convolution" row of depth 2, as in the paper; the
  reduction's width goes in the "#3x3 reduce" column. Rule: a 1x1/1 convolution row directly
  followed by another convolution row is merged into it.
- LRN rows are not in Table 1: left out unless lrn_rows=True (they have no parameters or ops).
- Auxiliary heads are not in Table 1 (training only, dropped at inference). They do not run in
  eval mode, so they get no row and count in no total. Softmax is not modelled (the models
  return logits).
- Parameter counts include biases (conv + bias in the paper form; BN's affine parameters in
  torchvision's). The paper counted weights only, so its figures are slightly lower.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from torch import nn

from .bench.roofline import layer_macs
from .units import BRANCHES, block_units, has_branches

# Table 1's inception columns, one per conv unit (units.UNIT_NAMES, in that order).
INCEPTION_COLUMNS = ("1x1", "3x3_reduce", "3x3", "5x5_reduce", "5x5", "pool_proj")


def layer_table(
    model: nn.Module, input_size: tuple[int, ...] = (1, 3, 224, 224), *, lrn_rows: bool = False
) -> list[dict[str, Any]]:
    """Rows of Table 1 for `model`, computed by one eval-mode forward under torch.no_grad.

    model:      GoogLeNet-like module (either variant of fused_inception.models.googlenet, or
                torchvision's); its training flag is restored afterwards
    input_size: [N, 3, H, W] of the random input; numbers are per image
    lrn_rows:   also list LRN layers (0 params, 0 macs)

    Each row: name, type ("convolution", "max pool", "LRN", "inception", "avg pool", "dropout",
    "linear", ...), patch ("7x7/2" or ""), output_shape (without batch: (C, H, W) or (C,)),
    depth, params, macs; inception rows also the six INCEPTION_COLUMNS, a merged stem row
    "3x3_reduce" and "3x3", dropout rows "p".
    """
    records = _trace(model, input_size)
    rows = [_row(rec) for rec in records]
    if not lrn_rows:
        rows = [row for row in rows if row["type"] != "LRN"]
    return _merge_reductions(rows)


def totals(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Sum of `params` and `macs` (multiply-adds per image) over layer_table rows."""
    return {"params": sum(r["params"] for r in rows), "macs": sum(r["macs"] for r in rows)}


def format_table(rows: list[dict[str, Any]]) -> str:
    """Plain-text table in Table 1's column layout, with a totals line.

    params in K = 1024 as the paper prints them (2.7K, 112K), ops (multiply-adds) in M = 1e6.
    """
    header = (
        "type",
        "patch size/stride",
        "output size",
        "depth",
        "#1x1",
        "#3x3 reduce",
        "#3x3",
        "#5x5 reduce",
        "#5x5",
        "pool proj",
        "params",
        "ops",
    )
    lines = [header]
    for row in rows:
        columns = tuple(str(row.get(c, "")) for c in INCEPTION_COLUMNS)
        lines.append(
            (
                _label(row),
                row["patch"],
                _size(row["output_shape"]),
                str(row["depth"]),
                *columns,
                _params_text(row["params"]),
                _ops_text(row["macs"]),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [
        "  ".join(
            cell.ljust(w) if i < 3 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    ]
    text.insert(1, "-" * len(text[0]))
    total = totals(rows)
    text.append("-" * len(text[0]))
    text.append(
        f"total: params {total['params']:,} ({total['params'] / 1024:,.0f}K), "
        f"ops {total['macs']:,} multiply-adds ({total['macs'] / 1e9:.2f}G) per image"
    )
    return "\n".join(text)


def _trace(model: nn.Module, input_size: tuple[int, ...]) -> list[dict[str, Any]]:
    """Run one eval forward; per top-level child that runs: module, shapes, hooked macs."""
    batch = input_size[0]
    records: dict[str, dict[str, Any]] = {}  # insertion order = order the children run in
    handles = []

    def record(name: str, child: nn.Module) -> dict[str, Any]:
        # Shapes stay () for a child whose submodules run without the child's own forward.
        new = {"name": name, "module": child, "macs": 0, "hooked": 0}
        return records.setdefault(name, {**new, "input_shape": (), "output_shape": ()})

    def start(name: str):
        def hook(mod: nn.Module, args: tuple) -> None:
            record(name, mod)["input_shape"] = tuple(args[0].shape[1:])

        return hook

    def finish(name: str):
        def hook(mod: nn.Module, args: tuple, out: torch.Tensor) -> None:
            records[name]["output_shape"] = tuple(out.shape[1:])

        return hook

    def count(name: str, child: nn.Module):
        def hook(mod: nn.Module, args: tuple, out: torch.Tensor) -> None:
            rec = record(name, child)
            rec["macs"] += layer_macs(mod, out) // batch
            rec["hooked"] += 1

        return hook

    for name, child in model.named_children():
        handles.append(child.register_forward_pre_hook(start(name)))
        handles.append(child.register_forward_hook(finish(name)))
        for sub in child.modules():
            if isinstance(sub, (nn.Conv2d, nn.Linear)):
                handles.append(sub.register_forward_hook(count(name, child)))
    was_training = model.training
    param = next(model.parameters(), None)
    x = torch.randn(input_size, generator=torch.Generator().manual_seed(0))
    x = x if param is None else x.to(param)
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return list(records.values())


def _unit_weight(unit: nn.Module) -> torch.Tensor:
    # By state_dict key ("conv.weight"), so fused blocks that keep the keys but not the
    # nn.Conv2d calls are read the same way.
    return dict(unit.named_parameters())["conv.weight"]


def _row(rec: dict[str, Any]) -> dict[str, Any]:
    module = rec["module"]
    row: dict[str, Any] = {
        "name": rec["name"],
        "type": _kind(module),
        "patch": _patch(module, rec["input_shape"], rec["output_shape"]),
        "output_shape": rec["output_shape"],
        "depth": 0,
        "params": sum(p.numel() for p in module.parameters()),
        "macs": rec["macs"],
    }
    if row["type"] == "inception":
        weights = [_unit_weight(unit) for unit in block_units(module)]
        row.update({c: w.shape[0] for c, w in zip(INCEPTION_COLUMNS, weights, strict=True)})
        row["depth"] = max(
            sum(1 for p in getattr(module, name).parameters() if p.dim() == 4) for name in BRANCHES
        )
        if rec["hooked"] == 0:
            # A fused block runs its kernels without calling nn.Conv2d; every conv of an
            # Inception block is stride 1 at the output's resolution, so weights give the macs.
            hw = rec["output_shape"][1] * rec["output_shape"][2]
            row["macs"] = hw * sum(w.numel() for w in weights)
    else:
        row["depth"] = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in module.modules())
    if isinstance(module, nn.Dropout):
        row["p"] = module.p
    return row


def _kind(module: nn.Module) -> str:
    if has_branches(module):
        return "inception"
    kinds = (
        (nn.MaxPool2d, "max pool"),
        ((nn.AvgPool2d, nn.AdaptiveAvgPool2d), "avg pool"),
        (nn.LocalResponseNorm, "LRN"),
        (nn.Dropout, "dropout"),
        (nn.Linear, "linear"),
        (nn.Conv2d, "convolution"),
    )
    for cls, kind in kinds:
        if isinstance(module, cls):
            return kind
    if isinstance(getattr(module, "conv", None), nn.Conv2d):  # ConvUnit / BasicConv2d
        return "convolution"
    return type(module).__name__


def _patch(module: nn.Module, in_shape: tuple, out_shape: tuple) -> str:
    conv = module if isinstance(module, nn.Conv2d) else getattr(module, "conv", None)
    if isinstance(conv, nn.Conv2d):
        (kh, kw), (stride, _) = conv.kernel_size, conv.stride
        return f"{kh}x{kw}/{stride}"
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        k, s = _first(module.kernel_size), _first(module.stride)
        return f"{k}x{k}/{s}"
    if isinstance(module, nn.AdaptiveAvgPool2d) and tuple(out_shape[1:]) == (1, 1):
        return f"{in_shape[1]}x{in_shape[2]}/1"  # a global pool is Table 1's "7x7/1"
    return ""


def _first(value: int | tuple[int, ...]) -> int:
    return value if isinstance(value, int) else value[0]


def _merge_reductions(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fold a 1x1/1 convolution row into the convolution row right after it (Table 1's conv2)."""
    merged: list[dict[str, Any]] = []
    i = 0
    while i < len(rows):
        row = rows[i]
        nxt = rows[i + 1] if i + 1 < len(rows) else None
        if row["type"] == "convolution" and row["patch"] == "1x1/1" and nxt is not None:
            if nxt["type"] == "convolution":
                merged.append(
                    {
                        **nxt,
                        "name": f"{row['name']}+{nxt['name']}",
                        "depth": row["depth"] + nxt["depth"],
                        "params": row["params"] + nxt["params"],
                        "macs": row["macs"] + nxt["macs"],
                        "3x3_reduce": row["output_shape"][0],
                        "3x3": nxt["output_shape"][0],
                    }
                )
                i += 2
                continue
        merged.append(row)
        i += 1
    return merged


def _label(row: dict[str, Any]) -> str:
    if row["type"] == "inception":
        return f"inception ({row['name'].removeprefix('inception')})"
    if row["type"] == "dropout":
        return f"dropout ({row['p']:.0%})"
    return row["type"]


def _size(shape: tuple[int, ...]) -> str:
    if not shape:
        return ""
    c, h, w = shape if len(shape) == 3 else (shape[0], 1, 1)
    return f"{h}x{w}x{c}"


def _params_text(params: int) -> str:
    if params == 0:
        return ""
    k = params / 1024
    return f"{k:.1f}K" if k < 10 else f"{k:.0f}K"


def _ops_text(macs: int) -> str:
    if macs == 0:
        return ""
    m = macs / 1e6
    return f"{m:.1f}M" if m < 1 else f"{m:.0f}M"


def main(argv: list[str] | None = None) -> None:
    """Print Table 1 for a fresh GoogLeNet (random weights: the numbers do not depend on them)."""
    from .models import VARIANTS, googlenet

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=VARIANTS, default="paper")
    parser.add_argument("--input-size", type=int, default=224, help="image height and width")
    parser.add_argument("--lrn-rows", action="store_true", help="also list the LRN layers")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = googlenet(args.variant).eval()
    rows = layer_table(model, (1, 3, args.input_size, args.input_size), lrn_rows=args.lrn_rows)
    print(
        f"GoogLeNet ({args.variant}), {args.input_size}x{args.input_size} input; auxiliary "
        "heads excluded (training only); params include biases; K = 1024, M = 1e6"
    )
    print(format_table(rows))


if __name__ == "__main__":
    main()
