#include "tools/launch_plan.h"

#include <arpa/inet.h>
#include <netdb.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <regex>
#include <set>
#include <thread>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "trainer/failure_record.h"

namespace dropk {
namespace {

// Whether `address` is a loopback address: IPv4 127.0.0.0/8 or IPv6 ::1
// (bracketed or not).
bool IsLoopback(const std::string& address) {
  in_addr v4;
  if (inet_pton(AF_INET, address.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  return address == "::1" || address == "[::1]";
}

// Whether hostfile host `name`, resolving here to `resolved` (AddressesOf),
// names loopback, the machine mpirun runs on: "localhost", a loopback
// address, or a name whose every IPv4 address is one.
bool NamesLoopback(const std::string& name, const std::set<std::string>& resolved) {
  if (name == "localhost" || IsLoopback(name)) return true;
  bool any = false;
  for (const std::string& a : resolved) {
    in_addr v4;
    if (inet_pton(AF_INET, a.c_str(), &v4) != 1) continue;  // the name itself
    if (!IsLoopback(a)) return false;
    any = true;
  }
  return any;
}

// Whether start-marker host `rank` is the machine `launcher`: the same host
// name, and a shared address outside loopback unless one side has none
// (the network namespaces of one machine share its name; two machines may
// share a name, or docker0's 172.17.0.1, but not both).
bool IsSameMachine(const StartedRankHost& rank, const StartedRankHost& launcher) {
  if (rank.host != launcher.host) return false;
  std::set<std::string> ours;
  for (const std::string& a : launcher.addresses) {
    if (!IsLoopback(a)) ours.insert(a);
  }
  bool theirs = false;
  for (const std::string& a : rank.addresses) {
    if (IsLoopback(a)) continue;
    if (ours.count(a) > 0) return true;
    theirs = true;
  }
  return ours.empty() || !theirs;
}

// libstdc++'s std::regex matches by recursion, a call per character a
// repetition takes: mpirun's output (the job's own output too, up to 1 MiB
// kept) holding "daemon has unexpectedly failed" followed by a line of
// 100,000 characters overflowed the stack, and dropk launch died of a
// segfault when a host was lost. Open MPI's report lines are short, so the
// regex reads every line cut to this length; dropk-train's reports, which
// name a host per unreachable rank and grow with the job, are parsed below
// without a regex.
constexpr size_t kOpenMpiReportLineBytes = 1024;

// `text` with each line cut to `max_bytes` (its '\n' kept).
std::string LinesCut(absl::string_view text, size_t max_bytes) {
  std::string out;
  out.reserve(std::min(text.size(), size_t{1} << 20));
  bool first = true;
  for (const absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!first) out += '\n';
    first = false;
    const absl::string_view kept = line.substr(0, max_bytes);
    out.append(kept.data(), kept.size());
  }
  return out;
}

// The number of ASCII digits (or, with `dots`, digits and '.') in `s` from `pos`.
size_t RunOfDigits(absl::string_view s, size_t pos, bool dots = false) {
  size_t n = 0;
  while (pos + n < s.size() && (absl::ascii_isdigit(static_cast<unsigned char>(s[pos + n])) ||
                                (dots && s[pos + n] == '.'))) {
    ++n;
  }
  return n;
}

// R and N of the first "rank R of N:" in `line` (a rank of dropk-train
// reporting; its digits as written), or nullopt.
struct ReportingRankOf {
  absl::string_view rank, size;
};
std::optional<ReportingRankOf> ReportingRank(absl::string_view line) {
  for (size_t at = line.find("rank "); at != absl::string_view::npos;
       at = line.find("rank ", at + 1)) {
    const size_t p = at + 5;
    const size_t rank_digits = RunOfDigits(line, p);
    if (rank_digits == 0 || line.substr(p + rank_digits, 4) != " of ") continue;
    const size_t size_digits = RunOfDigits(line, p + rank_digits + 4);
    const size_t colon = p + rank_digits + 4 + size_digits;
    if (size_digits > 0 && colon < line.size() && line[colon] == ':') {
      return ReportingRankOf{line.substr(p, rank_digits),
                             line.substr(p + rank_digits + 4, size_digits)};
    }
  }
  return std::nullopt;
}

// ADDR of each "rank R (ADDR) is unreachable" in `line`, in order.
std::vector<std::string> AddressesNamedUnreachable(absl::string_view line) {
  static constexpr absl::string_view kTail = ") is unreachable";
  std::vector<std::string> out;
  for (size_t at = line.find("rank "); at != absl::string_view::npos;
       at = line.find("rank ", at + 1)) {
    const size_t rank_digits = RunOfDigits(line, at + 5);
    const size_t open = at + 5 + rank_digits;
    if (rank_digits == 0 || line.substr(open, 2) != " (") continue;
    const size_t address_bytes = RunOfDigits(line, open + 2, /*dots=*/true);
    if (address_bytes == 0 || line.substr(open + 2 + address_bytes, kTail.size()) != kTail) {
      continue;
    }
    out.emplace_back(line.substr(open + 2, address_bytes));
    at = open + 2 + address_bytes + kTail.size() - 1;  // past this match, as a regex goes on
  }
  return out;
}

}  // namespace

// The hostfile keys Open MPI reads as a host's slot count, and those it
// takes that dropk passes through without using (maxima, login, ssh port).
constexpr absl::string_view kSlotKeys[] = {"slots", "count", "cpu"};
constexpr absl::string_view kMaxSlotKeys[] = {"max_slots", "max-slots", "slots_max", "slots-max",
                                              "max_cpu",   "max-cpu",   "cpu_max",   "cpu-max",
                                              "max_count", "max-count", "count_max", "count-max"};
constexpr absl::string_view kPassedThroughKeys[] = {"username", "user_name", "user-name", "port"};

template <size_t N>
bool IsOneOf(absl::string_view key, const absl::string_view (&keys)[N]) {
  return std::find(std::begin(keys), std::end(keys), key) != std::end(keys);
}

// What a host name, an IPv4 or IPv6 address, or Open MPI's user@host holds.
constexpr char kHostNameCharacters[] =
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_:@[]";

std::string JobHostfileLine(const HostEntry& host) {
  std::string line = absl::StrCat(host.host, " slots=", host.slots);
  for (const std::string& option : host.passed_through) absl::StrAppend(&line, " ", option);
  return line;
}

namespace {

// `line` less the whitespace around each '=': Open MPI reads '=' as a word
// of its own, so "slots = 4" is "slots=4" to it.
std::string JoinedAtEquals(absl::string_view line) {
  std::string joined;
  for (size_t i = 0; i < line.size(); ++i) {
    if (absl::ascii_isspace(line[i])) {
      size_t next = i;
      while (next < line.size() && absl::ascii_isspace(line[next])) ++next;
      const bool beside_equals =
          (next < line.size() && line[next] == '=') || (!joined.empty() && joined.back() == '=');
      if (beside_equals) {
        i = next - 1;
        continue;
      }
    }
    joined.push_back(line[i]);
  }
  return joined;
}

}  // namespace

absl::StatusOr<std::vector<HostEntry>> ParseHostfile(const std::string& text,
                                                     const std::string& path) {
  std::vector<HostEntry> hosts;
  std::map<std::string, std::string> seen;  // a host's key -> the host as first written
  int number = 0;
  int64_t total_slots = 0;
  for (absl::string_view raw : absl::StrSplit(text, '\n')) {
    ++number;
    absl::string_view line = absl::StripAsciiWhitespace(raw.substr(0, raw.find('#')));
    if (line.empty()) continue;
    // Any whitespace separates, as Open MPI reads it ("node1\tslots=4").
    std::vector<std::string> words =
        absl::StrSplit(JoinedAtEquals(line), absl::ByAnyChar(" \t\v\f\r"), absl::SkipWhitespace());
    HostEntry entry{words[0], 1, std::string(line), {}};
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
    std::string max_word;  // "max_slots=N" as written, when the line has one
    int64_t max_slots = 0;
    for (size_t i = 1; i < words.size(); ++i) {
      absl::string_view value = words[i];
      const size_t equals = value.find('=');
      const absl::string_view key = value.substr(0, equals);
      const bool is_max = IsOneOf(key, kMaxSlotKeys);
      const bool passed_through = IsOneOf(key, kPassedThroughKeys);
      if (equals == absl::string_view::npos ||
          !(is_max || passed_through || IsOneOf(key, kSlotKeys))) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ":", number, ": '", absl::CHexEscape(words[i]),
            "' is not an option a hostfile line takes (slots=N, or Open MPI's count=, cpu=, "
            "max_slots=, slots_max=, username=, port=)"));
      }
      if (passed_through) {
        entry.passed_through.push_back(words[i]);  // Open MPI's login options
        continue;
      }
      value.remove_prefix(equals + 1);
      int64_t count = 0;
      if (!absl::SimpleAtoi(value, &count) || count < 1) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ":", number, ": ", key, "=", value, " must be a whole number >= 1"));
      }
      if (count > kMaxRanks) {
        return absl::InvalidArgumentError(absl::StrCat(path, ":", number, ": ", key, "=", value,
                                                       " is too large: at most ", kMaxRanks));
      }
      if (is_max) {
        // dropk starts one rank per slot, so a maximum only has to hold them.
        max_slots = count;
        max_word = words[i];
        entry.passed_through.push_back(words[i]);
      } else {
        entry.slots = static_cast<int>(count);
      }
    }
    // Open MPI refuses "slots=4 max_slots=2" naming its own copy of the
    // file, and takes it written the other way round.
    if (max_slots != 0 && entry.slots > max_slots) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", number, ": ", entry.slots,
                                                     " slot(s) but ", max_word,
                                                     ": a host's maximum must hold its slots"));
    }
    const std::string name = absl::AsciiStrToLower(entry.host.substr(entry.host.find('@') + 1));
    if (name.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", number, ": '", entry.host, "' names no host after its user@"));
    }
    // mpirun -H's "host:slots" written in a hostfile: Open MPI took it for
    // a host of that name and printed two screens of errors. A ':' belongs
    // in an IPv6 address only.
    if (const size_t colon = name.rfind(':'); colon != std::string::npos) {
      in6_addr v6;
      const std::string bare = absl::StrCat(absl::StripPrefix(absl::StripSuffix(name, "]"), "["));
      if (inet_pton(AF_INET6, bare.c_str(), &v6) != 1) {
        const std::string host = entry.host.substr(0, entry.host.rfind(':'));
        const std::string slots = entry.host.substr(entry.host.rfind(':') + 1);
        return absl::InvalidArgumentError(absl::StrCat(
            path, ":", number, ": '", entry.host, "' is mpirun -H's host:slots form, which a "
            "hostfile does not take; write '", host, " slots=", slots.empty() ? "N" : slots, "'"));
      }
    }
    // DNS names ignore case; Open MPI takes localhost and 127.0.0.1 (not
    // 127.0.0.2: that it reaches over ssh) for the node it runs on, and
    // refuses the two with a slot count each, naming its own copy of the
    // file. Names that resolve alike are left to it (that needs DNS).
    // "node1." is node1's absolute DNS name: the same host.
    const std::string dotless(absl::StripSuffix(name, "."));
    const std::string key = dotless == "127.0.0.1" ? "localhost" : dotless;
    if (const auto [it, added] = seen.emplace(key, entry.host); !added) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ":", number, ": host ", entry.host, " listed twice (as ", it->second,
          key == "localhost" ? " before: both name the machine mpirun runs on" : " before",
          "); list it once, with its slots added up"));
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

