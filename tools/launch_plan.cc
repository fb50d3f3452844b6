#include "tools/launch_plan.h"

#include <arpa/inet.h>
#include <netdb.h>

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <map>
#include <regex>
#include <set>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace dropk {
namespace {

// The IPv4 addresses `host` resolves to (itself when it is one).
std::set<std::string> AddressesOf(const std::string& host) {
  std::set<std::string> out = {host};
  addrinfo hints = {};
  hints.ai_family = AF_INET;
  addrinfo* list = nullptr;
  if (getaddrinfo(host.c_str(), nullptr, &hints, &list) != 0) return out;
  for (addrinfo* a = list; a != nullptr; a = a->ai_next) {
    char text[INET_ADDRSTRLEN] = {};
    inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(a->ai_addr)->sin_addr, text, sizeof(text));
    out.insert(text);
  }
  freeaddrinfo(list);
  return out;
}

}  // namespace

// The hostfile keys Open MPI reads as a host's slot count, and those it
// takes that dropk passes through without using (maxima, login, ssh port).
constexpr absl::string_view kSlotKeys[] = {"slots", "count", "cpu"};
constexpr absl::string_view kPassedThroughKeys[] = {
    "max_slots", "max-slots", "slots_max", "slots-max", "max_cpu",  "max-cpu",
    "cpu_max",   "cpu-max",   "max_count", "max-count", "username", "port"};

template <size_t N>
bool IsOneOf(absl::string_view key, const absl::string_view (&keys)[N]) {
  return std::find(std::begin(keys), std::end(keys), key) != std::end(keys);
}

// What a host name, an IPv4 or IPv6 address, or Open MPI's user@host holds.
constexpr char kHostNameCharacters[] =
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_:@[]";

absl::StatusOr<std::vector<HostEntry>> ParseHostfile(const std::string& text,
                                                     const std::string& path) {
  std::vector<HostEntry> hosts;
  std::set<std::string> seen;
  int number = 0;
  int64_t total_slots = 0;
  for (absl::string_view raw : absl::StrSplit(text, '\n')) {
    ++number;
    absl::string_view line = absl::StripAsciiWhitespace(raw.substr(0, raw.find('#')));
    if (line.empty()) continue;
    // Any whitespace separates, as Open MPI reads it ("node1\tslots=4").
    std::vector<std::string> words =
        absl::StrSplit(line, absl::ByAnyChar(" \t\v\f\r"), absl::SkipWhitespace());
    HostEntry entry{words[0], 1, std::string(line)};
    // mpirun's own parse error names only its temporary copy of the file
    // ("Open RTE detected a parse error in the hostfile: /tmp/..."): catch
    // what it would refuse here, naming the user's file and line.
    if (const size_t bad = entry.host.find_first_not_of(kHostNameCharacters);
        bad != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ":", number, ": host name '", absl::CHexEscape(entry.host), "' holds '",
          absl::CHexEscape(entry.host.substr(bad, 1)),
          "', which no host name or address holds (letters, digits, '.', '-', '_', ':', '@', "
          "'[', ']')"));
    }
    for (size_t i = 1; i < words.size(); ++i) {
      absl::string_view value = words[i];
      const size_t equals = value.find('=');
      const absl::string_view key = value.substr(0, equals);
      if (equals != absl::string_view::npos && IsOneOf(key, kPassedThroughKeys)) {
        continue;  // Open MPI's own (maxima, user, port); dropk runs one rank per slot
      }
      if (equals == absl::string_view::npos || !IsOneOf(key, kSlotKeys)) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ":", number, ": '", absl::CHexEscape(words[i]),
            "' is not an option a hostfile line takes (slots=N, or Open MPI's count=, cpu=, "
            "max_slots=, slots_max=, username=, port=)"));
      }
      value.remove_prefix(equals + 1);
      if (!absl::SimpleAtoi(value, &entry.slots) || entry.slots < 1) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ":", number, ": ", key, "=", value, " must be a whole number >= 1"));
      }
    }
    if (!seen.insert(entry.host).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", number, ": host ", entry.host, " listed twice"));
    }
    // The sum becomes mpirun's -np, an int: past it the job got a negative count.
    total_slots += entry.slots;
    if (total_slots > kMaxRanks) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ":", number, ": the hosts' slots add up to more than ", kMaxRanks, " ranks"));
    }
    hosts.push_back(std::move(entry));
  }
  if (hosts.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": lists no host"));
  return hosts;
}

