#include "trainer/prepare_data.h"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <span>
#include <system_error>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "model/tokenizer.h"
#include "trainer/tokenizer_file.h"
#include "trainer/token_file.h"

namespace dropk {
namespace {

namespace fs = std::filesystem;

absl::StatusOr<std::string> ReadInput(const std::string& path) {
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) {
    return absl::UnavailableError(
        absl::StrCat("cannot access input file '", path, "': ", ec.message()));
  }
  if (!fs::exists(status)) {
    return absl::NotFoundError(absl::StrCat("input file '", path, "' does not exist"));
  }
  if (!fs::is_regular_file(status)) {
    return absl::InvalidArgumentError(
        absl::StrCat("input '", path, "' is not a regular file"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in.is_open()) {
    return absl::UnavailableError(absl::StrCat("cannot open input file '", path,
                                               "': ", std::generic_category().message(errno)));
  }
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) {
    return absl::UnavailableError(absl::StrCat("cannot read input file '", path, "'"));
  }
  return text;
}

}  // namespace

absl::StatusOr<PrepareSummary> PrepareData(const PrepareOptions& options) {
  // Written as a negated conjunction so NaN is rejected too.
  if (!(options.val_fraction > 0.0 && options.val_fraction < 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "val_fraction ", options.val_fraction, " must be strictly between 0 and 1"));
  }
  if (options.out_dir.empty()) {
    return absl::InvalidArgumentError("the output directory is empty");
  }
  absl::StatusOr<std::string> text = ReadInput(options.input_path);
  if (!text.ok()) return text.status();
  if (text->empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("input file '", options.input_path, "' is empty"));
  }
  absl::StatusOr<TextTokenizer> tokenizer = TextTokenizer::FromCorpus(options.kind, *text);
  if (!tokenizer.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("input file '", options.input_path, "': ", tokenizer.status().message()));
  }
  absl::StatusOr<std::vector<int32_t>> tokens = tokenizer->Encode(*text);
  if (!tokens.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("input file '", options.input_path, "': ", tokens.status().message()));
  }
  text->clear();
  text->shrink_to_fit();

  // nanoGPT: train = data[:int(n*0.9)]. 1.0 - 0.1 is exactly the double 0.9,
  // so the default split matches it token for token.
  const size_t n = tokens->size();
  const size_t n_train =
      static_cast<size_t>(static_cast<double>(n) * (1.0 - options.val_fraction));
  if (n_train == 0 || n_train >= n) {
    return absl::InvalidArgumentError(absl::StrCat(
        "val_fraction ", options.val_fraction, " splits the ", n, " tokens of '",
        options.input_path, "' into ", n_train, " train and ", n - std::min(n, n_train),
        " val tokens; both must be non-empty"));
  }

  std::error_code ec;
  fs::create_directories(options.out_dir, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat("cannot create output directory '",
                                               options.out_dir, "': ", ec.message()));
  }
  const fs::path dir(options.out_dir);
  const std::span<const int32_t> all(*tokens);
  const int vocab_size = tokenizer->vocab_size();
  if (absl::Status s = WriteTokenFile(dir / kTrainTokensFile, all.first(n_train), vocab_size);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = WriteTokenFile(dir / kValTokensFile, all.subspan(n_train), vocab_size);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = SaveTokenizer(*tokenizer, dir / kTokenizerFile); !s.ok()) return s;
  return PrepareSummary{
      .vocab_size = vocab_size, .train_tokens = n_train, .val_tokens = n - n_train};
}

}  // namespace dropk
