#include "trainer/prepare_data.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "checkpoint/env.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/tokenizer.h"
#include "support/fault_injection_env.h"
#include "support/forwarding_env.h"
#include "support/subprocess.h"
#include "trainer/token_dataset.h"
#include "trainer/token_file.h"
#include "trainer/tokenizer_file.h"
#include "trainer/trainer.h"

namespace dropk {
namespace {

using ::testing::AllOf;
using ::testing::AnyOf;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using ::testing::Not;
using ::testing::StartsWith;

const char kShakespeare[] = DROPK_SOURCE_DIR "/data/tinyshakespeare.txt";
const char kDropk[] = DROPK_BINARY_DIR "/bin/dropk";
const char kGpt2Dir[] = DROPK_SOURCE_DIR "/data/gpt2";

// Every token of a prepared split, in order, and the files holding it.
std::vector<int32_t> AllTokens(const std::string& dir, const std::string& split) {
  absl::StatusOr<TokenDataset> data = TokenDataset::Open(dir, split);
  EXPECT_TRUE(data.ok()) << data.status();
  if (!data.ok()) return {};
  std::vector<int32_t> ids(data->size());
  data->Read(0, ids.size(), ids.data());
  return ids;
}

// The real Env, except that appending to a file whose path ends with
// `full_suffix` fails as on a full disk.
class FullDiskEnv : public ForwardingEnv {
 public:
  explicit FullDiskEnv(std::string full_suffix)
      : ForwardingEnv(Env::Default()), full_suffix_(std::move(full_suffix)) {}

  absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) override {
    absl::StatusOr<std::unique_ptr<WritableFile>> file = base_->NewWritableFile(path);
    if (!file.ok() || !path.ends_with(full_suffix_)) return file;
    return std::unique_ptr<WritableFile>(std::make_unique<FullFile>(path, *std::move(file)));
  }

 private:
  class FullFile : public WritableFile {
   public:
    FullFile(std::string path, std::unique_ptr<WritableFile> file)
        : path_(std::move(path)), file_(std::move(file)) {}
    absl::Status Append(const void*, size_t) override {
      return absl::ResourceExhaustedError(
          absl::StrCat("cannot write '", path_, "': No space left on device"));
    }
    absl::Status Sync() override { return file_->Sync(); }
    absl::Status Close() override { return file_->Close(); }

   private:
    std::string path_;
    std::unique_ptr<WritableFile> file_;
  };

  std::string full_suffix_;
};

// Every file of `dir` (names, contents), the lock file left out.
std::map<std::string, std::string> Files(const std::string& dir) {
  std::map<std::string, std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name != ".dropk-prepare.lock") files[name] = test_util::ReadFile(entry.path().string());
  }
  return files;
}

class PrepareDataTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::filesystem::path(::testing::TempDir()) /
           (std::string("dropk_prepare_") + info->name() + "_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  // Writes two corpora with the same number of distinct characters but other
  // token ids (the audit's repro): the start of Shakespeare, and the same
  // with every 'z' turned into '\x01' (which sorts first). Returns their
  // paths.
  std::pair<std::string, std::string> TwoCorpora() {
    std::string a = test_util::ReadFile(kShakespeare).substr(0, 40000);
    EXPECT_NE(a.find('z'), std::string::npos);
    std::string b = a;
    std::replace(b.begin(), b.end(), 'z', '\x01');
    std::ofstream(Path("a.txt"), std::ios::binary) << a;
    std::ofstream(Path("b.txt"), std::ios::binary) << b;
    return {Path("a.txt"), Path("b.txt")};
  }

  // Runs the dropk binary with `args` (already shell-quoted).
  test_util::CommandResult RunDropk(const std::string& args) {
    return test_util::RunCommand(std::string(kDropk) + " " + args);
  }

  std::filesystem::path dir_;
};

TEST_F(PrepareDataTest, ShakespeareCharMatchesNanoGpt) {
  PrepareOptions options;
  options.kind = Tokenizer::CHAR;
  options.inputs = {kShakespeare};
  options.out_dir = Path("out/char");  // parents are created too
  auto summary = PrepareData(options);
  ASSERT_TRUE(summary.ok()) << summary.status();
  // nanoGPT's data/shakespeare_char/prepare.py prints these figures.
  EXPECT_EQ(summary->vocab_size, 65);
  EXPECT_EQ(summary->train_tokens, 1003854u);
  EXPECT_EQ(summary->val_tokens, 111540u);

  auto train = TokenFile::Open(Path("out/char/train.bin"));
  auto val = TokenFile::Open(Path("out/char/val.bin"));
  auto tokenizer = LoadTokenizer(Path("out/char/tokenizer.pb"));
  ASSERT_TRUE(train.ok()) << train.status();
  ASSERT_TRUE(val.ok()) << val.status();
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ(train->size(), 1003854u);
  EXPECT_EQ(val->size(), 111540u);
  EXPECT_EQ(train->vocab_size(), 65);
  EXPECT_EQ(tokenizer->vocab_size(), 65);

  // The split is contiguous: train then val decode back to the whole text.
  std::vector<int32_t> ids(train->size() + val->size());
  train->Read(0, train->size(), ids.data());
  val->Read(0, val->size(), ids.data() + train->size());
  EXPECT_EQ(tokenizer->Decode(ids), test_util::ReadFile(kShakespeare));
}

TEST_F(PrepareDataTest, ShakespeareByteHasVocab256) {
  PrepareOptions options;
  options.kind = Tokenizer::BYTE;
  options.inputs = {kShakespeare};
  options.out_dir = Path("byte");
  auto summary = PrepareData(options);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->vocab_size, 256);
  EXPECT_EQ(summary->train_tokens + summary->val_tokens, 1115394u);
  EXPECT_EQ(summary->train_tokens, 1003854u);
  auto tokenizer = LoadTokenizer(Path("byte/tokenizer.pb"));
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ(tokenizer->kind(), Tokenizer::BYTE);
}

