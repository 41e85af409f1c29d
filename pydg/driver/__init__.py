"""The CUDA driver layer: initialisation, NVRTC, the kernel cache, modules and launches."""
