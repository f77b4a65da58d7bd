// block_kxk compiled as plain C++ against the CPU SIMT shim (fused_inception::emulated).
#include "cuda/block_kxk.cu"
