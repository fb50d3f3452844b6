// The floors of dropk (README "Architecture"), checked on every #include
// line of the tree: a folder may include its own files, the public headers
// (G/include/G/...) of folders on lower floors (except the forbidden pairs
// below), and those of the same-floor folders listed below; tests/ may
// include anything. Each offending line is
// reported as file:line.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <vector>

namespace dropk {
namespace {

namespace fs = std::filesystem;

// Bottom up. Generated protobuf headers (*.pb.h) belong to proto/.
const std::map<std::string, int>& Floors() {
  static const std::map<std::string, int> floors = {
      {"base", 0},    {"proto", 0},   {"model", 1}, {"comm", 1},  {"checkpoint", 1},
      {"trainer", 2}, {"sampler", 3}, {"tools", 4}, {"bench", 4}, {"tests", 5}};
  return floors;
}

// Same-floor uses that are allowed (folder -> folders it may use on its own
// floor). Anything else on the same floor is a sideways arrow.
const std::map<std::string, std::set<std::string>>& Sideways() {
  static const std::map<std::string, std::set<std::string>> sideways = {
      {"proto", {"base"}},
      {"checkpoint", {"model", "comm"}},
  };
  return sideways;
}

// The folder an include names: the first path component when it is a
// top-level folder, "proto" for generated protobuf headers, nullopt for a
// file of the includer's own folder or a system header.
std::optional<std::string> FolderOfInclude(const std::string& include) {
  if (include.size() > 5 && include.ends_with(".pb.h") && include.find('/') == std::string::npos) {
    return "proto";
  }
  const size_t slash = include.find('/');
  if (slash == std::string::npos) return std::nullopt;
  const std::string first = include.substr(0, slash);
  if (!Floors().contains(first)) return std::nullopt;
  return first;
}

// Downward uses that are still refused: the sampler reads checkpoints
// through checkpoint/, never through the training loop.
const std::map<std::string, std::set<std::string>>& Forbidden() {
  static const std::map<std::string, std::set<std::string>> forbidden = {
      {"sampler", {"trainer"}},
  };
  return forbidden;
}

// Why `from_folder` may not include `include` (of `to_folder`), or "" when
// it may. `public_header_exists` says whether to_folder/include/<include>
// exists.
std::string Violation(const std::string& from_folder, const std::string& to_folder,
                      const std::string& include, bool public_header_exists) {
  if (from_folder == to_folder || from_folder == "tests") return "";
  const int from = Floors().at(from_folder), to = Floors().at(to_folder);
  if (to > from) {
    return "points up: " + from_folder + "/ (floor " + std::to_string(from) + ") includes " +
           to_folder + "/ (floor " + std::to_string(to) + ")";
  }
  if (auto it = Forbidden().find(from_folder);
      it != Forbidden().end() && it->second.contains(to_folder)) {
    return from_folder + "/ may not use " + to_folder + "/ (README, Architecture)";
  }
  if (to == from) {
    auto it = Sideways().find(from_folder);
    if (it == Sideways().end() || !it->second.contains(to_folder)) {
      return "points sideways: " + from_folder + "/ and " + to_folder + "/ share floor " +
             std::to_string(from) + " and " + from_folder + "/ may not use " + to_folder + "/";
    }
  }
  if (to_folder != "proto" && !public_header_exists) {
    return "not a public header of " + to_folder + "/ (expected " + to_folder + "/include/" +
           include + ")";
  }
  return "";
}

struct Finding {
  std::string where;  // file:line
  std::string why;
};

std::vector<Finding> ScanTree(const fs::path& root) {
  static const std::regex kInclude(R"(^\s*#\s*include\s*"([^"]+)\")");
  std::vector<Finding> findings;
  for (const auto& [folder, floor] : Floors()) {
    const fs::path dir = root / folder;
    if (!fs::is_directory(dir)) continue;
    for (const auto& entry : fs::recursive_directory_iterator(dir)) {
      const std::string ext = entry.path().extension().string();
      if (!entry.is_regular_file() ||
          (ext != ".cc" && ext != ".h" && ext != ".cu" && ext != ".cuh")) {
        continue;
      }
      std::ifstream in(entry.path());
      std::string line;
      for (int number = 1; std::getline(in, line); ++number) {
        std::smatch m;
        if (!std::regex_search(line, m, kInclude)) continue;
        const std::string include = m[1];
        const std::optional<std::string> to = FolderOfInclude(include);
        if (!to) continue;
        const bool is_public = fs::exists(root / *to / "include" / include);
        const std::string why = Violation(folder, *to, include, is_public);
        if (!why.empty()) {
          findings.push_back(
              {fs::relative(entry.path(), root).string() + ":" + std::to_string(number),
               "#include \"" + include + "\" " + why});
        }
      }
    }
  }
  return findings;
}

TEST(IncludeLayeringTest, NoArrowPointsUpOrIntoPrivateFiles) {
  const std::vector<Finding> findings = ScanTree(DROPK_SOURCE_DIR);
  for (const Finding& f : findings) ADD_FAILURE() << f.where << ": " << f.why;
  EXPECT_TRUE(findings.empty()) << findings.size() << " include(s) break the layering";
}

// The rules themselves, so the scan above cannot pass by accident.
TEST(IncludeLayeringTest, RulesCatchUpwardSidewaysAndPrivateIncludes) {
  EXPECT_NE(Violation("model", "trainer", "trainer/config.h", true), "");
  EXPECT_NE(Violation("comm", "trainer", "trainer/trainer.h", true), "");
  EXPECT_NE(Violation("sampler", "trainer", "trainer/config.h", true), "");
  EXPECT_NE(Violation("model", "comm", "comm/communicator.h", true), "");           // sideways
  EXPECT_NE(Violation("trainer", "checkpoint", "checkpoint/errors.h", false), "");  // private
  EXPECT_NE(Violation("base", "proto", "config.pb.h", true), "");
  EXPECT_EQ(Violation("sampler", "checkpoint", "checkpoint/reader.h", true), "");
  EXPECT_EQ(Violation("checkpoint", "comm", "comm/communicator.h", true), "");
  EXPECT_EQ(Violation("model", "proto", "config.pb.h", true), "");
  EXPECT_EQ(Violation("tests", "sampler", "sampler/http_server.h", true), "");
  EXPECT_EQ(Violation("trainer", "trainer", "trainer/config.h", true), "");
  EXPECT_EQ(FolderOfInclude("config.pb.h"), "proto");
  EXPECT_EQ(FolderOfInclude("errors.h"), std::nullopt);
  EXPECT_EQ(FolderOfInclude("absl/status/status.h"), std::nullopt);
}

}  // namespace
}  // namespace dropk