TEST_F(PrepareDataTest, RejectsBadInputs) {
  const std::string empty = Path("empty.txt");
  std::ofstream(empty).flush();
  const std::string tiny = Path("tiny.txt");
  std::ofstream(tiny) << "ab";
  std::filesystem::create_directories(Path("empty_dir"));
  const std::string latin1 = Path("latin1.txt");
  std::ofstream(latin1) << "caf\xE9";

  struct Case {
    std::string input;
    double val_fraction;
    std::string message;
  };
  const std::vector<Case> cases = {
      {Path("missing.txt"), 0.1, Path("missing.txt")},
      {Path("empty_dir"), 0.1, "holds no regular files"},
      {empty, 0.1, empty + "' is empty"},
      {latin1, 0.1, "invalid UTF-8 at byte offset 3"},
      {kShakespeare, 0.0, "val_fraction 0 "},
      {kShakespeare, 1.0, "val_fraction 1 "},
      {kShakespeare, -0.5, "val_fraction -0.5"},
      {tiny, 0.9, "into 0 train and 2 val"},    // int(2 * 0.1) = 0
      {tiny, 1e-17, "into 2 train and 0 val"},  // 1 - 1e-17 rounds to 1
  };
  for (const Case& c : cases) {
    PrepareOptions options;
    options.kind = Tokenizer::CHAR;
    options.inputs = {c.input};
    options.out_dir = Path("out");
    options.val_fraction = c.val_fraction;
    auto summary = PrepareData(options);
    ASSERT_FALSE(summary.ok()) << c.input << " " << c.val_fraction;
    EXPECT_THAT(std::string(summary.status().message()), HasSubstr(c.message));
  }
}

// An --out with a carriage return (a script saved with Windows line
// endings) made a directory "out\r" that dropk-train then refused as a
// data_dir: it is refused first, shown escaped, and nothing is created.
TEST_F(PrepareDataTest, AnOutWithAControlCharacterIsRefusedBeforeAnyWork) {
  PrepareOptions options;
  options.kind = Tokenizer::CHAR;
  options.inputs = {kShakespeare};
  options.out_dir = Path("out\r");
  absl::StatusOr<PrepareSummary> summary = PrepareData(options);
  ASSERT_FALSE(summary.ok());
  EXPECT_EQ(summary.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(summary.status().message()),
              HasSubstr("out\\u000d\": holds a control character"));
  EXPECT_FALSE(std::filesystem::exists(options.out_dir));
}

// A path's ESC or carriage return in any error of `dropk` reached the
// terminal raw (an ESC sequence recoloured it); the error line shows it as
// \u001b, and the line still names the path.
TEST_F(PrepareDataTest, CliShowsAPathsControlCharactersEscaped) {
  const std::string input = Path("no\x1b[31mne.txt");
  test_util::CommandResult run =
      RunDropk("data prepare --tokenizer char --out '" + Path("out") + "' '" + input + "'");
  EXPECT_EQ(run.exit_code, 2) << run.err;
  EXPECT_THAT(run.err, HasSubstr("no\\u001b[31mne.txt' does not exist"));
  EXPECT_THAT(run.err, Not(HasSubstr("\x1b")));
}

// A file whose size the file system gives as 0 but that holds text (a
// /proc file: its size is not known before it is read) read "is empty".
// It is read to its end instead.
TEST_F(PrepareDataTest, AFileOfSizeZeroThatHoldsTextIsReadToItsEnd) {
  const std::string proc_file = "/proc/version";  // the same text at every read
  std::error_code ec;
  if (std::filesystem::file_size(proc_file, ec) != 0 || ec) {
    GTEST_SKIP() << proc_file << " is missing or gives its size: nothing to test here";
  }
  const std::string text = test_util::ReadFile(proc_file);
  ASSERT_GT(text.size(), 20u);
  PrepareOptions options;
  options.kind = Tokenizer::BYTE;
  options.inputs = {proc_file};
  options.out_dir = Path("proc");
  auto summary = PrepareData(options);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->input_bytes, text.size());
  EXPECT_EQ(summary->train_tokens + summary->val_tokens, text.size());

  // One that is not a file at all says what it is.
  options.inputs = {"/dev/null"};
  summary = PrepareData(options);
  EXPECT_EQ(summary.status().message(),
            "input '/dev/null' is a character device, not a regular file or a directory");
}

// --threads 100000: OpenMP could not start the team and the process died
// (SIGSEGV, or libgomp's "Thread creation failed" and exit).
TEST_F(PrepareDataTest, MoreThreadsThanItStartsAreRefused) {
  PrepareOptions options;
  options.kind = Tokenizer::CHAR;
  options.inputs = {kShakespeare};
  options.out_dir = Path("out");
  for (const int threads : {-1, kMaxPrepareThreads + 1, 100000}) {
    options.threads = threads;
    auto summary = PrepareData(options);
    ASSERT_FALSE(summary.ok()) << threads;
    EXPECT_EQ(summary.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(summary.status().message()),
                HasSubstr(absl::StrCat("threads ", threads, " must be in [0, 1024]")));
  }
}

TEST_F(PrepareDataTest, TwoTokensSplitOneOne) {
  const std::string tiny = Path("tiny.txt");
  std::ofstream(tiny) << "ab";
  PrepareOptions options;
  options.inputs = {tiny};
  options.out_dir = Path("out");
  auto summary = PrepareData(options);  // int(2 * 0.9) = 1
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->vocab_size, 2);
  EXPECT_EQ(summary->train_tokens, 1u);
  EXPECT_EQ(summary->val_tokens, 1u);
}

TEST_F(PrepareDataTest, Gpt2ShakespeareMatchesOpenAiWhateverTheThreadsAndChunks) {
  std::vector<std::vector<int32_t>> runs;
  for (const int threads : {1, 2}) {
    PrepareOptions options;
    options.kind = Tokenizer::GPT2_BPE;
    options.gpt2_dir = kGpt2Dir;
    options.inputs = {kShakespeare};
    options.out_dir = Path("gpt2_" + std::to_string(threads));
    options.threads = threads;
    options.chunk_bytes = 4096;  // hundreds of cuts, each must leave the tokens alone
    auto summary = PrepareData(options);
    ASSERT_TRUE(summary.ok()) << summary.status();
    EXPECT_EQ(summary->vocab_size, 50257);
    EXPECT_EQ(summary->train_tokens + summary->val_tokens, 338025u);  // data/gpt2/README.md
    EXPECT_EQ(summary->train_tokens, 304222u);                        // int(338025 * 0.9)
    auto train = TokenFile::Open(options.out_dir + "/train.bin");
    ASSERT_TRUE(train.ok()) << train.status();
    EXPECT_EQ(train->token_width(), 2);  // uint16 tokens
    std::vector<int32_t> ids = AllTokens(options.out_dir, "train");
    const std::vector<int32_t> val = AllTokens(options.out_dir, "val");
    ids.insert(ids.end(), val.begin(), val.end());
    runs.push_back(ids);
    EXPECT_EQ(test_util::ReadFile(options.out_dir + "/train.bin"),
              test_util::ReadFile(Path("gpt2_1/train.bin")));
  }
  auto tokenizer = LoadTokenizer(Path("gpt2_1/tokenizer.pb"));
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ(tokenizer->kind(), Tokenizer::GPT2_BPE);
  const std::string text = test_util::ReadFile(kShakespeare);
  EXPECT_EQ(runs[0], *tokenizer->Encode(text));  // the same as encoding it whole
  EXPECT_EQ(runs[1], runs[0]);
  EXPECT_EQ(tokenizer->Decode(runs[0]), text);
}

