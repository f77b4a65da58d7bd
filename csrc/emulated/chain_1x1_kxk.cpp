// chain_1x1_kxk compiled as plain C++ against the CPU SIMT shim (fused_inception::emulated).
#include "cuda/chain_1x1_kxk.cu"