absl::Status CheckMpirunArgs(const std::vector<std::string>& args) {
  // Open MPI 4 takes long options after one dash or two.
  constexpr absl::string_view kRankCount[] = {"np", "n", "c", "N", "npernode"};
  constexpr absl::string_view kHosts[] = {
      "hostfile", "machinefile", "H", "host", "add-host", "add-hostfile", "default-hostfile"};
  for (size_t i = 0; i < args.size(); ++i) {
    absl::string_view option = args[i];
    if (!absl::ConsumePrefix(&option, "--")) {
      if (!absl::ConsumePrefix(&option, "-")) continue;
    }
    option = option.substr(0, option.find('='));
    if (option == "mca" || option == "gmca") {
      i += 2;  // a parameter's name and value, which may start with '-'
      continue;
    }
    const auto refuse = [&](absl::string_view why) {
      return absl::InvalidArgumentError(
          absl::StrCat("--mpirun-args: ", args[i], " ", why, "; leave it out"));
    };
    if (IsOneOf(option, kRankCount)) {
      return refuse(
          "sets the rank count, which dropk launch sets (one rank per hostfile slot; a relaunch's "
          "gradient_accumulation_steps counts on it)");
    }
    if (IsOneOf(option, kHosts)) {
      return refuse(
          "names hosts, which dropk launch gives mpirun from --hostfile (and drops a lost one "
          "from)");
    }
    if (option == "app") return refuse("replaces the job dropk launch runs");
    if (option == "x" && i + 1 < args.size() && absl::StartsWith(args[i + 1], kLaunchAttemptEnv)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--mpirun-args: -x ", args[i + 1],
                       " sets the variable dropk launch sets to tell its attempts' start "
                       "markers apart; leave it out"));
    }
  }
  return absl::OkStatus();
}

