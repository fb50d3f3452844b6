#!/usr/bin/env bash
# Builds what tools/gpu_check.sh runs, for a GPU machine that cannot build
# dropk itself: the lent device machines have CUDA, PyTorch and CMake but none
# of dropk's Debian packages (protobuf, Abseil, OpenBLAS, oneDNN, Open MPI,
# GoogleTest, ...) and no way to fetch them. Run it here, where they are
# installed, then carry the archive:
#
#   bash tools/gpu_bundle.sh                 # writes gpu_bundle/dropk-gpu.tar.xz
#   device run, carry ["gpu_bundle"]:
#     bash tools/gpu_check.sh --prebuilt gpu_bundle/dropk-gpu.tar.xz
#   (its logs come back as $OUT/gpu_check_logs.tar.gz, packed after every step)
#
# The archive holds the CUDA-enabled binaries (sm_90 by default; set
# DROPK_GPU_ARCH) built without -march=native, and the shared libraries they
# need except glibc's own; cuBLAS, cuBLASLt and NCCL are not in it (dropk
# opens them at run time from the machine's CUDA). It also records the
# absolute source and build paths compiled into the tests, which
# gpu_check.sh recreates as links on the GPU machine.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${DROPK_GPU_BUNDLE_BUILD_DIR:-$root/build-gpu-bundle}
out_dir=$root/gpu_bundle
arch=${DROPK_GPU_ARCH:-90}
targets=(dropk_model_tests dropk_mpi_tests dropk_sampler_tests dropk_trainer_tests dropk dropk-train
         dropk-serve dropk-serve-bench dropk-gpu-train-bench)

launcher=()
if command -v ccache > /dev/null; then
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache
            -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
fi
echo "gpu_bundle: building ${targets[*]} for sm_${arch} in $build"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDROPK_CUDA=ON \
  -DDROPK_NATIVE=OFF -DDROPK_MARCH=x86-64-v3 -DCMAKE_CUDA_ARCHITECTURES="$arch" "${launcher[@]}" > /dev/null
cmake --build "$build" -j "$(nproc)" --target "${targets[@]}"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib"
for t in "${targets[@]}"; do cp "$build/bin/$t" "$stage/bin/"; done
# Every shared library the binaries load, but glibc's (the GPU machine's own
# is newer, and mixing two loaders breaks) and the GPU driver's.
for t in "${targets[@]}"; do ldd "$build/bin/$t"; done | awk '/=> \// {print $3}' | sort -u |
  grep -Ev '/(ld-linux[^/]*|libc|libm|libpthread|libdl|librt|libresolv|libcuda|libnvidia[^/]*)\.so' |
  while read -r lib; do cp -L "$lib" "$stage/lib/"; done
{
  echo "source_dir=$root"
  echo "binary_dir=$build"
  echo "commit=$(git -C "$root" rev-parse HEAD)$(git -C "$root" diff --quiet || echo -dirty)"
  echo "cuda_arch=$arch"
} > "$stage/paths"
mkdir -p "$out_dir"
tar -C "$stage" -cJf "$out_dir/dropk-gpu.tar.xz" bin lib paths
echo "gpu_bundle: $out_dir/dropk-gpu.tar.xz, $(du -h "$out_dir/dropk-gpu.tar.xz" | cut -f1)" \
     "($(ls "$stage/lib" | wc -l) libraries); carry gpu_bundle and run" \
     "bash tools/gpu_check.sh --prebuilt gpu_bundle/dropk-gpu.tar.xz"
