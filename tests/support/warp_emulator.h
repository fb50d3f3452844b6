// A host model of a CUDA grid for kernels written against model/cuda/
// warp_mma.h: every thread of a block is a host thread, so the kernels'
// barriers, shuffles and mma.sync fragments behave as PTX documents them and
// their lane and fragment arithmetic can be tested without a GPU. Slow (a
// barrier round per warp collective); for small shapes in tests.
#ifndef DROPK_TESTS_SUPPORT_WARP_EMULATOR_H_
#define DROPK_TESTS_SUPPORT_WARP_EMULATOR_H_

#include <cstddef>
#include <cstdint>
#include <functional>

#include "cuda/warp_mma.h"

namespace dropk::testing {

// Runs body once for every thread of every block of a (grid_x, grid_y) grid
// of `threads` threads a block (a multiple of 32), blocks one after another.
// Each block gets shared_bytes of zeroed shared memory (4-byte aligned).
// body must call the warp collectives of warp_mma.h as a GPU requires: all
// 32 lanes of a warp together, SyncBlock by every thread of the block.
void RunEmulatedGrid(int grid_x, int grid_y, int threads, size_t shared_bytes,
                     const std::function<void(const cuda::ThreadCoord&, uint32_t* shared)>& body);

}  // namespace dropk::testing

#endif  // DROPK_TESTS_SUPPORT_WARP_EMULATOR_H_