TEST_F(PrepareDataTest, LargeSplitsBecomeShardsAndOldFilesGo) {
  PrepareOptions options;
  options.kind = Tokenizer::BYTE;
  options.inputs = {kShakespeare};
  options.out_dir = Path("bytes");
  auto whole = PrepareData(options);
  ASSERT_TRUE(whole.ok()) << whole.status();
  const std::vector<int32_t> train = AllTokens(options.out_dir, "train");
  const std::vector<int32_t> val = AllTokens(options.out_dir, "val");

  options.shard_tokens = 300000;
  auto sharded = PrepareData(options);
  ASSERT_TRUE(sharded.ok()) << sharded.status();
  EXPECT_EQ(sharded->train_files, 4);                                     // 1003854 tokens
  EXPECT_EQ(sharded->val_files, 1);                                       // 111540 tokens: val.bin
  EXPECT_FALSE(std::filesystem::exists(options.out_dir + "/train.bin"));  // the old one went
  EXPECT_TRUE(std::filesystem::exists(options.out_dir + "/train-00003.bin"));
  EXPECT_FALSE(std::filesystem::exists(options.out_dir + "/train-00004.bin"));
  EXPECT_TRUE(std::filesystem::exists(options.out_dir + "/val.bin"));
  EXPECT_FALSE(std::filesystem::exists(options.out_dir + "/.prepare-tokens.tmp"));
  EXPECT_EQ(AllTokens(options.out_dir, "train"), train);
  EXPECT_EQ(AllTokens(options.out_dir, "val"), val);

  options.shard_tokens = 100'000'000;  // and back: the shards go
  ASSERT_TRUE(PrepareData(options).ok());
  EXPECT_FALSE(std::filesystem::exists(options.out_dir + "/train-00000.bin"));
  EXPECT_EQ(AllTokens(options.out_dir, "train"), train);
}

// Shards from index 100000 on have six digits; the cleanup took only
// five-digit names for shards and left them, to be read with the new data.
TEST_F(PrepareDataTest, StaleShardsPastIndex99999AreRemovedToo) {
  PrepareOptions options;
  options.kind = Tokenizer::BYTE;
  options.inputs = {kShakespeare};
  options.out_dir = Path("bytes");
  std::filesystem::create_directories(options.out_dir);
  const std::vector<int32_t> tokens = {1, 2, 3};
  for (const std::string& name : {ShardFileName("train", 99999), ShardFileName("train", 100000),
                                  ShardFileName("val", 123456)}) {
    ASSERT_TRUE(WriteTokenFile(options.out_dir + "/" + name, tokens, 256).ok()) << name;
  }
  std::ofstream(options.out_dir + "/train-000001.bin") << "not a name dropk writes\n";
  ASSERT_TRUE(PrepareData(options).ok());
  EXPECT_TRUE(std::filesystem::exists(options.out_dir + "/train.bin"));
  EXPECT_FALSE(std::filesystem::exists(options.out_dir + "/train-99999.bin"));
  EXPECT_FALSE(std::filesystem::exists(options.out_dir + "/train-100000.bin"));
  EXPECT_FALSE(std::filesystem::exists(options.out_dir + "/val-123456.bin"));
  EXPECT_TRUE(std::filesystem::exists(options.out_dir + "/train-000001.bin"));
}

// The audit's repro: a second preparation into the same --out whose disk
// filled up at val.bin left its new train.bin beside the old val.bin and
// tokenizer.pb, which trained without complaint (same vocabulary size).
// Now nothing is renamed until every file is written: the earlier data set
// stays byte for byte, and no temporary is left behind.
TEST_F(PrepareDataTest, FullDiskAtValKeepsTheEarlierDataSetWhole) {
  const auto [a, b] = TwoCorpora();
  PrepareOptions options;
  options.inputs = {a};
  options.out_dir = Path("data");
  options.val_fraction = 0.9;
  ASSERT_TRUE(PrepareData(options).ok());
  const std::map<std::string, std::string> before = Files(options.out_dir);

  FullDiskEnv full_at_val("/val.bin.tmp");
  options.inputs = {b};
  options.val_fraction = 0.5;
  options.env = &full_at_val;
  const absl::Status failed = PrepareData(options).status();
  EXPECT_TRUE(absl::IsResourceExhausted(failed)) << failed;
  EXPECT_THAT(std::string(failed.message()), HasSubstr("val.bin.tmp"));
  EXPECT_EQ(Files(options.out_dir), before);  // no new train.bin, no .tmp, no spool
  auto data = LoadTrainingData(options.out_dir);
  ASSERT_TRUE(data.ok()) << data.status();
  std::vector<int32_t> ids(data->train.size());
  data->train.Read(0, ids.size(), ids.data());
  EXPECT_EQ(data->tokenizer.Decode(ids), test_util::ReadFile(a).substr(0, ids.size()));
}

