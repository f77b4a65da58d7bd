"""The benchmark: FusedInception against torchvision's Inception block and GoogLeNet.

    python -m fused_inception.bench --help        # also the console script fused-inception-bench

Modules (this file imports none of them, so that importing one, timing or peaks, does not
load the command line and the cases):
- cli:      the command line: arguments, the printed header and rows, JSON, the plot, main;
- cases:    what is timed: the eager, fused and compiled implementations of one case, on
            shared weights and rotated inputs (also the pytest-benchmark suite's cases);
- train:    the training steps (in the default run; --no-train leaves them out): a block's
            or the network's forward, backward and (network) SGD step, paper form and
            torchvision's, and the bytes saved for backward;
- timing:   interleaved medians, rotated inputs, first calls timed apart;
- roofline: work and fewest bytes of a block or the network, and their roofline bound;
- peaks:    the device's peak rates (GPU datasheet table, CPU measurement);
- plot:     the speedup chart as plain SVG.
"""