std::map<std::string, std::optional<std::set<std::string>>> AddressesOfEach(
    const std::vector<std::string>& hosts, const AddressLookup& lookup,
    std::chrono::milliseconds limit) {
  // Shared with the lookup threads, which may outlive this call.
  struct Lookups {
    std::mutex mutex;
    std::condition_variable done;
    std::vector<std::string> names;
    std::map<std::string, std::set<std::string>> found;
    size_t next = 0;         // the next name to look up
    bool abandoned = false;  // the caller stopped waiting: look up no more
  };
  auto lookups = std::make_shared<Lookups>();
  const std::set<std::string> distinct(hosts.begin(), hosts.end());
  lookups->names.assign(distinct.begin(), distinct.end());
  const size_t threads = std::min(kHostLookupThreads, lookups->names.size());
  size_t started = 0;
  for (size_t t = 0; t < threads; ++t) {
    try {
      std::thread([lookups, lookup] {
        for (;;) {
          std::string name;
          {
            std::lock_guard<std::mutex> lock(lookups->mutex);
            if (lookups->abandoned || lookups->next == lookups->names.size()) return;
            name = lookups->names[lookups->next++];
          }
          std::set<std::string> addresses = lookup(name);
          std::lock_guard<std::mutex> lock(lookups->mutex);
          lookups->found.emplace(name, std::move(addresses));
          lookups->done.notify_all();
        }
      }).detach();
      ++started;
    } catch (const std::system_error&) {
      break;  // no more threads: the ones started take every name
    }
  }
  std::map<std::string, std::optional<std::set<std::string>>> answers;
  std::unique_lock<std::mutex> lock(lookups->mutex);
  if (started > 0) {
    lookups->done.wait_for(lock, limit,
                           [&] { return lookups->found.size() == lookups->names.size(); });
  }
  lookups->abandoned = true;
  for (const std::string& name : lookups->names) {
    const auto it = lookups->found.find(name);
    answers[name] = it == lookups->found.end() ? std::nullopt
                                               : std::optional<std::set<std::string>>(it->second);
  }
  return answers;
}