// A preparation over an earlier one that fails at any file-system step
// (write, fsync, rename, removal: the n-th, for every n) leaves either the
// earlier data set, or the new one, or files of both that LoadTrainingData
// refuses by their dataset ids; never a mix that trains.
TEST_F(PrepareDataTest, FailingAtAnyStepNeverLeavesAMixThatLoads) {
  const auto [a, b] = TwoCorpora();
  const std::string text_a = test_util::ReadFile(a), text_b = test_util::ReadFile(b);
  PrepareOptions options;
  options.inputs = {a};
  options.out_dir = Path("earlier");
  options.val_fraction = 0.9;
  ASSERT_TRUE(PrepareData(options).ok());

  options.inputs = {b};
  options.val_fraction = 0.5;
  options.out_dir = Path("data");
  int refused_by_id = 0;
  // The same layout as the earlier data set, and shards (train and val
  // two each) replacing its single files.
  for (const uint64_t shard_tokens : {uint64_t{100'000'000}, uint64_t{15000}}) {
    SCOPED_TRACE(absl::StrCat("shard_tokens ", shard_tokens));
    options.shard_tokens = shard_tokens;
    int earlier = 0, later = 0;
    for (int64_t n = 0;; ++n) {
      std::filesystem::remove_all(options.out_dir);
      std::filesystem::copy(Path("earlier"), options.out_dir);
      FaultInjectionEnv env(Env::Default());
      env.FailWritesAfter(n);
      options.env = &env;
      const bool prepared = PrepareData(options).ok();
      options.env = nullptr;
      auto data = LoadTrainingData(options.out_dir);
      if (!data.ok()) {
        // By the dataset ids, or (old train.bin beside new shards) by the
        // two forms of one split.
        const std::string message(data.status().message());
        EXPECT_THAT(message, AnyOf(HasSubstr("different `dropk data prepare` runs"),
                                   HasSubstr("prepare the data again")))
            << "n=" << n;
        refused_by_id += message.find("dataset id") != std::string::npos;
      } else {
        std::vector<int32_t> ids(data->train.size() + data->val.size());
        data->train.Read(0, data->train.size(), ids.data());
        data->val.Read(0, data->val.size(), ids.data() + data->train.size());
        const std::string text = data->tokenizer.Decode(ids);
        EXPECT_TRUE(text == text_a || text == text_b) << "n=" << n << ": a mix loaded";
        (text == text_a ? earlier : later) += 1;
      }
      if (prepared) break;
      ASSERT_LT(n, 1000) << "the preparation never succeeded";
    }
    EXPECT_GT(earlier, 0);
    EXPECT_GT(later, 0);
  }
  EXPECT_GT(refused_by_id, 0);  // a failure between the renames
}

// A preparation killed by SIGTERM leaves its spool (the whole corpus's
// tokens) and staged files; the next one into the directory removes them,
// and only them.
TEST_F(PrepareDataTest, TemporariesOfAKilledPreparationAreRemovedByTheNext) {
  const auto [a, b] = TwoCorpora();
  PrepareOptions options;
  options.inputs = {a};
  options.out_dir = Path("data");
  std::filesystem::create_directories(options.out_dir);
  const std::vector<std::string> leftovers = {".prepare-tokens.tmp", "train.bin.tmp",
                                              "train-00007.bin.tmp", "val.bin.tmp",
                                              "tokenizer.pb.tmp"};
  for (const std::string& name : leftovers) {
    std::ofstream(options.out_dir + "/" + name) << "left by a killed run";
  }
  std::ofstream(options.out_dir + "/notes.tmp") << "not ours";
  ASSERT_TRUE(PrepareData(options).ok());
  for (const std::string& name : leftovers) {
    EXPECT_FALSE(std::filesystem::exists(options.out_dir + "/" + name)) << name;
  }
  EXPECT_TRUE(std::filesystem::exists(options.out_dir + "/notes.tmp"));
}

TEST_F(PrepareDataTest, DirectoriesAndSeveralFilesAreReadInOrder) {
  std::filesystem::create_directories(Path("corpus/sub"));
  std::ofstream(Path("corpus/b.txt")) << "second file\n";
  std::ofstream(Path("corpus/a.txt")) << "first file\n";
  std::ofstream(Path("corpus/sub/c.txt")) << "third, in a subdirectory\n";
  std::ofstream(Path("last.txt")) << "and the last one, given alone\n";
  PrepareOptions options;
  options.kind = Tokenizer::BYTE;
  options.inputs = {Path("corpus"), Path("last.txt")};
  options.out_dir = Path("out");
  options.val_fraction = 0.5;
  auto summary = PrepareData(options);
  ASSERT_TRUE(summary.ok()) << summary.status();
  std::vector<int32_t> ids = AllTokens(options.out_dir, "train");
  const std::vector<int32_t> val = AllTokens(options.out_dir, "val");
  ids.insert(ids.end(), val.begin(), val.end());
  const std::string text(ids.begin(), ids.end());
  EXPECT_EQ(text,
            "first file\nsecond file\nthird, in a subdirectory\nand the last one, given alone\n");
}

TEST_F(PrepareDataTest, Gpt2NeedsItsFiles) {
  std::ofstream(Path("in.txt")) << "hello";
  PrepareOptions options;
  options.kind = Tokenizer::GPT2_BPE;
  options.gpt2_dir = Path("nowhere");
  options.inputs = {Path("in.txt")};
  options.out_dir = Path("out");
  auto summary = PrepareData(options);
  ASSERT_FALSE(summary.ok());
  EXPECT_THAT(std::string(summary.status().message()), HasSubstr("encoder.json"));
  EXPECT_THAT(std::string(summary.status().message()), HasSubstr("--gpt2-dir"));
}

// Preparing a directory into itself a second time read the first run's
// train.bin, val.bin and tokenizer.pb as corpus text (byte: no error, twice
// the tokens).
TEST_F(PrepareDataTest, PreparingADirectoryIntoItselfAgainReadsOnlyTheText) {
  const std::string dir = Path("in_and_out");
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/a.txt") << "hello world, hello world\n";
  PrepareOptions options;
  options.kind = Tokenizer::BYTE;
  options.inputs = {dir};
  options.out_dir = dir;
  options.val_fraction = 0.2;
  auto first = PrepareData(options);
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = PrepareData(options);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->input_bytes, first->input_bytes);
  EXPECT_EQ(second->train_tokens, first->train_tokens);

  options.inputs = {dir + "/train.bin"};
  auto named = PrepareData(options);
  ASSERT_FALSE(named.ok());
  EXPECT_EQ(named.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(named.status().message()),
              HasSubstr("train.bin' is a file this preparation writes"));
}

