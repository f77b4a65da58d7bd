"""Winograd F(2x2, 3x3) for the CPU backend's 3x3 convolutions (csrc/cpu/winograd_f2x3.cpp).

relu(conv3x3(r, W, pad 1) + B) as input transform -> 16 GEMMs (one torch.bmm) -> output
transform with bias and ReLU, written straight into the branch's slice of the block output.
It does 16 multiply-adds per 2x2 outputs and channel pair instead of 36; the transforms move
memory, so it pays only where the GEMMs are large enough. Measured on the CI machine (2 AMD EPYC
cores, AVX2), interleaved medians, batch 8, against oneDNN's direct convolution + ReLU store:
28x28 96->128 7.45 -> 5.0 ms, 28x28 128->192 14.3 -> 9.3 ms, 14x14 128->256 4.9 -> 3.1 ms,
7x7 192->384 2.7 -> 2.4 ms, 28x28 32->96 1.9 -> 1.6 ms; but 14x14 24->64 is even and
28x28 16->32 is 1.4x slower. `winograd_pays` holds that policy (images below 7x7 were not
measured and stay direct).

The tiles (one per 2x2 outputs, numbered across the whole batch) go through the three steps
in chunks of TILES_PER_CHUNK, whatever the image size: the transformed tiles stay in cache
between the steps, and the workspace (V and M, 16 * (Cin + Cout) floats per tile) is bounded.
It used to be chunked by whole images, which for one 1024x1024 image to block 3a took 3.5 GiB.

The transforms are the C++ operators fused_inception::winograd_f2x3_input and
winograd_f2x3_output_ (csrc/cpu/winograd_f2x3.cpp); their typed wrappers and fake kernels are
here. The float32 path on oneDNN has its own Winograd inside the eval block operator
(csrc/cpu/block_onednn.cpp): the same transforms around a grouped oneDNN convolution (or the
own kernel's GEMMs, or one MKL batched GEMM: cpu_onednn.own_gemm, mkl_winograd), with the
policy and chunk size below (ONEDNN_*), and where the batch has enough tiles F(4x4, 3x3)
(csrc/cpu/winograd_f4x3.cpp: 36 GEMMs per 4x4 outputs, 4x fewer multiply-adds than the direct
convolution; onednn_tile), which recomputes a branch directly where it meets NaN or inf.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import _ext
from ..checks import check_same_device
from .cpu_onednn import conv_weight, own_gemm

# Policy thresholds (module attributes so tests can force either path).
MIN_PIXELS = 7 * 7
MIN_IN_CHANNELS = 32
MIN_OUT_CHANNELS = 64
# 196 tiles: one 28x28 image, the chunk blocks 3a and 3b had when chunks were whole images.
# Quiet, 98-196 measured alike at batch 8 (within 5%); with other processes on the cores each
# chunk's three parallel regions can wait for a descheduled thread, so fewer chunks hold up
# better. V and M then take 196 * 16 * (Cin + Cout) floats: 7.2 MB at most (5b's 192 -> 384).
TILES_PER_CHUNK = 196

# G of F(2x2, 3x3): U = G W G^T, one 4x4 matrix per (input, output) channel pair.
_G = torch.tensor(
    [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]], dtype=torch.float64
)


def available_for(weight: Tensor) -> bool:
    """True if this weight can take the Winograd path at all (3x3, float32, CPU, extension)."""
    return (
        weight.shape[-2:] == (3, 3)
        and weight.dtype == torch.float32
        and weight.device.type == "cpu"
        and _ext.has_extension()
    )


# U = G W G^T of one 3x3 filter, flattened row-major, is kron(G, G) @ vec(W): a [16, 9] matrix
# whose entries are 0, +-1/4, +-1/2 and 1 (exact in float32).
_GG = torch.kron(_G, _G).float()


def transform_weight(weight: Tensor) -> Tensor:
    """weight: [Cout, Cin, 3, 3] -> U: [16, Cin, Cout] in weight's dtype (G W G^T).

    One [16, 9] x [9, Cin*Cout] GEMM in float32 on the taps laid out (tap, cin, cout): called
    on every training forward (the weights change each step), so it must cost little next to
    the convolution (an einsum in float64 took as long as the 3x3 GEMMs themselves).
    """
    c_out, c_in = weight.shape[:2]
    taps = weight.detach().float().permute(2, 3, 1, 0).reshape(9, c_in * c_out)
    return (_GG @ taps).reshape(16, c_in, c_out).to(weight.dtype)


# G of F(4x4, 3x3) (Lavin and Gray's, points 0, +-1, +-2 and infinity; csrc/cpu/winograd_f4x3.cpp
# has B^T and A^T): U = G W G^T, one 6x6 matrix per (input, output) channel pair. Its entries
# (1/4, 1/6, 1/12, 1/24) are not exact in float32, so the transform runs in float64.
_G4 = torch.tensor(
    [
        [1 / 4, 0.0, 0.0],
        [-1 / 6, -1 / 6, -1 / 6],
        [-1 / 6, 1 / 6, -1 / 6],
        [1 / 24, 1 / 12, 1 / 6],
        [1 / 24, -1 / 12, 1 / 6],
        [0.0, 0.0, 1.0],
    ],
    dtype=torch.float64,
)
_GG4 = torch.kron(_G4, _G4)  # [36, 9]


def transform_weight4(weight: Tensor) -> Tensor:
    """weight: [Cout, Cin, 3, 3] -> U: [36, Cin, Cout] in weight's dtype (G W G^T of F(4x4,
    3x3)), computed in float64: the eval operator's weights, transformed once per packing (a
    training step's are transformed by conv3x3_winograd_f4 itself)."""
    c_out, c_in = weight.shape[:2]
    taps = weight.detach().double().permute(2, 3, 1, 0).reshape(9, c_in * c_out)
    return (_GG4 @ taps).reshape(36, c_in, c_out).to(weight.dtype)


