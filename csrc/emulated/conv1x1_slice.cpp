// conv1x1_slice compiled as plain C++ against the CPU SIMT shim (fused_inception::emulated).
#include "cuda/conv1x1_slice.cu"