// A corpus directory holding an earlier preparation in a subdirectory (here
// under other names too) was read whole: its token files and tokenizer.pb
// became "text" for byte and gpt2.
TEST_F(PrepareDataTest, PreparedDataInsideACorpusDirectoryIsNotReadAsText) {
  std::filesystem::create_directories(Path("corpus"));
  std::ofstream(Path("corpus/a.txt")) << "hello world, hello world\n";
  PrepareOptions options;
  options.kind = Tokenizer::BYTE;
  options.inputs = {Path("corpus")};
  options.out_dir = Path("corpus/prepared");
  options.val_fraction = 0.2;
  auto first = PrepareData(options);
  ASSERT_TRUE(first.ok()) << first.status();
  std::filesystem::copy_file(Path("corpus/prepared/train.bin"), Path("corpus/renamed.dat"));
  options.out_dir = Path("elsewhere");
  auto second = PrepareData(options);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->input_bytes, first->input_bytes);
  EXPECT_EQ(AllTokens(options.out_dir, "train"), AllTokens(Path("corpus/prepared"), "train"));

  options.inputs = {Path("corpus/renamed.dat")};
  auto named = PrepareData(options);
  ASSERT_FALSE(named.ok());
  EXPECT_EQ(named.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(named.status().message()),
              HasSubstr("renamed.dat' is prepared data (a token file or its tokenizer), not text"));

  // The directory of a preparation alone read "holds no regular files",
  // though it held train.bin, val.bin and tokenizer.pb.
  options.inputs = {Path("corpus/prepared")};
  auto prepared_alone = PrepareData(options);
  ASSERT_FALSE(prepared_alone.ok());
  EXPECT_EQ(prepared_alone.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(prepared_alone.status().message()),
              StartsWith("input directory '" + Path("corpus/prepared") +
                         "' holds no text: its 4 file(s) are prepared data"));
}

// Preparations run at once into one directory (a prepare step on every rank
// of a job) shared the spool: one printed "prepared" and left a train.bin
// cut short. While one holds the directory, another is refused.
TEST_F(PrepareDataTest, ASecondPreparationIntoABusyDirectoryIsRefused) {
  std::ofstream(Path("a.txt")) << "hello world, hello world\n";
  std::filesystem::create_directories(Path("out"));
  // flock conflicts between two opens of the file, in one process too.
  const int fd = ::open(Path("out/.dropk-prepare.lock").c_str(), O_RDWR | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
  PrepareOptions options;
  options.kind = Tokenizer::BYTE;
  options.inputs = {Path("a.txt")};
  options.out_dir = Path("out");
  auto busy = PrepareData(options);
  ASSERT_FALSE(busy.ok());
  EXPECT_EQ(busy.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(busy.status().message()),
              HasSubstr("is in use by another dropk data prepare"));
  EXPECT_FALSE(std::filesystem::exists(Path("out/train.bin")));
  ::close(fd);
  auto done = PrepareData(options);
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->train_tokens + done->val_tokens, 25u);
}

// GPT-2's vocab.bpe cut short (a partial download): the error said only
// "Tokenizer.merges[1547] (279, 260) repeats a merge", naming no file.
TEST_F(PrepareDataTest, TruncatedGpt2FilesAreNamed) {
  const std::string gpt2 = Path("gpt2_cut");
  std::filesystem::create_directories(gpt2);
  std::filesystem::copy_file(DROPK_SOURCE_DIR "/data/gpt2/encoder.json", gpt2 + "/encoder.json");
  const std::string merges = test_util::ReadFile(DROPK_SOURCE_DIR "/data/gpt2/vocab.bpe");
  std::ofstream(gpt2 + "/vocab.bpe", std::ios::binary) << merges.substr(0, 10000);
  std::ofstream(Path("in.txt")) << "hello";
  PrepareOptions options;
  options.kind = Tokenizer::GPT2_BPE;
  options.gpt2_dir = gpt2;
  options.inputs = {Path("in.txt")};
  options.out_dir = Path("out");
  auto summary = PrepareData(options);
  ASSERT_FALSE(summary.ok());
  EXPECT_EQ(summary.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(summary.status().message()),
              AllOf(HasSubstr(gpt2), HasSubstr("vocab.bpe")));
}

// A --gpt2-dir that names a file read "DIR/encoder.json: stat: Not a
// directory" and exited 1, as for a failing disk; one that does not exist
// read as a missing encoder.json. Both name the flag and exit 2, writing
// nothing; a missing vocab.bpe names the flag too.
TEST_F(PrepareDataTest, CliNamesAGpt2DirThatIsNotADirectory) {
  const std::string input = std::string(" '") + kShakespeare + "'";
  std::ofstream(Path("a_file")) << "not a directory\n";
  test_util::CommandResult run = RunDropk("data prepare --tokenizer gpt2 --gpt2-dir '" +
                                          Path("a_file") + "' --out '" + Path("o") + "'" + input);
  EXPECT_EQ(run.exit_code, 2) << run.err;
  EXPECT_EQ(run.err, "dropk: --gpt2-dir " + Path("a_file") +
                         ": is not a directory; name the directory of GPT-2's encoder.json "
                         "and vocab.bpe\n");
  run = RunDropk("data prepare --tokenizer gpt2 --gpt2-dir '" + Path("nowhere") + "' --out '" +
                 Path("o") + "'" + input);
  EXPECT_EQ(run.exit_code, 2) << run.err;
  EXPECT_EQ(run.err, "dropk: --gpt2-dir " + Path("nowhere") +
                         ": does not exist; name the directory of GPT-2's encoder.json and "
                         "vocab.bpe\n");
  EXPECT_FALSE(std::filesystem::exists(Path("o")));

  std::filesystem::create_directories(Path("no_merges"));
  std::filesystem::copy_file(std::string(kGpt2Dir) + "/encoder.json",
                             Path("no_merges") + "/encoder.json");
  run = RunDropk("data prepare --tokenizer gpt2 --gpt2-dir '" + Path("no_merges") + "' --out '" +
                 Path("o") + "'" + input);
  EXPECT_EQ(run.exit_code, 2) << run.err;
  EXPECT_THAT(run.err, AllOf(StartsWith("dropk: " + Path("no_merges") + "/vocab.bpe: "),
                             HasSubstr("pass --gpt2-dir")));
}

