#include "trainer/shared_dir_probe.h"

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "checkpoint/env.h"

namespace dropk {
namespace {

std::string ReadWhole(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// Creates dir and writes content to probe in it, durably, as a save writes;
// "" when that worked, else why not, with the system's reason (a full disk
// read "cannot write a file there").
std::string WriteProbe(const std::string& dir, const std::string& probe, const std::string& content,
                       Env* env) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return ec.message();
  absl::Status written = WriteDurableFile(env, probe, content);
  return written.ok() ? "" : std::string(written.message());
}

absl::Status CannotWrite(const std::string& dir, const std::string& flag, const std::string& why) {
  return absl::PermissionDeniedError(
      absl::StrCat(flag, "=", dir, ": rank 0 cannot write there: ", why));
}

}  // namespace

absl::Status CheckDirectorySharedByAllRanks(const std::string& dir, const std::string& flag,
                                            Communicator& comm, const CollectiveOptions& options,
                                            Env* env) {
  if (env == nullptr) env = Env::Default();
  if (comm.Size() == 1) {
    // No one to share with, but a directory that cannot be written would
    // still fail only at the first save.
    const std::string probe = absl::StrCat(dir, "/.write-probe");
    const std::string why = WriteProbe(dir, probe, "dropk write probe\n", env);
    std::error_code ignored;
    std::filesystem::remove(probe, ignored);
    return why.empty() ? absl::OkStatus() : CannotWrite(dir, flag, why);
  }
  // A fresh nonce per run: a probe left behind by an earlier run (killed
  // between write and removal) cannot pass for this one's.
  int64_t nonce = 0;
  std::string write_error;
  if (comm.Rank() == 0) {
    nonce = static_cast<int64_t>(std::random_device{}() | (uint64_t{std::random_device{}()} << 32));
  }
  if (absl::Status s = comm.Broadcast(HostBuffer(&nonce, 1), 0, options)->Wait(); !s.ok()) return s;
  const std::string probe = absl::StrCat(dir, "/.shared-probe-", static_cast<uint64_t>(nonce));
  const std::string content = absl::StrCat("dropk shared-directory probe ", nonce, "\n");
  int64_t written = 1;
  if (comm.Rank() == 0) {
    write_error = WriteProbe(dir, probe, content, env);
    if (!write_error.empty()) written = 0;
  }
  if (absl::Status s = comm.Broadcast(HostBuffer(&written, 1), 0, options)->Wait(); !s.ok()) {
    return s;
  }
  if (written == 0) {
    return CannotWrite(dir, flag, write_error.empty() ? "see rank 0's log" : write_error);
  }
  int64_t seen = ReadWhole(probe) == content ? 1 : 0;
  std::vector<int64_t> all(comm.Size());
  absl::Status gathered =
      comm.AllGather(HostBuffer(&seen, 1), HostBuffer(all.data(), all.size()), options)->Wait();
  if (comm.Rank() == 0) {
    std::error_code ignored;
    std::filesystem::remove(probe, ignored);
  }
  if (!gathered.ok()) return gathered;
  std::vector<int> blind;
  for (int r = 0; r < comm.Size(); ++r) {
    if (all[r] == 0) blind.push_back(r);
  }
  if (blind.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      flag, "=", dir, ": rank(s) ", absl::StrJoin(blind, ", "), " of ", comm.Size(),
      " do not see the file rank 0 wrote there; the checkpoint directory must be shared by all "
      "hosts (a shared file system mounted at the same path), since every rank writes its part "
      "of each checkpoint into it"));
}

}  // namespace dropk
