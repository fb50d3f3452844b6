// Before the first collective whose size the config decides: were all ranks
// of a job started with the same config on the same data? A rank launched
// with another n_layer would otherwise broadcast and allreduce buffers of
// another size (MPI truncates them or writes past the end of the receiver's
// buffer), one with another eval_interval or log_interval issues other
// collectives (a timeout that blames no setting), one with another
// learning_rate silently trains other parameters.
#ifndef DROPK_TRAINER_RANK_AGREEMENT_H_
#define DROPK_TRAINER_RANK_AGREEMENT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "comm/communicator.h"
#include "config.pb.h"
#include "tokenizer.pb.h"

namespace dropk {

// What one rank runs, as "name: value" lines in a fixed order: every field of
// `config` except those each rank may set for itself (data_dir, out_dir,
// checkpoint_dir, num_threads: paths differ between hosts, cores between
// machines), then the data: a digest of the tokenizer, the token count of
// each split and `tokens_crc`, the CRC32C of the tokens themselves
// (TokensCrc), so copies of the data split into other shards agree.
std::vector<std::string> RunFingerprint(const TrainConfig& config, const Tokenizer& tokenizer,
                                        uint64_t train_tokens, uint64_t val_tokens,
                                        uint32_t tokens_crc);

// Exchanges every rank's RunFingerprint and compares it with rank 0's. OK
// when all agree (always with one rank); otherwise InvalidArgument naming
// each differing entry with rank 0's value and the other rank's. Every rank
// returns the same result. A collective: every rank must call it, before any
// collective whose size depends on the config; a failed collective (a dead
// peer) comes back as its own error.
absl::Status CheckRanksAgree(const std::vector<std::string>& fingerprint, Communicator& comm,
                             const CollectiveOptions& options);

}  // namespace dropk

#endif  // DROPK_TRAINER_RANK_AGREEMENT_H_
