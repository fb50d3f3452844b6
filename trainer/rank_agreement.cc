#include "trainer/rank_agreement.h"

#include <algorithm>
#include <cstring>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "comm/consistency.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/text_format.h"

namespace dropk {
namespace {

namespace pb = google::protobuf;

// Fields each rank may set for itself.
const std::set<std::string>& PerRankFields() {
  // init_from is read by rank 0 alone (the others receive its parameters).
  static const std::set<std::string> fields = {"data_dir", "out_dir", "checkpoint_dir",
                                               "num_threads", "init_from"};
  return fields;
}

// At most this many differences are listed, so the error stays one line.
constexpr int kMaxListed = 4;

std::string JoinLines(const std::vector<std::string>& lines) {
  return absl::StrJoin(lines, "\n");
}

// "name: value" -> name.
std::string NameOf(const std::string& line) { return line.substr(0, line.find(": ")); }

std::string ValueOf(const std::string& line) {
  const size_t colon = line.find(": ");
  return colon == std::string::npos ? "" : line.substr(colon + 2);
}

}  // namespace

std::vector<std::string> RunFingerprint(const TrainConfig& config, const Tokenizer& tokenizer,
                                        uint64_t train_tokens, uint64_t val_tokens,
                                        uint32_t tokens_crc) {
  std::vector<std::string> lines;
  const pb::Descriptor* d = TrainConfig::descriptor();
  const pb::Reflection* r = TrainConfig::GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const pb::FieldDescriptor* f = d->field(i);
    if (f->is_repeated() || PerRankFields().count(f->name())) continue;
    std::string value = "unset";
    if (!f->has_presence() || r->HasField(config, f)) {
      value.clear();
      pb::TextFormat::PrintFieldValueToString(config, f, -1, &value);
    }
    lines.push_back(absl::StrCat(f->name(), ": ", value));
  }
  const std::string bytes = tokenizer.SerializeAsString();
  lines.push_back(absl::StrFormat("the tokenizer of data_dir: %s, %d code points, digest %016x",
                                  Tokenizer::Kind_Name(tokenizer.kind()),
                                  tokenizer.code_points_size(), Digest(bytes.data(), bytes.size())));
  lines.push_back(absl::StrCat("the training split of data_dir: ", train_tokens, " tokens"));
  lines.push_back(absl::StrCat("the validation split of data_dir: ", val_tokens, " tokens"));
  // Data of the same sizes and tokenizer but other text differs here; the
  // same tokens in other shards (a host's copy prepared with another
  // --shard-tokens, so another dataset id) do not.
  lines.push_back(absl::StrFormat("the content of data_dir: tokens CRC32C %08x", tokens_crc));
  return lines;
}

absl::Status CheckRanksAgree(const std::vector<std::string>& fingerprint, Communicator& comm,
                             const CollectiveOptions& options) {
  const int world = comm.Size();
  if (world == 1) return absl::OkStatus();
  // Texts differ in length: gather the lengths, then every text padded to
  // the longest (fixed-size collectives only).
  const std::string mine = JoinLines(fingerprint);
  int64_t length = static_cast<int64_t>(mine.size());
  std::vector<int64_t> lengths(world);
  if (absl::Status s =
          comm.AllGather(HostBuffer(&length, 1), HostBuffer(lengths.data(), world), options)
              ->Wait();
      !s.ok()) {
    return s;
  }
  const size_t longest = static_cast<size_t>(*std::max_element(lengths.begin(), lengths.end()));
  std::vector<uint8_t> padded(longest, 0), all(longest * world, 0);
  std::memcpy(padded.data(), mine.data(), mine.size());
  if (absl::Status s = comm.AllGather(HostBuffer(padded.data(), longest),
                                      HostBuffer(all.data(), all.size()), options)
                           ->Wait();
      !s.ok()) {
    return s;
  }
  auto lines_of = [&](int rank) {
    const std::string text(reinterpret_cast<const char*>(all.data()) + rank * longest,
                           static_cast<size_t>(lengths[rank]));
    std::vector<std::string> lines = absl::StrSplit(text, '\n');
    return lines;
  };
  const std::vector<std::string> reference = lines_of(0);
  std::vector<std::string> differences;
  int more = 0;
  for (int rank = 1; rank < world; ++rank) {
    const std::vector<std::string> lines = lines_of(rank);
    for (size_t i = 0; i < std::max(lines.size(), reference.size()); ++i) {
      const std::string ours = i < reference.size() ? reference[i] : "";
      const std::string theirs = i < lines.size() ? lines[i] : "";
      if (ours == theirs) continue;
      if (static_cast<int>(differences.size()) == kMaxListed) {
        ++more;
        continue;
      }
      differences.push_back(absl::StrCat(NameOf(ours.empty() ? theirs : ours), " is ",
                                         ValueOf(ours), " on rank 0 but ", ValueOf(theirs),
                                         " on rank ", rank));
    }
  }
  if (differences.empty()) return absl::OkStatus();
  std::string message = absl::StrCat("the ranks were started with different settings: ",
                                     absl::StrJoin(differences, "; "));
  if (more > 0) absl::StrAppend(&message, "; and ", more, " more");
  absl::StrAppend(&message,
                  "; every rank must run the same config on the same data (only data_dir, "
                  "out_dir, checkpoint_dir and num_threads may differ)");
  return absl::InvalidArgumentError(message);
}

}  // namespace dropk
