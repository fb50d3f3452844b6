// libFuzzer target over what a client of dropk-serve controls: the body of
// POST /v1/completions (sampler/completions.h ParseCompletionRequest) and
// prompt text, which GPT-2's byte-level BPE encodes (model/tokenizer.h).
//
// Input: one mode byte, then the bytes.
//   mode even: the bytes are a request body; a body that parses must keep
//              the parser's contract (ranges of n, logprobs, top_p, prompt
//              counts), and each text prompt is encoded as below.
//   mode odd:  the bytes are one prompt.
// Encoding properties beyond "no crash, no sanitizer report": any byte
// string encodes, every id is inside the vocabulary, and decoding gives the
// bytes back (the tokenizer's contract for GPT2_BPE).
//
// Built with -DDROPK_FUZZ=ON under clang; run by tools/run_fuzz.sh.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <variant>

#include "model/gpt2_vocab_files.h"
#include "model/tokenizer.h"
#include "sampler/completions.h"

namespace {

// Prompts longer than this are left unencoded: encoding is linear, and
// short inputs reach the same code far more times per second.
constexpr size_t kMaxEncodedBytes = 4096;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

const dropk::TextTokenizer& Gpt2() {
  static const dropk::TextTokenizer* tokenizer = [] {
    const std::string dir = std::string(DROPK_SOURCE_DIR) + "/data/gpt2/";
    absl::StatusOr<dropk::Tokenizer> proto =
        dropk::Gpt2TokenizerFromFiles(ReadFile(dir + "encoder.json"), ReadFile(dir + "vocab.bpe"));
    if (!proto.ok()) std::abort();
    absl::StatusOr<dropk::TextTokenizer> tok = dropk::TextTokenizer::FromProto(*proto);
    if (!tok.ok()) std::abort();
    return new dropk::TextTokenizer(*std::move(tok));
  }();
  return *tokenizer;
}

void EncodeAndCheck(std::string_view text) {
  if (text.size() > kMaxEncodedBytes) return;
  const dropk::TextTokenizer& tok = Gpt2();
  absl::StatusOr<std::vector<int32_t>> ids = tok.Encode(text);
  if (!ids.ok()) std::abort();  // only PCRE2's resource limits may fail, and not this short
  for (int32_t id : *ids) {
    if (id < 0 || id >= tok.vocab_size()) std::abort();
  }
  if (tok.Decode(*ids) != text) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const std::string_view bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  if (data[0] & 1) {
    EncodeAndCheck(bytes);
    return 0;
  }
  std::variant<dropk::CompletionRequest, dropk::ApiError> parsed =
      dropk::ParseCompletionRequest(bytes);
  if (const auto* error = std::get_if<dropk::ApiError>(&parsed)) {
    if (error->status != 400 || error->message.empty()) std::abort();
    return 0;
  }
  const dropk::CompletionRequest& r = std::get<dropk::CompletionRequest>(parsed);
  if (r.n < 1 || r.n > dropk::CompletionRequest::kMaxN) std::abort();
  if (r.PromptCount() < 1 || r.PromptCount() > dropk::CompletionRequest::kMaxPrompts) std::abort();
  if (!r.prompts.empty() && !r.token_prompts.empty()) std::abort();
  if (r.logprobs < -1 || r.logprobs > 20) std::abort();
  if (!(r.top_p > 0 && r.top_p <= 1) || !(r.temperature >= 0)) std::abort();
  if (r.stop.size() > dropk::CompletionRequest::kMaxStops) std::abort();
  for (const std::string& prompt : r.prompts) EncodeAndCheck(prompt);
  return 0;
}
