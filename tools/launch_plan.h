// The decisions of `dropk launch` (tools/launch_command.cc), kept apart from
// its process handling so they can be tested: which hosts there are, which
// one a failed job lost, and how to keep the global batch on fewer ranks.
#ifndef DROPK_TOOLS_LAUNCH_PLAN_H_
#define DROPK_TOOLS_LAUNCH_PLAN_H_

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace dropk {

// One line of an Open MPI hostfile: "HOST [slots=N] [other options]".
struct HostEntry {
  std::string host;
  int slots = 1;
  std::string line;                         // as written, for messages
  std::vector<std::string> passed_through;  // Open MPI's options dropk does not use
};

// The line dropk launch gives mpirun for `host`: "HOST slots=N OPTIONS",
// its slot count always stated. Open MPI gives a line without one the
// host's core count, so a hostfile of bare host names put every rank on
// the first host while the launcher waited for one on each.
std::string JobHostfileLine(const HostEntry& host);

// The most ranks a hostfile may add up to (mpirun's -np is an int).
inline constexpr int kMaxRanks = 1 << 20;

// Parses an Open MPI hostfile (# comments, blank lines, words separated by
// any whitespace). InvalidArgument naming path:line for a bad slots value,
// no host after user@, a repeated host (names compared ignoring case and
// user@; localhost and 127.0.0.1 both name the machine mpirun runs on,
// which Open MPI refuses to have two slot counts for), a maximum
// (max_slots= and Open MPI's other spellings) below the line's slots, or
// slots adding up to more than kMaxRanks; an empty list is InvalidArgument
// too.
absl::StatusOr<std::vector<HostEntry>> ParseHostfile(const std::string& text,
                                                     const std::string& path);

// OK unless `args` (--mpirun-args, split into words) hold an mpirun option
// that overrides what dropk launch sets: the rank count (-np, -n, -c,
// -N, --npernode: one rank per hostfile slot, which the relaunch's
// gradient_accumulation_steps counts on), the hosts (--hostfile,
// --machinefile, -H/--host, --add-host, --add-hostfile, --default-hostfile:
// a lost host is dropped from the hostfile), an app file (--app), or -x
// DROPK_LAUNCH_ATTEMPT. InvalidArgument naming the option.
absl::Status CheckMpirunArgs(const std::vector<std::string>& args);

// The hosts a failed job may have lost, read from mpirun's output: Open
// MPI's report of a lost daemon ("Remote daemon: ... on node HOST", "...
// daemon has unexpectedly failed ... on node HOST") names one; else the
// hosts dropk-train's ranks named unreachable ("rank R (ADDR) is
// unreachable") most often, in the order first named (a cut-off host's ranks
// name all the others, and each of the others names it; with two hosts a cut
// link names each once, a tie); each reporting rank ("rank R of N: ...")
// counts once per host it names, however often its report arrives (its
// failure record and mpirun's copy of its stderr). Each mapped to a host of
// `hosts` by name or
// resolved address. Empty when no host was lost (a bad config, a failed
// step): then relaunching would fail again.
std::vector<std::string> HostsNamedLost(const std::string& output,
                                        const std::vector<HostEntry>& hosts);

// Hosts a message names before it counts the rest (HostNamesForMessage).
inline constexpr size_t kHostsNamedInAMessage = 10;

// `hosts` as a message lists them: joined with ", ", and past the first
// kHostsNamedInAMessage, "... and N more": a job of 300 hosts none of which
// started printed three lines of 300 names each. Pure.
std::string HostNamesForMessage(const std::vector<std::string>& hosts);

// Looks up a host name's IPv4 addresses; the set holds the name itself too
// (and only it when the name does not resolve).
using AddressLookup = std::function<std::set<std::string>(const std::string& host)>;

// The system resolver's AddressLookup (getaddrinfo, IPv4).
std::set<std::string> SystemAddressLookup(const std::string& host);

// How long the lookups of AddressesOfEach may take together by default:
// with DNS dead each lookup takes the resolver's timeout and retries (10 s
// and more), and, one after another, the hosts of a large hostfile held the
// launcher for minutes.
inline constexpr std::chrono::milliseconds kHostLookupsLimit{10000};
// Lookups AddressesOfEach runs at once.
inline constexpr size_t kHostLookupThreads = 8;

// `lookup` of each of `hosts`, each distinct name once, on up to
// kHostLookupThreads threads at once, within `limit` in all: a name not
// answered by then maps to nullopt (not known). The threads still running
// then look up no further name and hold no reference to the caller.
std::map<std::string, std::optional<std::set<std::string>>> AddressesOfEach(
    const std::vector<std::string>& hosts, const AddressLookup& lookup = SystemAddressLookup,
    std::chrono::milliseconds limit = kHostLookupsLimit);

// The first of HostsNamedLost, nullopt when there is none.
std::optional<std::string> FindLostHost(const std::string& output,
                                        const std::vector<HostEntry>& hosts);

// The host to drop among `tied` (HostsNamedLost, named as often each), and
// why in words ("" when there was no tie): the launcher ran mpirun alone on
// each of them for at most `probe_limit_s` seconds, and `unanswering` are
// those where it did not exit 0 in time. When exactly some of them did not
// answer, the first named of those is dropped; when all or none answered,
// the evidence does not tell them apart: the first named is dropped, and
// the reason says so. nullopt host when `tied` is empty.
struct LostHostChoice {
  std::optional<std::string> host;
  std::string reason;
};
LostHostChoice BreakLostHostTie(const std::vector<std::string>& tied,
                                const std::vector<std::string>& unanswering, int probe_limit_s);

// What a rank's start marker says (trainer/failure_record.h): its host's
// name and IPv4 addresses.
struct StartedRankHost {
  std::string host;
  std::vector<std::string> addresses;
};

// The hosts of `hosts` (their names, in hostfile order) on which none of
// `started` runs. `launcher` is the machine running mpirun, as a start
// marker written there would name it. A hostfile line naming loopback (every
// IPv4 address its host resolves to here is 127.0.0.0/8: localhost,
// 127.0.0.1, a name /etc/hosts maps to 127.0.1.1) is where mpirun itself
// runs, the launcher's machine: a rank runs there when it ran on the
// launcher's machine, i.e. its marker names the launcher's host name and
// either side has no address outside loopback or they share one (hosts in
// network namespaces share a name, not their addresses). Any other line
// (less any user@) runs a rank whose host name it is, or whose addresses,
// or its host name's as resolved here, it resolves to, loopback addresses
// left out: every marker lists 127.0.0.1, so matching on it made a
// 127.0.0.1 line "started" by any rank anywhere.
// A host whose name could not be looked up in time (AddressesOfEach) and
// that no rank names as written is not named: it goes to *not_looked_up
// (may be null) instead, since a rank may run there under another name.
std::vector<std::string> HostsWithoutStartedRank(const std::vector<HostEntry>& hosts,
                                                 const std::vector<StartedRankHost>& started,
                                                 const StartedRankHost& launcher,
                                                 std::vector<std::string>* not_looked_up = nullptr);

// OK unless two lines of hostfile `path` name the machine running mpirun,
// `launcher`: localhost, 127.0.0.1 or ::1 (as Open MPI takes them), the
// launcher's host name (ignoring case and user@), or one of its addresses
// outside loopback, written as such (no name is looked up). Open MPI
// counts one machine once, so such a job would not start with the ranks
// the hostfile adds up to. InvalidArgument naming both lines.
absl::Status CheckLauncherListedOnce(const std::vector<HostEntry>& hosts,
                                     const StartedRankHost& launcher, const std::string& path);

// gradient_accumulation_steps that keeps `accumulation` x `ranks` sequences
// per micro-batch slot on `new_ranks` ranks. FailedPrecondition, saying
// what would be needed, when it does not divide.
absl::StatusOr<int> AccumulationFor(int accumulation, int ranks, int new_ranks);

// The ranks a job on `hosts` runs: their slots added up.
int RanksOf(const std::vector<HostEntry>& hosts);

// The failure records of `lines` (trainer/failure_record.h: "TIME host H pid
// P: rank R of W: ...") whose rank was one of a job of `ranks` ranks (W ==
// ranks, R < ranks), in order. A record an earlier attempt's rank wrote late
// (its host cut off, an NFS write landing when the link came back) names
// that attempt's larger job: acted on, it ended a healthy relaunch and
// dropped a host. Lines of another shape are left out too.
std::vector<std::string> RecordsOfAJobOf(const std::vector<std::string>& lines, int ranks);

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
