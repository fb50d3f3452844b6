// The decisions of `dropk launch` (tools/launch_command.cc), kept apart from
// its process handling so they can be tested: which hosts there are, which
// one a failed job lost, and how to keep the global batch on fewer ranks.
#ifndef DROPK_TOOLS_LAUNCH_PLAN_H_
#define DROPK_TOOLS_LAUNCH_PLAN_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace dropk {

// One line of an Open MPI hostfile: "HOST [slots=N] [other options]".
struct HostEntry {
  std::string host;
  int slots = 1;
  std::string line;  // as written, for the relaunch's hostfile
};

// The most ranks a hostfile may add up to (mpirun's -np is an int).
inline constexpr int kMaxRanks = 1 << 20;

// Parses an Open MPI hostfile (# comments, blank lines, words separated by
// any whitespace). InvalidArgument naming path:line for a bad slots value, a
// repeated host, or slots adding up to more than kMaxRanks; an empty list is
// InvalidArgument too.
absl::StatusOr<std::vector<HostEntry>> ParseHostfile(const std::string& text,
                                                     const std::string& path);

// The host a failed job lost, read from mpirun's output: Open MPI's report
// of a lost daemon ("Remote daemon: ... on node HOST", "... daemon has
// unexpectedly failed ... on node HOST"), else the host dropk-train's ranks
// named unreachable ("rank R (ADDR) is unreachable") most often (a cut-off
// host's ranks name all the others, and each of the others names it; ties go
// to the first named), mapped to a host of `hosts` by name or resolved
// address. nullopt when no host was lost (a
// bad config, a failed step): then relaunching would fail again.
std::optional<std::string> FindLostHost(const std::string& output,
                                        const std::vector<HostEntry>& hosts);

// What a rank's start marker says (trainer/failure_record.h): its host's
// name and IPv4 addresses.
struct StartedRankHost {
  std::string host;
  std::vector<std::string> addresses;
};

// The hosts of `hosts` (their names, in hostfile order) on which none of
// `started` runs: a rank runs on a hostfile line when the line's host (less
// any user@) is the rank's host name, or resolves to one of the rank's
// addresses or of its host name's.
std::vector<std::string> HostsWithoutStartedRank(const std::vector<HostEntry>& hosts,
                                                 const std::vector<StartedRankHost>& started);

// gradient_accumulation_steps that keeps `accumulation` x `ranks` sequences
// per micro-batch slot on `new_ranks` ranks. FailedPrecondition, saying
// what would be needed, when it does not divide.
absl::StatusOr<int> AccumulationFor(int accumulation, int ranks, int new_ranks);

// The ranks a job on `hosts` runs: their slots added up.
int RanksOf(const std::vector<HostEntry>& hosts);

// The fewest ranks a job on `hosts` may be relaunched on after at most
// `max_restarts` lost hosts (each relaunch drops the one host it lost, and
// one host always stays): the slots left once the largest hosts are gone.
int FewestRanksAfterRestarts(const std::vector<HostEntry>& hosts, int max_restarts);

// Every number of ranks a job on `hosts` may be relaunched on after losing
// 1 to `max_losses` of its hosts (one host always stays), ascending, without
// repeats: {3, 5, 6} for hosts of 4, 1 and 2 slots and one loss.
std::vector<int> RankCountsAfterLosses(const std::vector<HostEntry>& hosts, int max_losses);

}  // namespace dropk

#endif  // DROPK_TOOLS_LAUNCH_PLAN_H_
