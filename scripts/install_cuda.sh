#!/usr/bin/env bash
# Installs nemotron-cpp with ggml's CUDA backend into the virtual environment VENV (made if missing),
# taking cuBLAS and the CUDA runtime from PyPI (nvidia-cublas, nvidia-cuda-runtime), so that only the
# toolkit's compiler, nvcc 13, is needed. ARCH is the GPU's compute capability for
# CMAKE_CUDA_ARCHITECTURES (default 90: H100, H200; "native" on the machine with the GPU). ggml-python
# is built once, with CUDA, and the package is built against it (no isolated build, which would build
# ggml a second time): 35 minutes on 2 cores for one architecture (58 CPU-minutes), minutes on 16.
#
#   scripts/install_cuda.sh .venv-cuda            # then: .venv-cuda/bin/nemotron-cpp info
set -euo pipefail
venv="${1:?usage: scripts/install_cuda.sh VENV [ARCH]}"
arch="${2:-90}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
ggml="$(grep -o 'ggml-python==[0-9.]*' "$repo/pyproject.toml" | head -1)"
nvcc="$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)"
[ -x "$nvcc" ] || { echo "no nvcc: install the CUDA toolkit's compiler (CUDA 13)" >&2; exit 1; }

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
venv="$(cd "$venv" && pwd)"
"$venv/bin/pip" install --quiet "nvidia-cublas>=13,<14" "nvidia-cuda-runtime>=13,<14" scikit-build-core cmake ninja
cuda="$("$venv/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')"
# CMake looks for libcublas.so; the wheels ship only the versioned libcublas.so.13. Only cuBLAS's
# headers are added: the runtime wheel's headers are newer than the compiler's and must not shadow them.
links="$venv/cuda-link"
mkdir -p "$links/lib" "$links/include"
for lib in cublas cublasLt; do ln -sf "$cuda/lib/lib$lib.so.13" "$links/lib/lib$lib.so"; done
ln -sf "$cuda"/include/cublas*.h "$links/include/"
# GGML_CUDA_NO_VMM: ggml's virtual-memory pool links the driver library (libcuda.so), which only a
# machine with a GPU driver has; without it ggml allocates with cudaMalloc.
CMAKE_ARGS="-DGGML_CUDA=on -DGGML_CUDA_NO_VMM=on -DCMAKE_CUDA_ARCHITECTURES=$arch -DCMAKE_CUDA_COMPILER=$nvcc"
CMAKE_ARGS="$CMAKE_ARGS -DCMAKE_LIBRARY_PATH=$links/lib -DCMAKE_CUDA_FLAGS=-I$links/include" \
    "$venv/bin/pip" install --no-cache-dir "$ggml"
"$venv/bin/pip" install --no-build-isolation "$repo"
"$venv/bin/python" -c "import nemotron_cpp; print(nemotron_cpp.system_info())"
