// The warp collectives of model/cuda/warp_mma.h for host threads. A block's
// threads meet at std::barrier objects: one for the block (SyncBlock) and
// one per warp, where a collective is two rounds: every lane posts its
// operands, then every lane reads what it needs and the slots are free again.
#include "support/warp_emulator.h"

#include <barrier>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

namespace dropk::testing {
namespace {

constexpr int kLanes = 32;

// What the lanes of one warp post for a collective.
struct WarpSlots {
  explicit WarpSlots() : barrier(kLanes) {}
  std::barrier<> barrier;
  uint32_t words[kLanes][6] = {};
  float floats[kLanes][4] = {};
};

struct BlockState {
  explicit BlockState(int threads) : barrier(threads) {
    for (int w = 0; w < threads / kLanes; ++w) warps.push_back(std::make_unique<WarpSlots>());
  }
  std::barrier<> barrier;
  std::vector<std::unique_ptr<WarpSlots>> warps;
};

thread_local BlockState* current_block = nullptr;
thread_local int current_thread = 0;

WarpSlots& MyWarp() { return *current_block->warps[current_thread / kLanes]; }
int MyLane() { return current_thread % kLanes; }

// The bf16 in the low (half 0) or high (half 1) 16 bits of word, as a float.
float Bf16At(uint32_t word, int half) {
  const uint32_t bits = (half == 0 ? word & 0xffffu : word >> 16) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

// Element (row, k) of the 16 x 16 A operand the warp posted (words 0..3).
float AElement(const WarpSlots& w, int row, int k) {
  const int lane = 4 * (row % 8) + (k % 8) / 2;
  const int reg = (row >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0);
  return Bf16At(w.words[lane][reg], k % 2);
}

// Element (k, n) of the 16 x 8 B operand the warp posted (words 4..5).
float BElement(const WarpSlots& w, int k, int n) {
  const int lane = 4 * n + (k % 8) / 2;
  return Bf16At(w.words[lane][4 + (k >= 8 ? 1 : 0)], k % 2);
}

}  // namespace

void RunEmulatedGrid(int grid_x, int grid_y, int threads, size_t shared_bytes,
                     const std::function<void(const cuda::ThreadCoord&, uint32_t* shared)>& body) {
  for (int by = 0; by < grid_y; ++by) {
    for (int bx = 0; bx < grid_x; ++bx) {
      BlockState block(threads);
      std::vector<uint32_t> shared((shared_bytes + 3) / 4, 0u);
      std::vector<std::thread> team;
      team.reserve(threads);
      for (int t = 0; t < threads; ++t) {
        team.emplace_back([&, t] {
          current_block = &block;
          current_thread = t;
          body(cuda::ThreadCoord{t, bx, by}, shared.data());
        });
      }
      for (std::thread& thread : team) thread.join();
    }
  }
}

}  // namespace dropk::testing

namespace dropk::cuda {

using testing::MyLane;
using testing::MyWarp;

void MmaBf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  testing::WarpSlots& w = MyWarp();
  const int lane = MyLane();
  for (int i = 0; i < 4; ++i) w.words[lane][i] = a[i];
  w.words[lane][4] = b[0];
  w.words[lane][5] = b[1];
  w.barrier.arrive_and_wait();
  const int g = lane / 4, c = lane % 4;
  for (int j = 0; j < 4; ++j) {
    const int row = g + 8 * (j / 2), col = 2 * c + j % 2;
    float sum = d[j];
    for (int k = 0; k < 16; ++k) sum += testing::AElement(w, row, k) * testing::BElement(w, k, col);
    d[j] = sum;
  }
  w.barrier.arrive_and_wait();
}

float ShflXor(float v, int mask) {
  testing::WarpSlots& w = MyWarp();
  const int lane = MyLane();
  w.floats[lane][0] = v;
  w.barrier.arrive_and_wait();
  const float theirs = w.floats[lane ^ mask][0];
  w.barrier.arrive_and_wait();
  return theirs;
}

uint32_t ShflXor(uint32_t v, int mask) { return ShflIdx(v, MyLane() ^ mask); }

uint32_t ShflIdx(uint32_t v, int src) {
  testing::WarpSlots& w = MyWarp();
  const int lane = MyLane();
  w.words[lane][0] = v;
  w.barrier.arrive_and_wait();
  const uint32_t theirs = w.words[src % 32][0];
  w.barrier.arrive_and_wait();
  return theirs;
}

void SyncBlock() { testing::current_block->barrier.arrive_and_wait(); }

}  // namespace dropk::cuda
