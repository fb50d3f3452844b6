#include "tools/launch_plan.h"

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace dropk {
namespace {

std::vector<HostEntry> Hosts() {
  absl::StatusOr<std::vector<HostEntry>> hosts = ParseHostfile(
      "# three hosts\n10.77.0.1 slots=1\n10.77.0.2\n\n10.77.0.3 slots=2 # big\n", "H");
  EXPECT_TRUE(hosts.ok()) << hosts.status();
  return hosts.ok() ? *hosts : std::vector<HostEntry>{};
}

TEST(LaunchPlanTest, ParsesHostsAndSlots) {
  const std::vector<HostEntry> hosts = Hosts();
  ASSERT_EQ(hosts.size(), 3u);
  EXPECT_EQ(hosts[0].host, "10.77.0.1");
  EXPECT_EQ(hosts[1].slots, 1);
  EXPECT_EQ(hosts[2].slots, 2);
  EXPECT_EQ(hosts[2].line, "10.77.0.3 slots=2");
}

// The machine the launcher runs on, as its start marker would name it.
const StartedRankHost kLauncher = {"launcher-vm", {"127.0.0.1", "10.77.0.9"}};

// A hostfile line is matched to a rank's start marker by name, by the
// rank's own addresses, or by what the rank's host name resolves to.
TEST(LaunchPlanTest, HostsWithoutAStartedRankAreThoseNoMarkerNames) {
  absl::StatusOr<std::vector<HostEntry>> hosts =
      ParseHostfile("node-a slots=2\nme@10.77.0.2\nnode-c\n127.0.0.1\n", "H");
  ASSERT_TRUE(hosts.ok()) << hosts.status();
  EXPECT_EQ(
      HostsWithoutStartedRank(*hosts, {{"node-a", {"10.77.0.1"}}, {"b", {"10.77.0.2"}}}, kLauncher),
      (std::vector<std::string>{"node-c", "127.0.0.1"}));
  EXPECT_EQ(
      HostsWithoutStartedRank(*hosts, {{"launcher-vm", {"127.0.0.1", "10.77.0.9"}}}, kLauncher),
      (std::vector<std::string>{"node-a", "me@10.77.0.2", "node-c"}));
  EXPECT_EQ(HostsWithoutStartedRank(*hosts, {}, kLauncher).size(), 4u);
}

// Every marker lists 127.0.0.1, so a hostfile line 127.0.0.1 (or localhost:
// where mpirun runs, the launcher's machine) counted as started whenever
// any rank anywhere had. It counts only for a rank on the launcher's
// machine: the same host name and, where both have one, an address outside
// loopback in common (network namespaces of one machine share its name).
TEST(LaunchPlanTest, ALoopbackLineStartsOnlyWithARankOnTheLaunchersMachine) {
  // (A hostfile may not hold both localhost and 127.0.0.1: ParseHostfile.)
  const std::vector<HostEntry> hosts = {{"127.0.0.1", 1, "127.0.0.1", {}},
                                        {"10.77.0.2", 1, "10.77.0.2", {}},
                                        {"localhost", 1, "localhost", {}}};
  const StartedRankHost remote = {"node-b", {"127.0.0.1", "10.77.0.2"}};
  EXPECT_EQ(HostsWithoutStartedRank(hosts, {remote}, kLauncher),
            (std::vector<std::string>{"127.0.0.1", "localhost"}));
  // Another namespace of the launcher's machine: its name, not its address.
  const StartedRankHost same_name = {"launcher-vm", {"127.0.0.1", "10.77.0.2"}};
  EXPECT_EQ(HostsWithoutStartedRank(hosts, {same_name}, kLauncher),
            (std::vector<std::string>{"127.0.0.1", "localhost"}));
  const StartedRankHost here = {"launcher-vm", {"127.0.0.1", "10.77.0.9"}};
  EXPECT_EQ(HostsWithoutStartedRank(hosts, {here}, kLauncher),
            (std::vector<std::string>{"10.77.0.2"}));
  // A machine with loopback only is told by its name.
  EXPECT_EQ(HostsWithoutStartedRank(hosts, {{"launcher-vm", {"127.0.0.1"}}}, kLauncher),
            (std::vector<std::string>{"10.77.0.2"}));
  EXPECT_EQ(HostsWithoutStartedRank(hosts, {{"other", {"127.0.0.1"}}}, kLauncher),
            (std::vector<std::string>{"127.0.0.1", "10.77.0.2", "localhost"}));
}

TEST(LaunchPlanTest, RejectsBadHostfilesNamingTheLine) {
  EXPECT_EQ(ParseHostfile("a\nb slots=0\n", "H").status().message(),
            "H:2: slots=0 must be a whole number >= 1");
  EXPECT_EQ(ParseHostfile("a\na\n", "H").status().message(),
            "H:2: host a listed twice (as a before); list it once, with its slots added up");
  EXPECT_EQ(ParseHostfile("# none\n", "H").status().message(), "H: lists no host");
}

// Names of one host that differ in case or user@ made the launcher count
// one host as two; localhost with 127.0.0.1 reached mpirun, which refused
// them naming its own copy of the file; "@" or "me@" named no host at all.
TEST(LaunchPlanTest, RejectsTwoNamesOfOneHostAndAnEmptyHost) {
  EXPECT_EQ(ParseHostfile("node1\nme@NODE1 slots=2\n", "H").status().message(),
            "H:2: host me@NODE1 listed twice (as node1 before); list it once, with its slots "
            "added up");
  EXPECT_EQ(ParseHostfile("localhost slots=1\n127.0.0.1 slots=1\n", "H").status().message(),
            "H:2: host 127.0.0.1 listed twice (as localhost before: both name the machine mpirun "
            "runs on); list it once, with its slots added up");
  // "node1." is node1's absolute DNS name.
  EXPECT_EQ(ParseHostfile("node1\nnode1. slots=2\n", "H").status().message(),
            "H:2: host node1. listed twice (as node1 before); list it once, with its slots "
            "added up");
  EXPECT_EQ(ParseHostfile("localhost.\n127.0.0.1\n", "H").status().message(),
            "H:2: host 127.0.0.1 listed twice (as localhost. before: both name the machine "
            "mpirun runs on); list it once, with its slots added up");
  EXPECT_EQ(ParseHostfile("a\n@ slots=1\n", "H").status().message(),
            "H:2: '@' names no host after its user@");
  EXPECT_EQ(ParseHostfile("me@\n", "H").status().message(),
            "H:1: 'me@' names no host after its user@");
  // 127.0.0.2 is another host to Open MPI (it goes there over ssh).
  EXPECT_TRUE(ParseHostfile("localhost\nnode1\nme@node2\n127.0.0.2\n", "H").ok());
}

// mpirun takes the last -np (the job silently ran on fewer ranks than the
// launcher counted), refuses a second --hostfile with a message naming no
// dropk flag, and runs on -H's hosts whatever the hostfile says.
TEST(LaunchPlanTest, MpirunArgsOverridingTheLaunchersAreRefused) {
  for (const std::string& option :
       {"-np", "--np", "-n", "-c", "-N", "--npernode", "--hostfile", "-machinefile", "-H", "--host",
        "--add-host", "--default-hostfile", "--app"}) {
    const absl::Status status = CheckMpirunArgs({"--oversubscribe", option, "1"});
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << option;
    EXPECT_TRUE(absl::StartsWith(status.message(), "--mpirun-args: " + option + " "))
        << status.message();
  }
  EXPECT_EQ(CheckMpirunArgs({"-x", "DROPK_LAUNCH_ATTEMPT=1"}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(CheckMpirunArgs({"--oversubscribe", "--map-by", "socket:PE=16", "--bind-to", "core",
                               "-x", "OMP_NUM_THREADS=4", "--mca", "plm_rsh_args", "-n"})
                  .ok());
}

// A host name no machine has, or an option Open MPI does not take, reached
// mpirun, whose parse error named only its temporary copy of the file
// ("/tmp/dropk-launch-XXXX/hostfile") and ended in "An internal error has
// occurred in ORTE". They are refused here, naming the user's file and line.
TEST(LaunchPlanTest, RejectsHostNamesAndOptionsMpirunCannotParse) {
  EXPECT_EQ(ParseHostfile("a\nbad!host\n", "H").status().message(),
            "H:2: host name 'bad!host' holds '!', which no host name or address holds "
            "(letters, digits, '.', '-', '_', ':', '@', '[', ']')");
  EXPECT_EQ(ParseHostfile("\x01\x02garbage\n", "H").status().message(),
            "H:1: host name '\\x01\\x02garbage' holds '\\x01', which no host name or address "
            "holds (letters, digits, '.', '-', '_', ':', '@', '[', ']')");
  EXPECT_EQ(ParseHostfile("localhost slots=2 extra=1\n", "H").status().message(),
            "H:1: 'extra=1' is not an option a hostfile line takes (slots=N, or Open MPI's "
            "count=, cpu=, max_slots=, slots_max=, username=, port=)");
  EXPECT_EQ(ParseHostfile("a count=0\n", "H").status().message(),
            "H:1: count=0 must be a whole number >= 1");
  // mpirun -H's host:slots passed, and Open MPI printed two screens of
  // errors; an IPv6 address (bare or bracketed) keeps its colons.
  EXPECT_EQ(ParseHostfile("localhost:2\n", "H").status().message(),
            "H:1: 'localhost:2' is mpirun -H's host:slots form, which a hostfile does not "
            "take; write 'localhost slots=2'");
  EXPECT_EQ(ParseHostfile("a\nme@node7:\n", "H").status().message(),
            "H:2: 'me@node7:' is mpirun -H's host:slots form, which a hostfile does not take; "
            "write 'me@node7 slots=N'");
  EXPECT_TRUE(ParseHostfile("::1 slots=2\nfe80::2\n", "H").ok());
  // What Open MPI takes still parses; count= and cpu= are slot counts too.
  absl::StatusOr<std::vector<HostEntry>> ok = ParseHostfile(
      "user@node-1.example.com slots=2 max_slots=4\n10.0.0.2 max-slots=2 username=me port=2222\n"
      "[fe80::1] count=3\nn_3 cpu=4 slots_max=8\n",
      "H");
  ASSERT_TRUE(ok.ok()) << ok.status();
  ASSERT_EQ(ok->size(), 4u);
  EXPECT_EQ((*ok)[0].slots, 2);
  EXPECT_EQ((*ok)[1].slots, 1);
  EXPECT_EQ((*ok)[2].slots, 3);
  EXPECT_EQ((*ok)[3].slots, 4);
}

// Open MPI gives a hostfile line without slots= the host's core count: a
// file of bare host names put every rank on the first host, and the
// launcher (counting one rank per line) waited for one on the others until
// it dropped them. The job's hostfile states each line's slots.
TEST(LaunchPlanTest, TheJobsHostfileStatesEveryHostsSlots) {
  absl::StatusOr<std::vector<HostEntry>> hosts = ParseHostfile(
      "node1\nme@node2 count=3 max_slots=4 port=2222\n[fe80::1] username=u cpu=2\n", "H");
  ASSERT_TRUE(hosts.ok()) << hosts.status();
  ASSERT_EQ(hosts->size(), 3u);
  EXPECT_EQ(JobHostfileLine((*hosts)[0]), "node1 slots=1");
  EXPECT_EQ(JobHostfileLine((*hosts)[1]), "me@node2 slots=3 max_slots=4 port=2222");
  EXPECT_EQ(JobHostfileLine((*hosts)[2]), "[fe80::1] slots=2 username=u");
}

// Open MPI reads '=' as a word of its own and takes count_max= and
// user_name=; the launcher refused such lines as options it does not take.
TEST(LaunchPlanTest, ReadsSpacesAroundEqualsAndOpenMpisOtherSpellings) {
  absl::StatusOr<std::vector<HostEntry>> hosts =
      ParseHostfile("node1 slots = 4\nnode2\tslots =2 count_max= 3 user_name=me\n", "H");
  ASSERT_TRUE(hosts.ok()) << hosts.status();
  ASSERT_EQ(hosts->size(), 2u);
  EXPECT_EQ((*hosts)[0].slots, 4);
  EXPECT_EQ(JobHostfileLine((*hosts)[1]), "node2 slots=2 count_max=3 user_name=me");
  EXPECT_EQ(ParseHostfile("node1 slots = 0\n", "H").status().message(),
            "H:1: slots=0 must be a whole number >= 1");
}

// mpirun refused "slots=4 max_slots=2" naming only its own copy of the file
// ("An internal error has occurred in ORTE"), and a slot count past an int
// was called "not a whole number".
TEST(LaunchPlanTest, RejectsAMaximumBelowTheSlotsAndSlotsTooLarge) {
  EXPECT_EQ(ParseHostfile("a slots=4 max_slots=2\n", "H").status().message(),
            "H:1: 4 slot(s) but max_slots=2: a host's maximum must hold its slots");
  EXPECT_EQ(ParseHostfile("a\nb slots_max=1 cpu=3\n", "H").status().message(),
            "H:2: 3 slot(s) but slots_max=1: a host's maximum must hold its slots");
  EXPECT_EQ(ParseHostfile("a max_slots=x\n", "H").status().message(),
            "H:1: max_slots=x must be a whole number >= 1");
  EXPECT_EQ(ParseHostfile("a slots=99999999999999\n", "H").status().message(),
            "H:1: slots=99999999999999 is too large: at most 1048576");
  EXPECT_EQ(ParseHostfile("a slots=99999999999999999999999\n", "H").status().message(),
            "H:1: slots=99999999999999999999999 must be a whole number >= 1");
  EXPECT_TRUE(ParseHostfile("a max_slots=2 slots=2\n", "H").ok());
}

// Open MPI separates a host from its options by any whitespace: a tab made
// "node1\tslots=4" one host name with 1 slot, so the job got 5 ranks, not 8.
TEST(LaunchPlanTest, TabsSeparateAHostFromItsSlots) {
  absl::StatusOr<std::vector<HostEntry>> hosts =
      ParseHostfile("node1\tslots=4\nnode2 \t slots=4\t# big\n", "H");
  ASSERT_TRUE(hosts.ok()) << hosts.status();
  ASSERT_EQ(hosts->size(), 2u);
  EXPECT_EQ((*hosts)[0].host, "node1");
  EXPECT_EQ((*hosts)[0].slots, 4);
  EXPECT_EQ((*hosts)[1].host, "node2");
  EXPECT_EQ((*hosts)[1].slots, 4);
}

// Two hosts of 2e9 slots each launched "-np -294967296"; any sum past
// kMaxRanks is refused at the line that crosses it.
TEST(LaunchPlanTest, RefusesSlotsThatAddUpPastTheRankLimit) {
  const absl::Status status = ParseHostfile("a slots=600000\nb slots=600000\n", "H").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("H:2: "), std::string::npos) << status;
  EXPECT_NE(status.message().find("ranks"), std::string::npos) << status;
}

// localhost and this machine's own name (or address) are one machine to
// Open MPI: listed as two lines, the job did not get the ranks they add up
// to, and the relaunch could drop "one" of them.
TEST(LaunchPlanTest, TheLaunchersMachineListedTwiceIsRefusedNamingBothLines) {
  const StartedRankHost launcher{"Vm1", {"127.0.0.1", "10.77.0.9"}};
  const auto check = [&launcher](const std::string& text) {
    return CheckLauncherListedOnce(*ParseHostfile(text, "H"), launcher, "H");
  };
  EXPECT_EQ(check("localhost slots=2\nvm1 slots=2\n").message(),
            "H: lines 'localhost slots=2' and 'vm1 slots=2' both name this machine (Vm1), where "
            "mpirun runs; Open MPI counts a machine once, so the job would not get the ranks the "
            "hostfile adds up to: give it one line with the slots added up");
  EXPECT_EQ(check("10.77.0.9\nnode2\nme@LOCALHOST\n").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(check("::1\nvm1\n").code(), absl::StatusCode::kInvalidArgument);
  // A name with its trailing dot (the absolute DNS name) is the same host.
  EXPECT_NE(check("localhost\nvm1.\n").message().find(
                "lines 'localhost' and 'vm1.' both name this machine (Vm1)"),
            std::string::npos);
  EXPECT_NE(check("localhost.\n10.77.0.9\n").message().find(
                "lines 'localhost.' and '10.77.0.9' both name this machine"),
            std::string::npos);
  // Other hosts, and 127.0.0.2 (another host to Open MPI), are not this machine.
  EXPECT_TRUE(check("localhost slots=2\nnode2\n127.0.0.2\n10.77.0.8\n").ok());
  EXPECT_TRUE(check("vm1 slots=4\n").ok());
}

// The lookups of the lost-host and no-start checks: each name once, at
// most kHostLookupThreads at a time, and within the limit whatever the
// resolver does: a name not answered in time is not known (nullopt).
TEST(LaunchPlanTest, LookupsRunOncePerNameWithinTheLimit) {
  struct Calls {
    std::mutex mutex;
    std::map<std::string, int> per_name;
  };
  auto calls = std::make_shared<Calls>();
  const AddressLookup lookup = [calls](const std::string& host) {
    {
      std::lock_guard<std::mutex> lock(calls->mutex);
      ++calls->per_name[host];
    }
    if (host == "slow") std::this_thread::sleep_for(std::chrono::seconds(3));
    return std::set<std::string>{host, "10.0.0." + std::to_string(host.size())};
  };
  const auto start = std::chrono::steady_clock::now();
  const auto answers =
      AddressesOfEach({"a", "bb", "a", "slow", "bb", "a"}, lookup, std::chrono::milliseconds(300));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  ASSERT_EQ(answers.size(), 3u);
  EXPECT_EQ(answers.at("a"), (std::set<std::string>{"a", "10.0.0.1"}));
  EXPECT_EQ(answers.at("bb"), (std::set<std::string>{"bb", "10.0.0.2"}));
  EXPECT_FALSE(answers.at("slow").has_value());
  std::lock_guard<std::mutex> lock(calls->mutex);
  EXPECT_EQ(calls->per_name, (std::map<std::string, int>{{"a", 1}, {"bb", 1}, {"slow", 1}}));
}

// A job of 300 hosts none of which started printed three lines of 300
// names each.
TEST(LaunchPlanTest, AMessageNamesTheFirstTenHostsAndCountsTheRest) {
  std::vector<std::string> hosts;
  for (int i = 1; i <= 10; ++i) hosts.push_back(absl::StrCat("n", i));
  EXPECT_EQ(HostNamesForMessage(hosts), "n1, n2, n3, n4, n5, n6, n7, n8, n9, n10");
  for (int i = 11; i <= 300; ++i) hosts.push_back(absl::StrCat("n", i));
  EXPECT_EQ(HostNamesForMessage(hosts),
            "n1, n2, n3, n4, n5, n6, n7, n8, n9, n10, ... and 290 more (300 in all)");
  EXPECT_EQ(HostNamesForMessage({}), "");
}

TEST(LaunchPlanTest, FindsTheHostOpenMpiLost) {
  EXPECT_EQ(FindLostHost("ORTE has lost communication with a remote daemon.\n\n"
                         "  HNP daemon   : [[1,0],0] on node vm\n"
                         "  Remote daemon: [[1,0],2] on node 10.77.0.3\n",
                         Hosts()),
            "10.77.0.3");
}

TEST(LaunchPlanTest, FindsTheHostARankNamedUnreachable) {
  EXPECT_EQ(FindLostHost("dropk-train: rank 0 of 3: AllReduce #4 (1 x int64) on rank 0 did not "
                         "complete within 5 s: rank 1 (10.77.0.2) is unreachable (...)",
                         Hosts()),
            "10.77.0.2");
}

// A cut-off host's rank names every other host unreachable, and each of
// them names it. Its line came first in the failure records of a 3-host job
// and host 10.77.0.1 (where mpirun ran) was called lost.
TEST(LaunchPlanTest, TheHostNamedUnreachableMostOftenIsTheLostOne) {
  EXPECT_EQ(FindLostHost("rank 2 of 3: ...: rank 0 (10.77.0.1) is unreachable (...); rank 1 "
                         "(10.77.0.2) is unreachable (...)\n"
                         "rank 0 of 3: ...: rank 2 (10.77.0.3) is unreachable (...)\n"
                         "rank 1 of 3: ...: rank 2 (10.77.0.3) is unreachable (...)\n",
                         Hosts()),
            "10.77.0.3");
}

// A rank's report arrives in its failure record and again in mpirun's copy
// of its stderr. Counted each time, the cut-off rank's repeated report
// outweighed the two healthy ranks naming it, and a healthy host was lost.
TEST(LaunchPlanTest, EachRanksReportCountsOnceHoweverOftenItArrives) {
  const std::string cut_off_report =
      "rank 2 of 3: ...: rank 0 (10.77.0.1) is unreachable (...); rank 1 (10.77.0.2) is "
      "unreachable (...)\n";
  const std::string output = cut_off_report + cut_off_report + cut_off_report +
                             "rank 0 of 3: ...: rank 2 (10.77.0.3) is unreachable (...)\n"
                             "rank 1 of 3: ...: rank 2 (10.77.0.3) is unreachable (...)\n";
  EXPECT_EQ(HostsNamedLost(output, Hosts()), std::vector<std::string>{"10.77.0.3"});
  // Lines naming no reporting rank still count one each.
  EXPECT_EQ(HostsNamedLost("rank 1 (10.77.0.2) is unreachable\nrank 1 (10.77.0.2) is unreachable\n"
                           "rank 0 (10.77.0.1) is unreachable\n",
                           Hosts()),
            std::vector<std::string>{"10.77.0.2"});
}

// With two hosts a cut link makes each rank name the other unreachable:
// a tie, which the first named won, so the healthy host could be dropped.
TEST(LaunchPlanTest, ATieIsBrokenByWhichHostMpirunAloneCannotStartOn) {
  const std::string cut =
      "rank 1 of 2: ...: rank 0 (10.77.0.1) is unreachable (...)\n"
      "rank 0 of 2: ...: rank 1 (10.77.0.2) is unreachable (...)\n";
  EXPECT_EQ(HostsNamedLost(cut, Hosts()), (std::vector<std::string>{"10.77.0.1", "10.77.0.2"}));
  const LostHostChoice choice =
      BreakLostHostTie({"10.77.0.1", "10.77.0.2"}, {"10.77.0.2"}, /*probe_limit_s=*/30);
  EXPECT_EQ(choice.host, "10.77.0.2");
  EXPECT_EQ(choice.reason,
            "the ranks named hosts 10.77.0.1, 10.77.0.2 unreachable as often each; mpirun alone, "
            "run from here on each for at most 30 s, started on 10.77.0.1 but not on "
            "10.77.0.2");
  // Both or neither answering tells nothing: the first named goes, saying so.
  for (const std::vector<std::string>& unanswering :
       {std::vector<std::string>{}, std::vector<std::string>{"10.77.0.1", "10.77.0.2"}}) {
    const LostHostChoice same = BreakLostHostTie({"10.77.0.1", "10.77.0.2"}, unanswering, 30);
    EXPECT_EQ(same.host, "10.77.0.1");
    EXPECT_NE(same.reason.find(unanswering.empty() ? "started on every one of them"
                                                   : "started on none of them"),
              std::string::npos)
        << same.reason;
    EXPECT_NE(same.reason.find("nothing here tells which is cut off: dropping the first named, "
                               "10.77.0.1"),
              std::string::npos)
        << same.reason;
  }
  // No tie: the one named, and no probe needed.
  EXPECT_EQ(BreakLostHostTie({"10.77.0.3"}, {}, 30).host, "10.77.0.3");
  EXPECT_EQ(BreakLostHostTie({"10.77.0.3"}, {}, 30).reason, "");
  EXPECT_EQ(BreakLostHostTie({}, {}, 30).host, std::nullopt);
}

// std::regex matches by recursion, a call per character a repetition
// takes: output holding "daemon has unexpectedly failed" and then a line of
// 100,000 characters (the job's own output, which mpirun passes on and dropk
// launch keeps up to 1 MiB of) overflowed the stack, as did a long run of
// digits after "rank N (". Reports around such lines are still found.
TEST(LaunchPlanTest, LongLinesInTheOutputAreNoCrash) {
  const std::string long_line(1 << 20, 'x');
  EXPECT_EQ(FindLostHost("An ORTE daemon has unexpectedly failed after launch\n" + long_line +
                             "\n" + long_line + " on node 10.77.0.3\n",
                         Hosts()),
            std::nullopt);
  EXPECT_EQ(FindLostHost("Remote daemon: " + long_line + " on node 10.77.0.3\n", Hosts()),
            std::nullopt);
  EXPECT_EQ(FindLostHost(long_line + "\n  Remote daemon: [[1,0],2] on node 10.77.0.3\n" + long_line,
                         Hosts()),
            "10.77.0.3");
  const std::string digits(1 << 20, '1');
  EXPECT_EQ(HostsNamedLost("rank " + digits + " of " + digits + ": rank 1 (" + digits +
                               ") is unreachable\n" + long_line +
                               "\nrank 0 of 3: ...: rank 2 (10.77.0.3) is unreachable (...)\n",
                           Hosts()),
            std::vector<std::string>{"10.77.0.3"});
  // A long report of a large job (a rank naming 500 others) counts each.
  std::string many = "rank 2 of 3: ...:";
  for (int i = 0; i < 500; ++i) many += " rank 0 (10.77.0.1) is unreachable (...);";
  EXPECT_EQ(HostsNamedLost(many + " rank 1 (10.77.0.2) is unreachable (...)\n", Hosts()),
            (std::vector<std::string>{"10.77.0.1", "10.77.0.2"}));
}

TEST(LaunchPlanTest, AFailureWithoutALostHostIsNotOne) {
  EXPECT_EQ(FindLostHost("dropk-train: learning_rate=-1: must be > 0\n", Hosts()), std::nullopt);
  EXPECT_EQ(FindLostHost("Remote daemon: [[1,0],2] on node elsewhere\n", Hosts()), std::nullopt);
}

// A record an earlier, larger attempt's rank wrote late ended a healthy
// relaunch and dropped a host: only records of a job of the attempt's size
// count.
TEST(LaunchPlanTest, RecordsOfAJobOfKeepsOnlyThatJobSizesRanks) {
  const std::vector<std::string> lines = {
      "2026-12-03T16:00:00.000Z host h0 pid 1: rank 0 of 2: AllReduce #3 ...",
      "2026-12-03T16:00:00.000Z host node03 pid 999: rank 2 of 3: AllReduce #50 ...",
      "2026-12-03T16:00:00.000Z host h1 pid 2: rank 1 of 2: step 7: training loss is nan",
      "2026-12-03T16:00:00.000Z host h1 pid 2: rank 2 of 2: out of range",
      "2026-12-03T16:00:00.000Z host h1 pid 2: rank x of 2: not a number",
      "a line of another shape",
  };
  EXPECT_EQ(RecordsOfAJobOf(lines, 2), (std::vector<std::string>{lines[0], lines[2]}));
  EXPECT_EQ(RecordsOfAJobOf(lines, 3), (std::vector<std::string>{lines[1]}));
  EXPECT_TRUE(RecordsOfAJobOf(lines, 4).empty());
}

TEST(LaunchPlanTest, KeepsTheGlobalBatchOnFewerRanks) {
  EXPECT_EQ(*AccumulationFor(2, 3, 2), 3);
  EXPECT_EQ(*AccumulationFor(2, 3, 1), 6);
  EXPECT_EQ(AccumulationFor(1, 3, 2).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(LaunchPlanTest, FewestRanksLoseTheLargestHostsAndKeepOne) {
  const std::vector<HostEntry> hosts = {
      {"a", 4, "a slots=4", {}}, {"b", 1, "b", {}}, {"c", 2, "c", {}}};
  EXPECT_EQ(FewestRanksAfterRestarts(hosts, 0), 7);
  EXPECT_EQ(FewestRanksAfterRestarts(hosts, 1), 3);   // a lost
  EXPECT_EQ(FewestRanksAfterRestarts(hosts, 2), 1);   // a and c lost
  EXPECT_EQ(FewestRanksAfterRestarts(hosts, 50), 1);  // b always stays
}

TEST(LaunchPlanTest, RankCountsAfterLossesListEveryReachableCountOnce) {
  const std::vector<HostEntry> hosts = {
      {"a", 4, "a slots=4", {}}, {"b", 1, "b", {}}, {"c", 2, "c", {}}};
  EXPECT_EQ(RankCountsAfterLosses(hosts, 0), std::vector<int>{});
  EXPECT_EQ(RankCountsAfterLosses(hosts, 1), (std::vector<int>{3, 5, 6}));  // a, c or b lost
  EXPECT_EQ(RankCountsAfterLosses(hosts, 2), (std::vector<int>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(RankCountsAfterLosses(hosts, 50), RankCountsAfterLosses(hosts, 2));  // one stays
  const std::vector<HostEntry> even = {
      {"a", 2, "a slots=2", {}}, {"b", 2, "b slots=2", {}}, {"c", 2, "c slots=2", {}}};
  EXPECT_EQ(RankCountsAfterLosses(even, 3), (std::vector<int>{2, 4}));  // repeats once
}

}  // namespace
}  // namespace dropk