std::optional<std::string> FindLostHost(const std::string& output,
                                        const std::vector<HostEntry>& hosts) {
  static const std::regex kOrteLostDaemon(
      R"((?:Remote daemon: \S+ on node|daemon has unexpectedly failed[^\n]*\n?[^\n]*on node) (\S+))");
  static const std::regex kUnreachableRank(R"(rank \d+ \(([0-9.]+)\) is unreachable)");
  const auto host_named = [&hosts](const std::string& named) -> const HostEntry* {
    for (const HostEntry& h : hosts) {
      if (h.host == named || AddressesOf(h.host).count(named) > 0) return &h;
    }
    return nullptr;  // a host not in the list: nothing to drop
  };
  std::smatch m;
  if (std::regex_search(output, m, kOrteLostDaemon)) {
    const HostEntry* lost = host_named(m[1]);
    return lost ? std::optional<std::string>(lost->host) : std::nullopt;
  }
  // A host cut off names every other host unreachable, and each of them
  // names it: the host named most often is the lost one (ties: the first
  // named). Taking the first mention lost the wrong host when the cut-off
  // rank's line came first.
  std::map<const HostEntry*, int> mentions;
  const HostEntry* lost = nullptr;
  for (auto it = std::sregex_iterator(output.begin(), output.end(), kUnreachableRank);
       it != std::sregex_iterator(); ++it) {
    const HostEntry* named = host_named((*it)[1]);
    if (named == nullptr) continue;
    const int count = ++mentions[named];
    if (lost == nullptr || count > mentions[lost]) lost = named;
  }
  return lost ? std::optional<std::string>(lost->host) : std::nullopt;
}

std::vector<std::string> HostsWithoutStartedRank(const std::vector<HostEntry>& hosts,
                                                 const std::vector<StartedRankHost>& started) {
  // Each rank's names for its host: its name, its addresses, and what the
  // name resolves to here.
  std::set<std::string> seen;
  for (const StartedRankHost& rank : started) {
    const std::set<std::string> resolved = AddressesOf(rank.host);
    seen.insert(resolved.begin(), resolved.end());
    seen.insert(rank.addresses.begin(), rank.addresses.end());
  }
  std::vector<std::string> silent;
  for (const HostEntry& h : hosts) {
    const std::string name = h.host.substr(h.host.find('@') + 1);  // npos + 1 == 0
    const std::set<std::string> names = AddressesOf(name);
    if (std::none_of(names.begin(), names.end(),
                     [&](const std::string& n) { return seen.count(n) > 0; })) {
      silent.push_back(h.host);
    }
  }
  return silent;
}

absl::StatusOr<int> AccumulationFor(int accumulation, int ranks, int new_ranks) {
  const long long sequences = static_cast<long long>(accumulation) * ranks;
  if (new_ranks < 1 || sequences % new_ranks != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot keep the global batch on ", new_ranks, " rank(s): gradient_accumulation_steps ",
        accumulation, " x ", ranks, " rank(s) = ", sequences,
        " micro-batches per step does not divide among them"));
  }
  return static_cast<int>(sequences / new_ranks);
}

int RanksOf(const std::vector<HostEntry>& hosts) {
  int ranks = 0;
  for (const HostEntry& h : hosts) ranks += h.slots;
  return ranks;
}

int FewestRanksAfterRestarts(const std::vector<HostEntry>& hosts, int max_restarts) {
  const std::vector<int> counts = RankCountsAfterLosses(hosts, max_restarts);
  return counts.empty() ? RanksOf(hosts) : counts.front();
}

std::vector<int> RankCountsAfterLosses(const std::vector<HostEntry>& hosts, int max_losses) {
  const int ranks = RanksOf(hosts);
  const int losses = std::min<int>(std::max(max_losses, 0), static_cast<int>(hosts.size()) - 1);
  if (losses <= 0) return {};
  // lost[k]: the slot totals that losing exactly k of the hosts seen so far
  // can take away (a subset-sum over the hosts, at most `losses` of them).
  std::vector<std::set<int>> lost(losses + 1);
  lost[0].insert(0);
  for (const HostEntry& h : hosts) {
    for (int k = losses; k >= 1; --k) {
      for (const int taken : lost[k - 1]) lost[k].insert(taken + h.slots);
    }
  }
  std::set<int> counts;
  for (int k = 1; k <= losses; ++k) {
    for (const int taken : lost[k]) counts.insert(ranks - taken);
  }
  return {counts.begin(), counts.end()};
}

}  // namespace dropk