std::set<std::string> SystemAddressLookup(const std::string& host) {
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

std::string HostNamesForMessage(const std::vector<std::string>& hosts) {
  if (hosts.size() <= kHostsNamedInAMessage) return absl::StrJoin(hosts, ", ");
  return absl::StrCat(
      absl::StrJoin(hosts.begin(), hosts.begin() + kHostsNamedInAMessage, ", "), ", ... and ",
      hosts.size() - kHostsNamedInAMessage, " more (", hosts.size(), " in all)");
}

std::vector<std::string> HostsNamedLost(const std::string& output,
                                        const std::vector<HostEntry>& hosts) {
  static const std::regex kOrteLostDaemon(
      R"((?:Remote daemon: \S+ on node|daemon has unexpectedly failed[^\n]*\n?[^\n]*on node) (\S+))");
  // Every host's addresses (its name less any user@), looked up once, when
  // a name is not a host's as written. A lookup that did not answer in
  // time matches nothing.
  const auto bare = [](const HostEntry& h) { return h.host.substr(h.host.find('@') + 1); };
  std::optional<std::map<std::string, std::optional<std::set<std::string>>>> addresses;
  const auto host_named = [&](const std::string& named) -> const HostEntry* {
    for (const HostEntry& h : hosts) {
      if (h.host == named || bare(h) == named) return &h;
    }
    if (!addresses) {
      std::vector<std::string> names;
      for (const HostEntry& h : hosts) names.push_back(bare(h));
      addresses = AddressesOfEach(names);
    }
    for (const HostEntry& h : hosts) {
      const std::optional<std::set<std::string>>& found = addresses->at(bare(h));
      if (found && found->count(named) > 0) return &h;
    }
    return nullptr;  // a host not in the list: nothing to drop
  };
  std::smatch m;
  const std::string open_mpi_lines = LinesCut(output, kOpenMpiReportLineBytes);
  if (std::regex_search(open_mpi_lines, m, kOrteLostDaemon)) {
    const HostEntry* lost = host_named(m[1]);
    return lost ? std::vector<std::string>{lost->host} : std::vector<std::string>{};
  }
  // A host cut off names every other host unreachable, and each of them
  // names it: the host named most often is the lost one. Taking the first
  // mention lost the wrong host when the cut-off rank's line came first.
  // A rank's report can arrive more than once (its failure record and
  // mpirun's copy of its stderr): each reporting rank counts once per host
  // it names. A line with no "rank R of N:" counts on its own.
  std::map<const HostEntry*, int> mentions;
  std::vector<const HostEntry*> first_named;  // each once, in the order first named
  std::set<std::pair<std::string, const HostEntry*>> counted;  // (reporting rank, host named)
  int line_number = 0;
  for (const absl::string_view line : absl::StrSplit(output, '\n')) {
    ++line_number;
    const std::optional<ReportingRankOf> reporter = ReportingRank(line);
    const std::string reporter_key = reporter ? absl::StrCat("rank ", reporter->rank)
                                              : absl::StrCat("line ", line_number);
    for (const std::string& address : AddressesNamedUnreachable(line)) {
      const HostEntry* named = host_named(address);
      if (named == nullptr || !counted.insert({reporter_key, named}).second) continue;
      if (++mentions[named] == 1) first_named.push_back(named);
    }
  }
  int most = 0;
  for (const auto& [host, count] : mentions) most = std::max(most, count);
  std::vector<std::string> lost;
  for (const HostEntry* h : first_named) {
    if (mentions[h] == most) lost.push_back(h->host);
  }
  return lost;
}

std::optional<std::string> FindLostHost(const std::string& output,
                                        const std::vector<HostEntry>& hosts) {
  const std::vector<std::string> lost = HostsNamedLost(output, hosts);
  return lost.empty() ? std::nullopt : std::optional<std::string>(lost.front());
}

LostHostChoice BreakLostHostTie(const std::vector<std::string>& tied,
                                const std::vector<std::string>& unanswering, int probe_limit_s) {
  if (tied.empty()) return {};
  if (tied.size() == 1) return {tied.front(), ""};
  const auto answered = [&](const std::string& h) {
    return std::find(unanswering.begin(), unanswering.end(), h) == unanswering.end();
  };
  std::vector<std::string> answering, silent;
  for (const std::string& h : tied) (answered(h) ? answering : silent).push_back(h);
  const std::string named =
      absl::StrCat("the ranks named hosts ", HostNamesForMessage(tied),
                   " unreachable as often each; mpirun alone, run from here on each for at most ",
                   probe_limit_s, " s, ");
  if (silent.empty() || answering.empty()) {
    return {tied.front(), absl::StrCat(named, "started on ", silent.empty() ? "every one" : "none",
                                       " of them, so nothing here tells which is cut off: "
                                       "dropping the first named, ",
                                       tied.front())};
  }
  return {silent.front(), absl::StrCat(named, "started on ", HostNamesForMessage(answering),
                                       " but not on ", HostNamesForMessage(silent))};
}

std::vector<std::string> HostsWithoutStartedRank(const std::vector<HostEntry>& hosts,
                                                 const std::vector<StartedRankHost>& started,
                                                 const StartedRankHost& launcher,
                                                 std::vector<std::string>* not_looked_up) {
  // Each rank's names for its host: its name, its addresses, and what the
  // name resolves to here, loopback left out (every host has 127.0.0.1).
  std::vector<std::string> to_look_up;
  for (const StartedRankHost& rank : started) to_look_up.push_back(rank.host);
  for (const HostEntry& h : hosts) to_look_up.push_back(h.host.substr(h.host.find('@') + 1));
  const std::map<std::string, std::optional<std::set<std::string>>> addresses =
      AddressesOfEach(to_look_up);
  // A name whose lookup did not answer in time stands for itself alone.
  const auto addresses_of = [&addresses](const std::string& name) {
    const std::optional<std::set<std::string>>& found = addresses.at(name);
    return found ? *found : std::set<std::string>{name};
  };
  std::set<std::string> seen;
  bool on_launcher = false;
  for (const StartedRankHost& rank : started) {
    for (const std::string& name : addresses_of(rank.host)) {
      if (!IsLoopback(name)) seen.insert(name);
    }
    for (const std::string& address : rank.addresses) {
      if (!IsLoopback(address)) seen.insert(address);
    }
    on_launcher = on_launcher || IsSameMachine(rank, launcher);
  }
  std::vector<std::string> silent;
  for (const HostEntry& h : hosts) {
    const std::string name = h.host.substr(h.host.find('@') + 1);  // npos + 1 == 0
    const std::set<std::string> names = addresses_of(name);
    const bool started_there =
        NamesLoopback(name, names)
            ? on_launcher
            : std::any_of(names.begin(), names.end(), [&](const std::string& n) {
                return !IsLoopback(n) && seen.count(n) > 0;
              });
    if (started_there) continue;
    // Not known to be silent: its name could not be looked up in time, and
    // a rank may run there under another name. A job that may be training
    // is not ended on that.
    if (!addresses.at(name)) {
      if (not_looked_up != nullptr) not_looked_up->push_back(h.host);
      continue;
    }
    silent.push_back(h.host);
  }
  return silent;
}

absl::Status CheckLauncherListedOnce(const std::vector<HostEntry>& hosts,
                                     const StartedRankHost& launcher, const std::string& path) {
  const auto names_launcher = [&launcher](const HostEntry& h) {
    // npos + 1 == 0; "vm." is vm's absolute DNS name.
    const std::string name(absl::StripSuffix(h.host.substr(h.host.find('@') + 1), "."));
    // What Open MPI itself takes for the local machine (127.0.0.2 it
    // reaches over ssh, as another host).
    if (absl::EqualsIgnoreCase(name, "localhost") || name == "127.0.0.1" || name == "::1" ||
        name == "[::1]") {
      return true;
    }
    if (!launcher.host.empty() && absl::EqualsIgnoreCase(name, launcher.host)) return true;
    return std::find(launcher.addresses.begin(), launcher.addresses.end(), name) !=
           launcher.addresses.end();
  };
  const HostEntry* first = nullptr;
  for (const HostEntry& h : hosts) {
    if (!names_launcher(h)) continue;
    if (first == nullptr) {
      first = &h;
      continue;
    }
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": lines '", first->line, "' and '", h.line, "' both name this machine (",
        launcher.host,
        "), where mpirun runs; Open MPI counts a machine once, so the job "
        "would not get the ranks the hostfile adds up to: give it one line with the slots "
        "added up"));
  }
  return absl::OkStatus();
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

std::vector<std::string> RecordsOfAJobOf(const std::vector<std::string>& lines, int ranks) {
  std::vector<std::string> kept;
  for (const std::string& line : lines) {
    const std::optional<ReportingRankOf> reporter = ReportingRank(line);
    int rank = -1, world = -1;
    if (reporter && absl::SimpleAtoi(reporter->rank, &rank) &&
        absl::SimpleAtoi(reporter->size, &world) && world == ranks && rank < ranks) {
      kept.push_back(line);
    }
  }
  return kept;
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
