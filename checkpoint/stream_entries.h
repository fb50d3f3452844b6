// Private: the streaming pass of the reader, shared by VerifyCheckpoint,
// LoadCheckpointInto and ReadCheckpoint.
#ifndef DROPK_CHECKPOINT_STREAM_ENTRIES_H_
#define DROPK_CHECKPOINT_STREAM_ENTRIES_H_

#include <cstddef>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "checkpoint/env.h"
#include "checkpoint/reader.h"

namespace dropk::checkpoint_internal {

// Receives a staged chunk: `bytes` bytes for flat tensor `target` starting
// at `element`.
using ChunkSink = std::function<void(int target, size_t element, const char* data, size_t bytes)>;
// Where a chunk may be read to directly (host memory), or null to stage it
// in a buffer and hand it to the sink.
using DirectFn = std::function<char*(int target, size_t element)>;

// Every entry of a validated manifest (only model tensors when
// weights_only), streamed in file order through two buffers of
// buffer_bytes: a reader thread fills one while this thread checksums the
// other and hands it to `sink` (may be null), so disk reads overlap CRC and
// copies. A chunk reaches the sink before its entry's CRC is known; on a
// mismatch the result is DataLoss naming the file and tensor, and the
// caller must not use what the sink received.
absl::Status StreamEntries(const std::string& dir, const ValidatedManifest& vm, Env* env,
                           size_t buffer_bytes, bool weights_only, const ChunkSink& sink,
                           const DirectFn& direct = nullptr);

}  // namespace dropk::checkpoint_internal

#endif  // DROPK_CHECKPOINT_STREAM_ENTRIES_H_
