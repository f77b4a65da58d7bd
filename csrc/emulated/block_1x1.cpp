// block_1x1 compiled as plain C++ against the CPU SIMT shim (fused_inception::emulated).
#include "cuda/block_1x1.cu"