// Invalid UTF-8 past the first chunk read "input file 'F' (from byte offset
// 1048575): invalid UTF-8 at byte offset 66843": the chunk's start and the
// offset in the chunk, leaving the sum to the reader. It is placed by its
// offset in the file.
TEST_F(PrepareDataTest, InvalidUtf8IsPlacedByItsOffsetInTheFile) {
  std::string text;
  for (int i = 0; i < 20; ++i) text += "line of text\n";  // 260 bytes
  text += "caf\xE9\n";
  std::ofstream(Path("in.txt"), std::ios::binary) << text;
  PrepareOptions options;
  options.kind = Tokenizer::CHAR;
  options.inputs = {Path("in.txt")};
  options.out_dir = Path("out");
  options.chunk_bytes = 64;
  auto summary = PrepareData(options);
  ASSERT_FALSE(summary.ok());
  EXPECT_EQ(summary.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(summary.status().message(),
            "input file '" + Path("in.txt") + "': invalid UTF-8 at byte offset 263 (byte 0xE9)");
}

// nanoGPT's prepare.py writes train.bin and val.bin (bare uint16 tokens)
// too: --out at its data directory replaced them in silence. Files of the
// names a preparation writes that are not dropk's are refused, named, and
// left as they were; dropk's own are replaced as before.
TEST_F(PrepareDataTest, FilesOfItsNamesThatAreNotDropksAreNotReplaced) {
  std::ofstream(Path("in.txt")) << test_util::ReadFile(kShakespeare).substr(0, 5000);
  PrepareOptions options;
  options.kind = Tokenizer::CHAR;
  options.inputs = {Path("in.txt")};
  options.out_dir = Path("nanogpt");
  std::filesystem::create_directories(options.out_dir);
  const std::string uint16_tokens("\x12\x00\x05\x00\x20\x00", 6);
  for (const char* name : {"train.bin", "val.bin", "meta.pkl"}) {
    std::ofstream(options.out_dir + "/" + name, std::ios::binary) << uint16_tokens;
  }
  const std::map<std::string, std::string> before = Files(options.out_dir);
  auto summary = PrepareData(options);
  ASSERT_FALSE(summary.ok());
  EXPECT_EQ(summary.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(summary.status().message()),
              HasSubstr("--out " + options.out_dir + ": " + options.out_dir +
                        "/train.bin is not a dropk token file"));
  EXPECT_EQ(Files(options.out_dir), before);

  options.out_dir = Path("other_tokenizer");
  std::filesystem::create_directories(options.out_dir);
  std::ofstream(options.out_dir + "/tokenizer.pb") << "a sentencepiece model, say";
  summary = PrepareData(options);
  ASSERT_FALSE(summary.ok());
  EXPECT_THAT(std::string(summary.status().message()),
              HasSubstr(options.out_dir + "/tokenizer.pb is not a tokenizer dropk wrote"));
  EXPECT_EQ(test_util::ReadFile(options.out_dir + "/tokenizer.pb"), "a sentencepiece model, say");

  options.out_dir = Path("dropk");
  ASSERT_TRUE(PrepareData(options).ok());
  options.inputs = {kShakespeare};
  ASSERT_TRUE(PrepareData(options).ok()) << "dropk's own data is replaced";
}

TEST_F(PrepareDataTest, CliPreparesGpt2) {
  ASSERT_TRUE(std::filesystem::exists(kDropk)) << kDropk << " is not built";
  const std::string out = Path("cli_gpt2");
  const test_util::CommandResult run =
      RunDropk(std::string("data prepare --tokenizer gpt2 --gpt2-dir '") + kGpt2Dir +
               "' --threads 2 --out '" + out + "' '" + kShakespeare + "'");
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_THAT(run.out, HasSubstr("GPT2_BPE vocab 50257"));
  EXPECT_THAT(run.out, HasSubstr("train 304222 tokens"));
  EXPECT_THAT(run.out, HasSubstr("val 33803 tokens"));
}

TEST_F(PrepareDataTest, CliPreparesData) {
  ASSERT_TRUE(std::filesystem::exists(kDropk)) << kDropk << " is not built";
  const std::string out = Path("cli");
  const test_util::CommandResult run =
      RunDropk(std::string("data prepare --tokenizer char --out '") + out +
               "' --val-fraction 0.1 '" + kShakespeare + "'");
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_THAT(run.out, HasSubstr("vocab 65"));
  EXPECT_THAT(run.out, HasSubstr("train 1003854"));
  EXPECT_THAT(run.out, HasSubstr("val 111540"));
  EXPECT_THAT(run.out, HasSubstr(out));
  EXPECT_TRUE(std::filesystem::exists(out + "/train.bin"));
  EXPECT_TRUE(std::filesystem::exists(out + "/val.bin"));
  EXPECT_TRUE(std::filesystem::exists(out + "/tokenizer.pb"));
}

TEST_F(PrepareDataTest, CliMissingInputExits2NamingThePath) {
  ASSERT_TRUE(std::filesystem::exists(kDropk)) << kDropk << " is not built";
  const std::string missing = Path("no_such_input.txt");
  const test_util::CommandResult run =
      RunDropk("data prepare --tokenizer char --out '" + Path("o") + "' '" + missing + "'");
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_THAT(run.err, StartsWith("dropk: "));
  EXPECT_THAT(run.err, HasSubstr(missing));
  EXPECT_EQ(std::count(run.err.begin(), run.err.end(), '\n'), 1) << run.err;
}

// --shard-tokens 1 wrote a file per token (180,000 files for 200 kB of
// text), each a memory map on every training rank; the minimum and its
// reason are named.
TEST_F(PrepareDataTest, ShardTokensBelowAPageAreRefusedSayingWhy) {
  const test_util::CommandResult run =
      RunDropk("data prepare --tokenizer char --out '" + Path("o") + "' --shard-tokens 1 '" +
               kShakespeare + "'");
  EXPECT_EQ(run.exit_code, 2) << run.err;
  EXPECT_THAT(run.err, StartsWith("dropk: --shard-tokens: 1 must be a whole number >= 4096 (every "
                                  "training rank memory-maps each shard"));
  PrepareOptions options;
  options.inputs = {kShakespeare};
  options.out_dir = Path("o");
  options.shard_tokens = kMinShardTokens - 1;
  const absl::StatusOr<PrepareSummary> summary = PrepareData(options);
  EXPECT_EQ(summary.status().code(), absl::StatusCode::kInvalidArgument) << summary.status();
  EXPECT_THAT(std::string(summary.status().message()),
              StartsWith("--shard-tokens 4095 must be a whole number >= 4096"));
  EXPECT_FALSE(std::filesystem::exists(Path("o")));
}

// 2^64 was refused as "18446744073709551616 must be a whole number >=
// 4096", which it is: past 64 bits (or negative) it is said so.
TEST_F(PrepareDataTest, ShardTokensPast64BitsAreRefusedAsWritten) {
  for (const std::string tokens : {"18446744073709551616", "-1"}) {
    const test_util::CommandResult run =
        RunDropk("data prepare --tokenizer char --out '" + Path("o") +
                 "' --shard-tokens=" + tokens + " '" + kShakespeare + "'");
    EXPECT_EQ(run.exit_code, 2) << run.err;
    EXPECT_THAT(run.err, StartsWith("dropk: --shard-tokens: must be an integer in [4096, "
                                    "18446744073709551615], got " +
                                    tokens + " ("));
  }
  EXPECT_FALSE(std::filesystem::exists(Path("o")));
}

// --val-fraction 1e-400 was read as 0 and refused as "val_fraction 0 must
// be strictly between 0 and 1", a number nobody typed: every refused value
// is quoted as typed, naming the flag.
TEST_F(PrepareDataTest, ValFractionIsQuotedAsTyped) {
  const struct {
    const char* typed;
    const char* expected;  // after "dropk: --val-fraction: "
  } cases[] = {
      {"1e-400",
       "must be a number strictly between 0 and 1, got 1e-400, too small for a double: it would "
       "be read as 0"},
      {"-1e-400", "must be a number strictly between 0 and 1, got -1e-400, too small"},
      {"1.00000000000000001", "must be a number strictly between 0 and 1, got 1.00000000000000001"},
      {"nan", "must be a number strictly between 0 and 1, got nan"},
      {"1e400", "must be a number strictly between 0 and 1, got 1e400"},
      {"0.5x", "must be a number strictly between 0 and 1, got 0.5x"},
  };
  for (const auto& c : cases) {
    const test_util::CommandResult run =
        RunDropk("data prepare --tokenizer char --out '" + Path("o") +
                 "' --val-fraction=" + c.typed + " '" + kShakespeare + "'");
    EXPECT_EQ(run.exit_code, 2) << c.typed << "\n" << run.err;
    EXPECT_THAT(run.err, StartsWith(std::string("dropk: --val-fraction: ") + c.expected))
        << c.typed;
    EXPECT_EQ(std::count(run.err.begin(), run.err.end(), '\n'), 1) << c.typed << "\n" << run.err;
  }
  const test_util::CommandResult empty =
      RunDropk("data prepare --tokenizer char --out '" + Path("o") + "' --val-fraction '' '" +
               kShakespeare + "'");
  EXPECT_THAT(empty.err, StartsWith("dropk: --val-fraction: must be a number strictly between 0 "
                                    "and 1, got \"\""));
  EXPECT_FALSE(std::filesystem::exists(Path("o")));
  // A fraction a double holds but the split cannot use is quoted whole too,
  // not as StrCat's six digits (1.23457e-17).
  const test_util::CommandResult run =
      RunDropk("data prepare --tokenizer char --out '" + Path("o") +
               "' --val-fraction=0.000000000000000012345678 '" + kShakespeare + "'");
  EXPECT_EQ(run.exit_code, 2) << run.err;
  EXPECT_THAT(run.err, StartsWith("dropk: val_fraction 1.2345678e-17 splits the "));
}

// `--out= in.txt`: CLI11 took in.txt as --out's value and said "input is
// required", hiding both mistakes.
TEST_F(PrepareDataTest, AFlagWithAnEmptyValueAfterItsEqualsSignIsNamed) {
  const test_util::CommandResult run =
      RunDropk("data prepare --tokenizer char --out= '" + std::string(kShakespeare) + "'");
  EXPECT_EQ(run.exit_code, 2) << run.err;
  EXPECT_EQ(run.err, "dropk: --out= gives no value after its '=' (the next argument, " +
                         std::string(kShakespeare) +
                         ", would be taken as it); give the value after '='\n");
}

TEST_F(PrepareDataTest, CliRejectsBadUsageWithExit2) {
  ASSERT_TRUE(std::filesystem::exists(kDropk)) << kDropk << " is not built";
  const std::string input = std::string("'") + kShakespeare + "'";
  for (const std::string& args :
       {"data prepare --tokenizer bogus --out '" + Path("o") + "' " + input,
        "data prepare --out '" + Path("o") + "' " + input,  // --tokenizer missing
        "data prepare --tokenizer char " + input,           // --out missing
        "data prepare --tokenizer char --out '" + Path("o") + "' --val-fraction 2 " + input,
        // CLI11 read -1 as 2^64 - 1: one shard of any size, silently.
        "data prepare --tokenizer char --out '" + Path("o") + "' --shard-tokens -1 " + input,
        // A file per token: --shard-tokens had no lower bound.
        "data prepare --tokenizer char --out '" + Path("o") + "' --shard-tokens 1 " + input,
        "data prepare --tokenizer char --out '" + Path("o") + "' --shard-tokens 4095 " + input,
        std::string("data"), std::string(""), std::string("frobnicate")}) {
    const test_util::CommandResult run = RunDropk(args);
    EXPECT_EQ(run.exit_code, 2) << args << "\n" << run.err;
    EXPECT_THAT(run.err, StartsWith("dropk: ")) << args;
    EXPECT_EQ(std::count(run.err.begin(), run.err.end(), '\n'), 1) << args << "\n" << run.err;
  }
  EXPECT_FALSE(std::filesystem::exists(Path("o")));
}

// A subdirectory of a corpus that cannot be listed was reported as the
// corpus directory itself ("cannot list input directory 'corpus'").
TEST_F(PrepareDataTest, CliNamesTheSubdirectoryItCannotList) {
  std::filesystem::create_directories(Path("corpus/locked"));
  std::ofstream(Path("corpus/a.txt")) << "some text\n";
  std::ofstream(Path("corpus/locked/b.txt")) << "more text\n";
  std::filesystem::permissions(Path("corpus/locked"), std::filesystem::perms::none);
  std::filesystem::permissions(dir_, std::filesystem::perms::all);  // for nobody's --out
  // Root lists anything: the command then runs as nobody.
  const std::string as =
      ::geteuid() != 0 ? "" : "setpriv --reuid=65534 --regid=65534 --clear-groups ";
  if (!as.empty() && std::system("command -v setpriv > /dev/null") != 0) {
    GTEST_SKIP() << "running as root without setpriv: cannot make a directory unreadable";
  }
  const test_util::CommandResult run = test_util::RunCommand(
      as + kDropk + " data prepare --tokenizer byte --out '" + Path("out") + "' '" +
      Path("corpus") + "'");
  std::filesystem::permissions(Path("corpus/locked"), std::filesystem::perms::owner_all);
  EXPECT_EQ(run.exit_code, 1) << run.err;
  EXPECT_EQ(run.err, "dropk: cannot list directory '" + Path("corpus/locked") +
                         "' (in input directory '" + Path("corpus") +
                         "'): Permission denied\n");
}

// --threads -1 was refused by the library without naming the flag, a flag
// given twice read CLI11's "At Most 1 required but received 2", and an --out
// naming a regular file (or under one) exited 1 as if the disk had failed.
TEST_F(PrepareDataTest, CliNamesTheFlagForThreadsAndAnOutThatIsAFile) {
  const std::string input = std::string(" '") + kShakespeare + "'";
  test_util::CommandResult run =
      RunDropk("data prepare --tokenizer char --out '" + Path("o") + "' --threads=-1" + input);
  EXPECT_EQ(run.exit_code, 2) << run.err;
  EXPECT_THAT(run.err, StartsWith("dropk: --threads: -1 must be a whole number in [0, 1024]"));
  run = RunDropk("data prepare --tokenizer char --out '" + Path("o") + "' --threads 1 --threads 2" +
                 input);
  EXPECT_EQ(run.exit_code, 2) << run.err;
  EXPECT_THAT(run.err, StartsWith("dropk: --threads given 2 times; give it once"));
  EXPECT_FALSE(std::filesystem::exists(Path("o")));

  std::ofstream(Path("tiny.txt")) << "a file\n";
  run = RunDropk("data prepare --tokenizer char --out '" + Path("tiny.txt") + "'" + input);
  EXPECT_EQ(run.exit_code, 2) << run.err;
  EXPECT_EQ(run.err, "dropk: --out " + Path("tiny.txt") +
                         ": exists and is not a directory; name the directory to write into\n");
  run = RunDropk("data prepare --tokenizer char --out '" + Path("tiny.txt") + "/sub'" + input);
  EXPECT_EQ(run.exit_code, 2) << run.err;
  EXPECT_EQ(run.err,
            "dropk: --out " + Path("tiny.txt") + "/sub: cannot create it: Not a directory\n");
  EXPECT_EQ(test_util::ReadFile(Path("tiny.txt")), "a file\n");
}

// An input that is a symbolic link loop exited 1, as if the disk had
// failed: it is the user's to fix.
TEST_F(PrepareDataTest, CliNamesAnInputThatIsALinkLoop) {
  std::filesystem::create_symlink(Path("loop"), Path("loop"));
  const test_util::CommandResult run =
      RunDropk("data prepare --tokenizer char --out '" + Path("o") + "' '" + Path("loop") + "'");
  EXPECT_EQ(run.exit_code, 2) << run.err;
  EXPECT_EQ(run.err, "dropk: cannot access input '" + Path("loop") +
                         "': Too many levels of symbolic links\n");
  EXPECT_FALSE(std::filesystem::exists(Path("o")));
}

// An --out where no directory can be made (mkdir under /proc fails with
// ENOENT) exited 1, as if the disk had failed: it is the user's to fix.
TEST_F(PrepareDataTest, CliNamesAnOutThatCannotBeMadeThere) {
  std::error_code ec;
  std::filesystem::create_directory("/proc/dropk-probe", ec);
  if (ec != std::errc::no_such_file_or_directory) {
    GTEST_SKIP() << "mkdir under /proc says " << ec.message() << " here";
  }
  const test_util::CommandResult run = RunDropk(
      std::string("data prepare --tokenizer char --out /proc/dropk/data '") + kShakespeare + "'");
  EXPECT_EQ(run.exit_code, 2) << run.err;
  EXPECT_EQ(run.err,
            "dropk: --out /proc/dropk/data: cannot create it: No such file or directory\n");
}

// A split of more than kMaxShardsPerSplit shards is refused before anything
// is written, saying which --shard-tokens fits: with no cap, --shard-tokens
// 4096 cut 4 x 10^9 tokens into a million files, and every training rank
// would have failed to memory-map them all.
TEST_F(PrepareDataTest, ASplitOfTooManyShardsIsRefusedNamingTheFlag) {
  // The val split's, give or take the rounding of val_fraction.
  const uint64_t tokens = kMinShardTokens * kMaxShardsPerSplit + 100;
  {
    std::ofstream big(Path("big.txt"), std::ios::binary);
    const std::string line(4095, 'a');
    for (uint64_t written = 0; written < tokens + 100; written += line.size() + 1) {
      big << line << '\n';
    }
  }
  PrepareOptions options;
  options.kind = Tokenizer::BYTE;
  options.inputs = {Path("big.txt")};
  options.out_dir = Path("o");
  options.shard_tokens = kMinShardTokens;
  const uint64_t n = std::filesystem::file_size(Path("big.txt"));
  options.val_fraction = static_cast<double>(tokens) / static_cast<double>(n);
  const absl::StatusOr<PrepareSummary> summary = PrepareData(options);
  ASSERT_EQ(summary.status().code(), absl::StatusCode::kInvalidArgument) << summary.status();
  EXPECT_THAT(std::string(summary.status().message()),
              MatchesRegex("--shard-tokens 4096: the val split's [0-9]+ tokens would make 10001 "
                           "shards, more than the 10000 a split may have \\(every training rank "
                           "memory-maps each shard of both splits\\); give --shard-tokens 4097 or "
                           "more"));
  for (const auto& entry : std::filesystem::directory_iterator(Path("o"))) {
    EXPECT_EQ(entry.path().filename().string().find(".bin"), std::string::npos)
        << entry.path() << " written anyway";
  }
}

TEST_F(PrepareDataTest, CliHelpExits0) {
  ASSERT_TRUE(std::filesystem::exists(kDropk)) << kDropk << " is not built";
  const test_util::CommandResult run = RunDropk("data prepare --help");
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_THAT(run.out, HasSubstr("--tokenizer"));
}

}  // namespace
}  // namespace dropk
