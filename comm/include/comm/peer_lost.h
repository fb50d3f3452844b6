// A collective that failed because a peer is lost (its host does not answer
// on the network, or refuses: the process died) is told apart from every
// other failure by a mark on its status, not by its code: files, disks and
// token maps fail with Unavailable too, and dropk-train treats only a lost
// peer specially (it leaves ending the job to the launcher for a while,
// since MPI_Abort would wait on that host; any other failure ends the job at
// once). Took any Unavailable for a lost peer: a checkpoint directory that
// could not be created mid-run kept every rank of the job waiting 120 s.
#ifndef DROPK_COMM_PEER_LOST_H_
#define DROPK_COMM_PEER_LOST_H_

#include <string>

#include "absl/status/status.h"

namespace dropk {

// Unavailable `message`, marked as a lost peer (IsPeerLost).
absl::Status PeerLostError(const std::string& message);

// Whether `status` is (or wraps, through WithContext) a PeerLostError.
bool IsPeerLost(const absl::Status& status);

// `status` with "`context`: " before its message, its code and its marks
// kept; OK stays OK.
absl::Status WithContext(const absl::Status& status, const std::string& context);

// The same with `code` instead of its own (`status` not OK).
absl::Status WithContext(const absl::Status& status, const std::string& context,
                         absl::StatusCode code);

// `status` with `message` in place of its own, its code and its marks (every
// payload) kept; OK stays OK. For a message that adds after the original.
absl::Status WithMessage(const absl::Status& status, const std::string& message);

}  // namespace dropk

#endif  // DROPK_COMM_PEER_LOST_H_