def winograd_pays(h: int, w: int, c_in: int, c_out: int) -> bool:
    """Whether F(2,3) beats the direct convolution for this shape (see module docstring)."""
    return h * w >= MIN_PIXELS and c_in >= MIN_IN_CHANNELS and c_out >= MIN_OUT_CHANNELS


# The oneDNN path's Winograd (the eval block operator, csrc/cpu/block_onednn.cpp): its 16 GEMMs
# are one grouped oneDNN 1x1 convolution, which runs at oneDNN's AVX-512 throughput, so F(2,3)'s
# 2.25x fewer multiply-adds pay there too. Off: every 3x3 convolution of that path is oneDNN's
# direct one (tests switch it to cover both).
ONEDNN_ENABLED = True
# Tiles per grouped convolution (V and M then take 16 * (Cin + Cout) floats per tile, 2.8 MB
# for 3a's 96 -> 128). Measured at batch 8 and 1 on 3a, 4e and 5b: 64-784 within 10% of each
# other, 196 the best or level; one 56x56 batch-8 convolution of all 6272 tiles ran 2.4x
# slower than the direct one, in chunks 1.8x faster.
ONEDNN_TILES_PER_CHUNK = 196
# Tiles per chunk where MKL's batched GEMM runs them (cpu_onednn.mkl_winograd). On a 2-core
# Emerald Rapids Xeon (2026-12-06, two prepared networks interleaved in one process, batch 8):
# 392 took conv3 (1568 4x4 tiles) 0.78x the time of 196, the network 0.97x; 784 took conv3
# 1.07x the time of 392. At batch 1 no GoogLeNet Winograd convolution has more than 196 tiles
# (conv3's 4x4 ones), so one chunk either way.
MKL_TILES_PER_CHUNK = 392
ONEDNN_MIN_IN_CHANNELS = 64
ONEDNN_MIN_OUT_CHANNELS = 64
# Fewer 2x2 tiles than this in the whole batch (n * ceil(h/2) * ceil(w/2)) and each of the 16
# GEMMs has too few rows to pay for the transforms and the 16/9 larger weight: 5a/5b at batch 1
# (7x7, 16 tiles) ran 0.90-0.97x of the direct convolution, 14x14 at batch 1 (49 tiles)
# 1.09-1.16x, 7x7 at batch 8 (128 tiles) 1.07x (README "Backends"). Rechecked for the prepared
# blocks on a 2-core Zen 3 EPYC (AVX2, own-kernel GEMMs, 2026-12-07, a noisy host): with 16,
# 5b at batch 1 took 0.97-1.09x the time of 32 (switched per round in one process, which
# replans each round, or in separate processes; within the host's noise).
# What holds it back there is the content check: the direct KxK reads its plain weight in
# place (plain_layout.py), while the Winograd form is made from that weight, which is then
# hashed on every call. Two prepared copies of 5b at batch 1 in one process, alternated per
# round: with 16, weight_check="version" took 0.885-0.923x the time of "content" (five runs);
# with 32, 0.993-1.045x. A Winograd form made per call inside the GEMM's tasks from the plain
# weight, which needs no hash, was built and measured (2026-12-07, same host): making the form
# cost what the hash did (5b's operator alone 1.09x the time of the prepacked form's, whose hash
# is 55-58 us), so 5b and 5a at batch 1 with 16 came out level with the direct KxK (0.96-1.05x,
# five runs each), and 32 stays (docs/measurements.md).
ONEDNN_MIN_TILES = 32
# F(4x4, 3x3) on oneDNN's grouped GEMM (or MKL's) where the batch has at least this many 4x4
# tiles, and where its GEMMs run on the own kernel (cpu_onednn.own_gemm: AVX2 CPUs, AMD's
# AVX-512 ones) at least OWN_F4_MIN_TILES (onednn_tile); off: F(2x2, 3x3) wherever Winograd runs.
ONEDNN_F4_ENABLED = True
ONEDNN_F4_MIN_TILES = 32
# 16: the 14x14 blocks at batch 1 (16 4x4 tiles, 49 2x2 ones) as F(4x4, 3x3) on the own kernel.
# Measured on a 2-core Zen 3 EPYC (AVX2; 2026-12-07, the benchmark's prepared blocks, switched
# per round of calls in one process; B/A medians, 16 against 32): channels_last 4a 0.898-0.956,
# 4b 0.912-0.992, 4c 0.891-0.947, 4d 0.902-0.937, 4e 0.966-1.037 (three or four runs); NCHW
# 4a 0.984, 4b 1.052 (minimum 0.954), 4c 0.908, 4d 0.943, 4e 0.982; the network at batch 1
# level (channels_last 0.976-1.018 in six runs, NCHW 0.992-0.995 in three): inside it the
# weights come from memory, and F(4x4, 3x3)'s transformed weight is 36/16 of F(2x2, 3x3)'s.
# Where the GEMMs run on MKL (an Emerald Rapids Xeon, 2026-12-06) 16 took 4a-4e 1.04-1.11x the
# time and the network 1.04x, so ONEDNN_F4_MIN_TILES stays 32 there (README "Backends").
OWN_F4_MIN_TILES = 16
# F(4x4, 3x3)'s 36 GEMMs on the package's own kernel (where cpu_onednn.own_gemm says so: AVX2
# CPUs, AMD's AVX-512 ones) where each has at most this many rows (4x4 tiles in one chunk), else
# on oneDNN's grouped GEMM (own_f4_gemm). Measured on a 2-core Zen 2 EPYC (2026-12-05, two
# prepared networks interleaved in one process): with 32 rows (7x7 at batch 8) 5a and 5b took
# 0.92-0.94x the time, with 49 (28x28 at batch 1) 3a and 3b 0.88-0.93x, with 128 (14x14 at batch
# 8) 4a-4e 0.90-0.95x; with 196 (28x28 at batch 8, in chunks) 3a and 3b took 1.05-1.09x. None: by
# the CPU (own_f4_max_tiles): 128 on AVX2 as above, 196 where the own kernel's tiles are
# AVX-512's, 16 lanes wide (on a 2-core Zen 5 EPYC, 2026-12-08, the benchmark's prepared blocks
# switched per round of calls in one process, 196 against 128: 3a and 3b at batch 8 0.92-0.98x the
# time in seven of eight A/Bs of either layout, 1.02x in one; minima 0.95-1.00x).
OWN_F4_MAX_TILES: int | None = None
# A prepared network's 3x3 unit (FoldedConvUnit: GoogLeNet's conv3) runs F(4x4, 3x3)'s GEMMs on
# the own kernel (where cpu_onednn.own_gemm says so) where the batch has at most this many 4x4
# tiles, in near-equal chunks of at most OWN_F4_UNIT_CHUNK_TILES (own_f4_unit_chunk). Same host
# and method: conv3 at batch 1 (196 tiles, then in two chunks of 98) 0.90-0.96x the time (with
# chunks of 66: 0.96x); at batch 8 (1568 tiles, 16 chunks of 98) 1.2x, so it stays on oneDNN's
# there.
OWN_F4_MAX_UNIT_TILES = 196
# That unit's chunk: at batch 1 one chunk of all 196 tiles, in which its input and output
# transforms (each split over the chunk's tiles between the threads) give each thread one half
# of the image, top or bottom, as conv2 before it and maxpool2 after it split their rows (with
# two chunks of 98 each thread had a quarter of each half). Against two chunks of 98 on the
# 2-core Zen 2 EPYC (2026-12-05, alternating processes of the prepared network at batch 1):
# conv3 0.87-0.97x the time, maxpool2 after it 0.59-0.67x, 3a after that 0.89-0.99x
# (docs/measurements.md). Presumably the data staying with the core that wrote it: on that
# host a 2.4 MB tensor written by one core took 263 us to sum on the other, 83 on the same core
# and 197 from memory.
OWN_F4_UNIT_CHUNK_TILES = 196
# Training steps' 3x3 forwards and input gradients as F(4x4, 3x3) (training_f4, conv3x3_f4):
# where both sides have this many channels and the batch this many 4x4 tiles; see training_f4.
TRAINING_F4_ENABLED = True
TRAINING_F4_MIN_TILES = 32
TRAINING_F4_MIN_IN_CHANNELS = 64
TRAINING_F4_MIN_OUT_CHANNELS = 64
# 4x4 tiles per chunk of conv3x3_f4 (V and M: 36 * (Cin + Cout) floats per tile).
TRAINING_F4_TILES = 196


