// Before the first step of a run: can rank 0 write the checkpoint directory,
// and, with several ranks, does every rank see the same
// checkpoint directory? Every rank writes its part of a checkpoint into a
// directory that rank 0 creates, so a directory on each host's own disk
// would fail at the first save, after the training time before it was spent.
#ifndef DROPK_TRAINER_SHARED_DIR_PROBE_H_
#define DROPK_TRAINER_SHARED_DIR_PROBE_H_

#include <string>

#include "absl/status/status.h"
#include "checkpoint/env.h"
#include "comm/communicator.h"

namespace dropk {

// Rank 0 creates `dir` and writes a probe file there whose name and content
// are a nonce it broadcasts; every rank then looks for that file and the
// ranks exchange what they saw; rank 0 removes the file. All ranks return the
// same result: OK, or FailedPrecondition naming `flag`=dir, the ranks that
// did not see the file and saying that the directory must be shared. A
// failed collective (a dead peer) comes back as its own error; a directory
// rank 0 cannot create or write is PermissionDenied naming it and the
// system's reason (a full disk too). With one rank only that last check
// runs. The probe is written through `env` (null: Env::Default()).
absl::Status CheckDirectorySharedByAllRanks(const std::string& dir, const std::string& flag,
                                            Communicator& comm, const CollectiveOptions& options,
                                            Env* env = nullptr);

}  // namespace dropk

#endif  // DROPK_TRAINER_SHARED_DIR_PROBE_H_