def winograd_tiles(n: int, h: int, w: int, tile: int = 2) -> int:
    """Winograd tiles of an n x h x w batch: one per tile x tile outputs (2: F(2x2, 3x3), 4:
    F(4x4, 3x3)), per image."""
    return n * -(-h // tile) * -(-w // tile)


def onednn_winograd_pays(n: int, h: int, w: int, c_in: int, c_out: int) -> bool:
    """Whether F(2,3) on oneDNN's grouped GEMM beats oneDNN's direct convolution + ReLU store
    for an n x c_in x h x w input.

    Measured (2 AMD EPYC Zen 5 cores, AVX-512, 2 threads, interleaved medians): 1.35-2.1x faster
    at batch 8 and 1.35-1.95x at batch 1 for every GoogLeNet 3x3 of 64 or more input channels
    (28x28 96 -> 128: 5.0 -> 2.8 ms at batch 8); the 16-48 channel ones of the torchvision
    blocks' b3 are level or slower (0.84-1.35x), so they stay direct. Below ONEDNN_MIN_TILES
    tiles (7x7 images at batch 1) it is slower on both the AVX-512 and an AVX2-only Zen 3 CPU.
    """
    return (
        c_in >= ONEDNN_MIN_IN_CHANNELS
        and c_out >= ONEDNN_MIN_OUT_CHANNELS
        and h * w >= 4
        and winograd_tiles(n, h, w) >= ONEDNN_MIN_TILES
    )


def onednn_takes(weight_shape: tuple[int, ...], n: int, h: int, w: int) -> bool:
    """Whether the oneDNN path runs a stride-1, padding-1 convolution of this weight shape
    [Cout, Cin, kh, kw] on an n x Cin x h x w input as Winograd (onednn_tile > 0): switched on,
    3x3, and paying (the eval block operator's kxk branches and a prepared network's
    FoldedConvUnit)."""
    c_out, c_in, kh, kw = weight_shape
    return ONEDNN_ENABLED and (kh, kw) == (3, 3) and onednn_winograd_pays(n, h, w, c_in, c_out)


def onednn_settings() -> tuple:
    """The oneDNN path's Winograd switches and thresholds (onednn_tile, onednn_chunk) as they
    are now: part of what an eval fast path's replayed call rests on (backends/cpu.py
    plan_policy, folded_unit._plan_policy)."""
    return (
        ONEDNN_ENABLED,
        ONEDNN_TILES_PER_CHUNK,
        MKL_TILES_PER_CHUNK,
        ONEDNN_MIN_IN_CHANNELS,
        ONEDNN_MIN_OUT_CHANNELS,
        ONEDNN_MIN_TILES,
        ONEDNN_F4_ENABLED,
        ONEDNN_F4_MIN_TILES,
        OWN_F4_MIN_TILES,
        own_f4_max_tiles(),
        OWN_F4_MAX_UNIT_TILES,
        OWN_F4_UNIT_CHUNK_TILES,
    )


def own_f4_unit_chunk(n: int, h: int, w: int) -> int:
    """The 4x4 tiles per chunk with which a FoldedConvUnit's F(4x4, 3x3) convolution of an n x
    h x w batch runs its 36 GEMMs on the own kernel, where cpu_onednn.own_gemm() does (the
    caller asks that): the batch's tiles in near-equal chunks of at most
    OWN_F4_UNIT_CHUNK_TILES where it has at most OWN_F4_MAX_UNIT_TILES; 0 otherwise (oneDNN's
    grouped GEMM; also where own_f4_max_tiles() or OWN_F4_UNIT_CHUNK_TILES is below 1: the own
    kernel's F(4x4, 3x3) switched off)."""
    tiles = winograd_tiles(n, h, w, 4)
    if tiles > OWN_F4_MAX_UNIT_TILES or own_f4_max_tiles() < 1 or OWN_F4_UNIT_CHUNK_TILES < 1:
        return 0
    chunks = -(-tiles // OWN_F4_UNIT_CHUNK_TILES)
    return -(-tiles // chunks)


def own_f4_gemm(n: int, h: int, w: int) -> bool:
    """Whether an F(4x4, 3x3) convolution of an n x h x w batch on the eval operator runs its 36
    GEMMs on the own kernel, where cpu_onednn.own_gemm() does (the caller asks that): each GEMM
    (one chunk's 4x4 tiles, onednn_chunk) has at most own_f4_max_tiles() rows."""
    return min(onednn_chunk(n, h, w), winograd_tiles(n, h, w, 4)) <= own_f4_max_tiles()


def own_f4_max_tiles() -> int:
    """The most rows (4x4 tiles of one chunk) of an F(4x4, 3x3) GEMM that the eval operator
    runs on the own kernel: OWN_F4_MAX_TILES, or by default 196 where torch's CPU capability is
    AVX-512 (the own kernel's 16-lane tiles) and 128 elsewhere."""
    if OWN_F4_MAX_TILES is not None:
        return OWN_F4_MAX_TILES
    return 196 if torch.backends.cpu.get_cpu_capability() == "AVX512" else 128


def onednn_tile(weight_shape: tuple[int, ...], n: int, h: int, w: int) -> int:
    """The Winograd tile the oneDNN path runs this convolution with: 0 (direct), 2 (F(2x2,
    3x3)) or 4 (F(4x4, 3x3)). F(2x2, 3x3)'s 16 GEMMs run on the package's own kernel where
    cpu_onednn.own_gemm says so (AVX2 CPUs, AMD's AVX-512 ones), F(4x4, 3x3)'s 36 there too in
    the eval operator where they are small enough (own_f4_gemm), else on oneDNN's grouped GEMM.

    F(4x4, 3x3) does 36 products per 16 outputs against F(2x2, 3x3)'s 16 per 4: its 36 grouped
    GEMMs took 0.48-0.72x the time of the 16 of F(2x2, 3x3) on every GoogLeNet b2 at batch 8 and
    0.62x on 3a/3b at batch 1 (2-core Sapphire Rapids, 2026-12-03), but 0.97x at 16 tiles (14x14,
    batch 1) and 1.66x at 4 (7x7, batch 1): it needs ONEDNN_F4_MIN_TILES 4x4 tiles. On an AVX2
    CPU (a Zen 2 EPYC, 2026-12-05) it beat F(2x2, 3x3) on the own kernel too: whole blocks
    1.11-1.16x at batch 8, 3a and 3b 1.07x and 1.26x at batch 1, conv3 1.04-1.22x (README
    "Backends"); on a Zen 3 EPYC also at 16 tiles, the 14x14 blocks at batch 1 (OWN_F4_MIN_TILES).
    """
    if not onednn_takes(weight_shape, n, h, w):
        return 0
    # Where the own kernel runs Winograd's GEMMs (own_gemm; with the default OWN_F4_* it takes
    # every F(4x4, 3x3) of fewer than ONEDNN_F4_MIN_TILES tiles: own_f4_gemm, own_f4_unit_chunk)
    if ONEDNN_F4_ENABLED:
        least = min(OWN_F4_MIN_TILES, ONEDNN_F4_MIN_TILES) if own_gemm() else ONEDNN_F4_MIN_TILES
        if winograd_tiles(n, h, w, 4) >= least:
            return 4
    return 2


def grouped_weight(weight: Tensor, tile: int = 2) -> Tensor:
    """weight [Cout, Cin, 3, 3] -> the grouped 1x1 weight [P * Cout, Cin, 1, 1] whose group k
    is U[k]^T (U = transform_weight(weight), P = 16; tile 4: transform_weight4, P = 36), as the
    plain channels_last weight oneDNN reads: the oneDNN path's P Winograd GEMMs as one grouped
    convolution over V [T, P, Cin] seen as an NHWC image of P * Cin channels
    (onednn_gemm_input)."""
    c_out, c_in = weight.shape[:2]
    u = transform_weight4(weight) if tile == 4 else transform_weight(weight)
    grouped = u.transpose(1, 2).reshape(u.shape[0] * c_out, c_in, 1, 1)
    return conv_weight(grouped)


# The standalone Winograd operator (csrc/cpu/block_onednn.cpp; None in builds without it): a
# prepared network's FoldedConvUnit.
_CONV3X3_OP = (
    _ext.op("conv3x3_relu_winograd").default if _ext.has_op("conv3x3_relu_winograd") else None
)


# Training's F(4x4, 3x3) (csrc/cpu/winograd_training.cpp; None in builds without it).
_F4_OP = _ext.op("conv3x3_winograd_f4").default if _ext.has_op("conv3x3_winograd_f4") else None


@_ext.register_fake("conv3x3_winograd_f4")
def _conv3x3_winograd_f4_fake(x, weight, bias, tiles, relu, transposed=False):
    n, _, h, w = x.shape
    c_out = weight.shape[1] if transposed else weight.shape[0]
    return x.new_empty((n, c_out, h, w)).contiguous(memory_format=torch.channels_last)


def training_f4(x: Tensor, weight: Tensor) -> bool:
    """Whether a training step runs the 3x3 convolution (stride 1, padding 1) of x [N, Cin, H,
    W] with this weight as F(4x4, 3x3), forward and input gradient (conv3x3_f4): float32 on the
    CPU, 64 or more channels each way and TRAINING_F4_MIN_TILES 4x4 tiles in the batch.

    Measured alone against oneDNN's direct convolution, every GoogLeNet b2 at batch 8 (2-core
    Sapphire Rapids, 2026-12-04): forward 1.2-2.6x faster (5b's 7x7, 32 tiles, level), input
    gradient 1.7-2.5x. The operator it replaced (the eval operator's F(4x4, 3x3) on a grouped
    oneDNN convolution, whose 36-group weight oneDNN reorders) paid only from 256 tiles inside
    a step: 0.81x on 4e, 0.44x on 5b."""
    c_out, c_in, kh, kw = weight.shape
    n, _, h, w = x.shape
    return (
        TRAINING_F4_ENABLED
        and _F4_OP is not None
        and (kh, kw) == (3, 3)
        and x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and c_in >= TRAINING_F4_MIN_IN_CHANNELS
        and c_out >= TRAINING_F4_MIN_OUT_CHANNELS
        and winograd_tiles(n, h, w, 4) >= TRAINING_F4_MIN_TILES
    )


def conv3x3_f4(
    x: Tensor, weight: Tensor, bias: Tensor | None, relu: bool, transposed: bool = False
) -> Tensor:
    """conv3x3(x, weight, pad 1) + bias (then ReLU with relu) by F(4x4, 3x3) with the weight
    transformed on the call (a training step's weights change every step), its 36 GEMMs on
    torch.bmm (fused_inception::conv3x3_winograd_f4, csrc/cpu/winograd_training.cpp); NaN and
    inf as the direct convolution's (it recomputes directly where it meets them).
    transposed: the convolution of an input gradient instead, by W's taps reversed and its
    channels swapped (x [N, Cout, H, W] -> [N, Cin, H, W]).

    x: [N, Cin, H, W] float32 CPU (any memory format); weight [Cout, Cin, 3, 3]; bias [Cout] or
    None ([Cin] with transposed). Returns [N, Cout, H, W] channels_last.
    """
    b = None if bias is None else bias.detach()
    return _F4_OP(x, weight.detach(), b, TRAINING_F4_TILES, relu, transposed)


# Training steps' 5x5 convolutions (the paper form's b3) as Winograd F(4x4, 5x5), forward, input
# gradient and weight gradient alike (training_f4x5; csrc/cpu/winograd_f4x5.cpp): 64 products per
# 16 outputs against the direct convolution's 400, but the 8x8 transforms of the narrow inputs
# (16-48 channels) cost nearly what the GEMMs do (perf, 3b's forward: GEMMs 29% of the samples,
# transforms 23%). Measured alone against oneDNN's direct
# convolution at batch 8 (2-core Sapphire Rapids, 2026-12-04, forward / input gradient / weight
# gradient): 3b's 32 -> 96 at 28x28 (392 tiles) 1.7-2.0x / 1.5-1.75x / 1.3-1.55x; 3a's 16 -> 32
# (392 tiles) 1.05-1.4x / 1.05-1.1x / 1.0-1.06x; the 14x14 and 7x7 ones (128 and 32 tiles) 0.65-
# 1.3x, mostly slower: from TRAINING_F4X5_MIN_TILES 4x4 tiles only.
TRAINING_F4X5_ENABLED = True
TRAINING_F4X5_MIN_TILES = 256
# 4x4 tiles per chunk (V and M: 64 * (Cin + Cout) floats per tile); 32-392 within 10%.
TRAINING_F4X5_TILES = 196
_F4X5_OP = _ext.op("conv5x5_winograd_f4").default if _ext.has_op("conv5x5_winograd_f4") else None
_WEIGHT_GRAD_5X5_OP = (
    _ext.op("conv5x5_weight_grad_winograd").default
    if _ext.has_op("conv5x5_weight_grad_winograd")
    else None
)


@_ext.register_fake("conv5x5_winograd_f4")
def _conv5x5_winograd_f4_fake(x, weight, bias, tiles, relu, transposed=False):
    return _conv3x3_winograd_f4_fake(x, weight, bias, tiles, relu, transposed)


@_ext.register_fake("conv5x5_weight_grad_winograd")
def _conv5x5_weight_grad_winograd_fake(
    x: Tensor, grad_out: Tensor, tiles: int, channels_last: bool = False
) -> Tensor:
    return _weight_grad_fake(x, grad_out, channels_last, 5)


def training_f4x5(x: Tensor, weight: Tensor) -> bool:
    """Whether a training step runs the 5x5 convolution (stride 1, padding 2) of x [N, Cin, H,
    W] with this weight as F(4x4, 5x5) in all three directions (conv5x5_f4 forward and input
    gradient, weight_grad_winograd): float32 on the CPU, TRAINING_F4X5_MIN_TILES 4x4 tiles in
    the batch (3a and 3b at batch 8)."""
    c_out, c_in, kh, kw = weight.shape
    n, _, h, w = x.shape
    return (
        TRAINING_F4X5_ENABLED
        and _F4X5_OP is not None
        and _WEIGHT_GRAD_5X5_OP is not None
        and (kh, kw) == (5, 5)
        and x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and c_in > 0
        and c_out > 0
        and winograd_tiles(n, h, w, 4) >= TRAINING_F4X5_MIN_TILES
    )


def conv5x5_f4(
    x: Tensor, weight: Tensor, bias: Tensor | None, relu: bool, transposed: bool = False
) -> Tensor:
    """conv3x3_f4 for a 5x5 weight [Cout, Cin, 5, 5] (stride 1, padding 2) by F(4x4, 5x5)
    (fused_inception::conv5x5_winograd_f4): the same arguments, result and NaN handling."""
    b = None if bias is None else bias.detach()
    return _F4X5_OP(x, weight.detach(), b, TRAINING_F4X5_TILES, relu, transposed)


def training_winograd(x: Tensor, weight: Tensor) -> bool:
    """Whether a training step runs this kxk convolution's forward and input gradient by
    Winograd: training_f4 (3x3) or training_f4x5 (5x5)."""
    return training_f4(x, weight) or training_f4x5(x, weight)


def conv_winograd(
    x: Tensor, weight: Tensor, bias: Tensor | None, relu: bool, transposed: bool = False
) -> Tensor:
    """conv3x3_f4 or conv5x5_f4 by the weight's kernel size (where training_winograd holds)."""
    conv = conv5x5_f4 if weight.shape[-1] == 5 else conv3x3_f4
    return conv(x, weight, bias, relu=relu, transposed=transposed)


# The weight gradient by F(4x4, 3x3) (weight_grad_winograd, csrc/cpu/winograd_training.cpp): its
# 36 GEMMs are torch.bmm's (MKL), no weight is transformed. Measured alone against ATen's
# (oneDNN's) direct weight gradient, every GoogLeNet block's 3x3s at batch 1, 2, 4, 8 (2-core
# Sapphire Rapids, 2026-12-04): b2 (64 or more channels each way) 1.3-2.4x at batch 8, 1.1-2.2x
# at batch 4, 1.0-1.6x at batch 1 from 16 4x4 tiles, 0.5-0.6x at 4 tiles (7x7, batch 1); the
# torchvision blocks' narrow b3s (16-48 input channels) 0.6-2.0x, mixed, so they stay direct.
# Inside whole training steps (batch 8, interleaved, on and off) it gained less: 3a and 3b
# (392 tiles) 6-9% of the step, the 14x14 blocks (128 tiles) 2-4%; 5a and 5b (32 tiles) level
# to 3% slower at first, 1-8% faster once the step's F(4x4, 3x3) forward and input gradient
# read the weights in place (no per-step weight copies left to compete for the cache).
WEIGHT_GRAD_ENABLED = True
WEIGHT_GRAD_MIN_TILES = 32
WEIGHT_GRAD_MIN_IN_CHANNELS = 64
WEIGHT_GRAD_MIN_OUT_CHANNELS = 64
# 4x4 tiles per chunk: V and Gy take 36 * (Cin + Cout) floats per tile (9 MB for 3b's
# 128 -> 192); 128-1568 measured within 10% of each other at batch 8.
WEIGHT_GRAD_TILES = 196
_WEIGHT_GRAD_OP = (
    _ext.op("conv3x3_weight_grad_winograd").default
    if _ext.has_op("conv3x3_weight_grad_winograd")
    else None
)


def _weight_grad_fake(x: Tensor, grad_out: Tensor, channels_last: bool, k: int) -> Tensor:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return x.new_empty((grad_out.shape[1], x.shape[1], k, k)).contiguous(memory_format=fmt)


@_ext.register_fake("conv3x3_weight_grad_winograd")
def _conv3x3_weight_grad_winograd_fake(
    x: Tensor, grad_out: Tensor, tiles: int, channels_last: bool = False
) -> Tensor:
    return _weight_grad_fake(x, grad_out, channels_last, 3)


def weight_grad_f4_pays(weight: Tensor, x: Tensor) -> bool:
    """Whether the weight gradient of a stride-1, padding-1 3x3 convolution of x with this
    weight runs as F(4x4, 3x3) (weight_grad_winograd): float32 on the CPU, wide enough and with
    WEIGHT_GRAD_MIN_TILES 4x4 tiles in the batch (every b2 at batch 8)."""
    c_out, c_in, kh, kw = weight.shape
    n, _, h, w = x.shape
    return (
        WEIGHT_GRAD_ENABLED
        and _WEIGHT_GRAD_OP is not None
        and (kh, kw) == (3, 3)
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and c_in >= WEIGHT_GRAD_MIN_IN_CHANNELS
        and c_out >= WEIGHT_GRAD_MIN_OUT_CHANNELS
        and winograd_tiles(n, h, w, 4) >= WEIGHT_GRAD_MIN_TILES
    )


def weight_grad_winograd_pays(weight: Tensor, x: Tensor) -> bool:
    """Whether weight_grad_winograd computes this convolution's weight gradient: a 3x3 where
    weight_grad_f4_pays, a 5x5 where training_f4x5."""
    return weight_grad_f4_pays(weight, x) or training_f4x5(x, weight)


def weight_grad_winograd(
    x: Tensor, grad_out: Tensor, k: int, channels_last: bool = False
) -> Tensor | None:
    """The weight gradient [Cout, Cin, k, k] of a kxk convolution (k 3 or 5; stride 1, padding
    k // 2) of x for the output gradient grad_out [N, Cout, H, W], by F(4x4, 3x3) or F(4x4, 5x5)
    (float32 CPU, any memory format), channels_last or contiguous; None where an entry is not
    finite (NaN or inf in x or grad_out, or an overflow in the transforms, which a Winograd sum
    spreads to entries the direct gradient keeps finite): the caller computes it directly then."""
    if k == 5:
        grad_w = _WEIGHT_GRAD_5X5_OP(x, grad_out, TRAINING_F4X5_TILES, channels_last)
    else:
        grad_w = _WEIGHT_GRAD_OP(x, grad_out, WEIGHT_GRAD_TILES, channels_last)
    # One reduction: any NaN or inf makes the sum NaN or inf (a sum of finite entries that
    # overflows only sends a finite gradient to the direct path). isfinite(grad_w).all() took
    # four passes, 0.6 ms on 4e's 3x3.
    return grad_w if math.isfinite(grad_w.sum().item()) else None


def kxk_backward(
    grad_out: Tensor, x: Tensor, weight: Tensor, mask: list[bool]
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """ATen's convolution_backward of a stride-1 convolution with zero padding K // 2 (weight
    [Cout, Cin, K, K], K odd) of x [N, Cin, H, W] for grad_out [N, Cout, H, W]: (grad of x, of
    the weight, of a bias), each None where `mask` (input, weight, bias) is False.

    The input gradient runs by Winograd where a training step runs the forward so
    (training_winograd: conv_winograd of grad_out with W's taps reversed and its channels
    swapped), the weight gradient where weight_grad_winograd_pays (the bias gradient then the
    sum of grad_out); everything else, and a Winograd weight gradient that met NaN or inf, by
    ATen. The input gradient is channels_last where Winograd computed it."""
    need_x, need_w, need_b = mask
    grad_x = grad_w = grad_b = None
    wino_x = need_x and training_winograd(x, weight)
    wino_w = need_w and weight_grad_winograd_pays(weight, x)
    if wino_x or wino_w:  # one dense copy of a strided grad_out for both
        grad_out = grad_out.contiguous(memory_format=torch.channels_last)
    if wino_x:
        grad_x, need_x = conv_winograd(grad_out, weight, None, relu=False, transposed=True), False
    if wino_w:  # in the weight's memory format, which autograd would otherwise copy it into
        channels_last = weight.dim() == 4 and not weight.is_contiguous()
        channels_last = channels_last and weight.is_contiguous(memory_format=torch.channels_last)
        grad_w = weight_grad_winograd(x, grad_out, weight.shape[-1], channels_last)
        if grad_w is not None:
            need_w = False
            if need_b:
                acc = torch.promote_types(grad_out.dtype, torch.float32)
                grad_b, need_b = grad_out.sum((0, 2, 3), dtype=acc).to(grad_out.dtype), False
    if need_x or need_w or need_b:
        k = weight.shape[-1]
        gx, gw, gb = torch.ops.aten.convolution_backward(
            grad_out, x, weight, [weight.shape[0]], [1, 1], [k // 2, k // 2], [1, 1], False,
            [0, 0], 1, [need_x, need_w, need_b],
        )  # fmt: skip
        grad_x = gx if need_x else grad_x
        grad_w = gw if need_w else grad_w
        grad_b = gb if need_b else grad_b
    return grad_x, grad_w, grad_b


def grouped_panels(weight: Tensor, tile: int = 2) -> Tensor:
    """weight [Cout, Cin, 3, 3] -> the P Winograd GEMMs' weights U[k] as the package's own
    kernel's panels [P, ceil(Cout / 16), Cin, 16] (cpu_onednn.pack_panels of each U[k]^T; tile
    2: F(2x2, 3x3), P = 16; tile 4: F(4x4, 3x3), P = 36), what the eval operator's Winograd
    branch takes instead of grouped_weight on the own kernel."""
    from .cpu_onednn import pack_panels

    u = transform_weight4(weight) if tile == 4 else transform_weight(weight)
    return torch.stack([pack_panels(g) for g in u.transpose(1, 2)])


def grouped_matrices(weight: Tensor, tile: int = 2) -> Tensor:
    """weight [Cout, Cin, 3, 3] -> the P Winograd GEMMs' weights U[k] as dense matrices [P, Cin,
    Cout] (tile 2: F(2x2, 3x3), P = 16; tile 4: F(4x4, 3x3), P = 36), what the eval operator's
    Winograd branch takes for its batched matrix product (cpu_onednn.mkl_winograd)."""
    u = transform_weight4(weight) if tile == 4 else transform_weight(weight)
    return u.contiguous()


def onednn_chunk(n: int, h: int, w: int, mkl: bool = False) -> int:
    """Tiles per grouped convolution (with `mkl`, per batched GEMM on MKL) for an n x h x w
    batch (all of them if fewer), the chunk the eval operator is given; a branch in F(4x4, 3x3)
    takes min(chunk, its tiles)."""
    per = MKL_TILES_PER_CHUNK if mkl else ONEDNN_TILES_PER_CHUNK
    return max(1, min(per, winograd_tiles(n, h, w)))


def positions(tile: int) -> int:
    """Winograd positions (GEMMs, groups of the grouped weight) per tile: 16 for F(2x2, 3x3),
    36 for F(4x4, 3x3)."""
    return (tile + 2) ** 2


def onednn_gemm_input(
    c_in: int, chunk: int, tile: int, n: int, h: int, w: int
) -> tuple[int, int, int, int]:
    """The input shape of the grouped convolution over one chunk's V, for reordering its
    weight: [1, P * Cin, 1, size] (P = positions(tile); size = min(chunk, the batch's tiles)
    tiles as the pixels of one image: what the operator runs for an n x h x w input)."""
    size = max(1, min(chunk, winograd_tiles(n, h, w, tile)))
    return (1, positions(tile) * c_in, 1, size)


def winograd_f2x3_input(
    r: Tensor, n: int, h: int, w: int, tile_begin: int = 0, tile_count: int | None = None
) -> Tensor:
    """V = B^T d B of the tiles [tile_begin, tile_begin + tile_count) (None: to the last tile).

    r: [n*h*w, C] float32 CPU, the NHWC rows of a tensor (channels contiguous, any row stride;
       the 4x4 windows read rows of any tile, so r is always the whole tensor).
    Returns V: [tile_count, 16, C]. The tiles (one per 2x2 outputs) are numbered across the
    batch, n * ceil(h/2) * ceil(w/2) in all.
    """
    return _ext.op("winograd_f2x3_input")(r, n, h, w, tile_begin, tile_count)


@_ext.register_fake("winograd_f2x3_input")
def _winograd_f2x3_input_fake(
    r: Tensor, n: int, h: int, w: int, tile_begin: int = 0, tile_count: int | None = None
) -> Tensor:
    count = winograd_tiles(n, h, w) - tile_begin if tile_count is None else tile_count
    return r.new_empty((count, 16, r.shape[1]))


def winograd_f2x3_output_(
    m: Tensor,
    bias: Tensor,
    out: Tensor,
    n: int,
    h: int,
    w: int,
    tile_begin: int = 0,
    tile_count: int | None = None,
) -> None:
    """The range's pixels of out = relu(A^T m A + bias), written in place.

    m:    [16, tile_count, C_out] float32 CPU, contiguous (the 16 GEMMs' outputs);
    bias: [C_out] float32;
    out:  [n*h*w, C_out] float32 CPU rows (channels contiguous, any row stride: a branch's
          slice of the block output), not overlapping m or bias; rows of other tiles are not
          touched.
    """
    _ext.op("winograd_f2x3_output_")(m, bias, out, n, h, w, tile_begin, tile_count)


@_ext.register_fake("winograd_f2x3_output_")
def _winograd_f2x3_output_fake(m, bias, out, n, h, w, tile_begin=0, tile_count=None) -> None:
    check_same_device("fused_inception::winograd_f2x3_output_", m=m, bias=bias, out=out)


def conv3x3_relu_into(
    r_rows: Tensor, u: Tensor, bias: Tensor, out_rows: Tensor, n: int, h: int, w: int
) -> None:
    """out_rows = relu(conv3x3(r, W, pad 1) + bias), written in place.

    r_rows:   [n*h*w, Cin]  NHWC rows of the reduced tensor (channels contiguous, any row stride)
    u:        [16, Cin, Cout]  transform_weight(W)
    bias:     [Cout]
    out_rows: [n*h*w, Cout]  the branch's slice of the output rows (any row stride)
    """
    tiles = winograd_tiles(n, h, w)
    for t0 in range(0, tiles, TILES_PER_CHUNK):
        count = min(TILES_PER_CHUNK, tiles - t0)
        v = winograd_f2x3_input(r_rows, n, h, w, t0, count)  # [count, 16, Cin]
        m = torch.bmm(v.transpose(0, 1), u)  # [16, count, Cout]
        winograd_f2x3_output_(m, bias, out_rows, n, h, w, t0, count)
