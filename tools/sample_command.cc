#include "tools/sample_command.h"

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange

#include <algorithm>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "base/cli_flag_values.h"
#include "base/cut_for_message.h"
#include "base/json_for_message.h"
#include "base/number_text.h"
#include "checkpoint/env.h"
#include "nlohmann/json.hpp"
#include "sampler/completions.h"
#include "sampler/model_snapshot.h"
#include "sampler/scheduler.h"
#include "tools/host_lookup.h"
#include "tools/server_url.h"

namespace dropk {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using json = nlohmann::json;

// How long `dropk sample --url` waits for a connection.
constexpr int kConnectTimeoutS = 30;
// The largest answer `dropk sample --url` reads whole (a body not streamed).
constexpr uint64_t kMaxAnswerBytes = uint64_t{64} << 20;
// The largest event of a stream it reads: a stream is read event by event
// and its bytes let go, so it may be of any length (until 2026-12-02 the
// whole stream was kept, 135 MB of memory for a 60 MiB stream, and one past
// 64 MiB was refused).
constexpr size_t kMaxEventBytes = size_t{16} << 20;
// A Beast body limit that limits nothing.
constexpr uint64_t kNoBodyLimit = std::numeric_limits<uint64_t>::max();
// How much of a stream's body is read at a time.
constexpr size_t kStreamPieceBytes = 64 << 10;
// The largest answer header it reads (Beast's default).
constexpr uint32_t kMaxHeaderBytes = 8 << 10;
// The most interim (1xx) answers it skips before the answer.
constexpr int kMaxInterimAnswers = 16;

struct SampleFlags {
  std::string url, checkpoint, prompt, api_key_file;
  // Values as typed: ValidateFlags reads them, so that every bad one is
  // refused in one style, quoting it as typed (read as floats, --top-p
  // 1e-50 was refused as "got 0.0", --temperature 1e39 as "inf"; CLI11
  // wrapped --seed -1 to 2^64 - 1).
  std::optional<std::string> max_tokens_text, temperature_text, top_k_text, top_p_text, seed_text;
  std::string timeout_text = "300";  // --url: the longest wait for the server's next bytes (s)
  std::string threads_text = "0";
  std::string weights = "fp32";   // --checkpoint: the engine's weights, as dropk-serve --weights
  std::string kv_cache = "fp32";  // --checkpoint: the engine's KV cache, as dropk-serve --kv-cache
  bool stream = false;
  // Set by ValidateFlags from the texts above.
  std::optional<int> max_tokens, top_k;
  std::optional<double> temperature, top_p;
  std::optional<uint64_t> seed;
  int timeout_s = 300;
  int threads = 0;
};

// `text` (a server's error message, an HTML page) as one line of at most
// `max` bytes: the error dropk prints is one line whatever answered.
std::string OneLine(const std::string& text, size_t max = 200) {
  std::string out;
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (!std::isspace(u) && !std::iscntrl(u)) {
      out += c;
    } else if (!out.empty() && out.back() != ' ') {
      out += ' ';
    }
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return CutForMessage(out, max);
}

// What a failed exchange with the server means, for the user: Beast's own
// words ("partial message", "end of stream") did not say who stopped.
// `on_timeout` says which wait ran out.
std::string DescribeHttpError(const boost::system::error_code& ec, const std::string& on_timeout) {
  namespace beast = boost::beast;
  if (ec == beast::http::error::end_of_stream) {
    return "the server closed the connection without answering";
  }
  if (ec == beast::http::error::partial_message) {
    return "the server closed the connection in the middle of its answer";
  }
  if (ec == beast::error::timeout) return on_timeout;
  // Beast's parser's other words ("bad version", "body limit exceeded")
  // named no party: a TLS or other service at --url's port was "bad version".
  if (ec == beast::http::error::body_limit) {
    return absl::StrCat("the server's answer is longer than the ", kMaxAnswerBytes >> 20,
                        " MiB dropk reads");
  }
  // Said "does not speak HTTP/1.x (header limit exceeded)": an HTTP server
  // whose header is too long is no TLS port.
  if (ec == beast::http::error::header_limit) {
    return absl::StrCat("the server's answer header is longer than the ", kMaxHeaderBytes >> 10,
                        " KiB dropk reads");
  }
  // What is not an HTTP/1.x status line at all (a TLS server's first
  // bytes) may well be an https:// port; an answer that began as HTTP and
  // then broke its framing (a chunk size that is not hex, two lengths) is
  // a faulty server, and the https:// hint misled.
  if (ec == beast::http::error::bad_version) {
    return absl::StrCat("what answered does not speak HTTP/1.x (", ec.message(),
                        "); is --url the address of an HTTP service, not an https:// one?");
  }
  if (ec.category() == beast::http::make_error_code(beast::http::error::bad_version).category()) {
    return absl::StrCat("the server's answer is not valid HTTP/1.1 (", ec.message(), ")");
  }
  return ec.message();
}

// An error when the answer whose header `header` holds has its body in a
// coding dropk does not decode: a Transfer-Encoding other than chunked, a
// Content-Encoding other than identity. Such a body was read as its coded
// bytes (gzip's were "not JSON"), or, not chunked, up to the connection's
// end. The error names the header field and its value.
absl::Status CheckCodings(const http::response_parser<http::empty_body>& header) {
  for (const auto& [field, allowed, why] :
       {std::tuple{http::field::transfer_encoding, "chunked", "it reads chunked only"},
        std::tuple{http::field::content_encoding, "identity", "it asks for identity"}}) {
    std::string value;
    bool refused = false;
    const auto [begin, end] = header.get().equal_range(field);
    for (auto line = begin; line != end; ++line) {
      const std::string text(line->value());
      absl::StrAppend(&value, value.empty() ? "" : ", ", text);
      for (absl::string_view coding : absl::StrSplit(text, ',')) {
        // A coding may carry parameters ("gzip;q=1"): its name is the token.
        coding = absl::StripAsciiWhitespace(coding.substr(0, coding.find(';')));
        if (!coding.empty() && !absl::EqualsIgnoreCase(coding, allowed)) refused = true;
      }
    }
    if (refused) {
      return absl::UnavailableError(absl::StrCat(
          "the server's answer (HTTP ", header.get().result_int(), ") has ",
          std::string(http::to_string(field)), ": ", OneLine(value, 80),
          ", which dropk does not decode (", why, ")"));
    }
  }
  return absl::OkStatus();
}

// "FLAG=TEXT: PROBLEM; give REMEDY": how dropk sample refuses a flag's
// value (InvalidArgument: exit 2), as dropk-train does ("--seed=x: ...").
// It had three styles: "--top-k: must be ..., got abc (run with --help for
// usage)", "--seed x: must be ..." and "--top-p must be ..., got 2".
absl::Status BadValue(absl::string_view flag, absl::string_view text, absl::string_view problem,
                      absl::string_view remedy) {
  return absl::InvalidArgumentError(
      absl::StrCat(flag, "=", text, ": ", problem, "; give ", remedy));
}

// `text`, the value of `flag`, read as a decimal integer in [min, max];
// BadValue "not an integer", or "out of range" for one past [min, max] or
// past Int (CLI11 kept what strtoull wrapped "-1" to).
template <typename Int>
absl::StatusOr<Int> IntegerValue(absl::string_view flag, const std::string& text, Int min, Int max,
                                 absl::string_view note = "") {
  const std::string remedy = absl::StrCat("an integer in [", min, ", ", max, "]", note);
  absl::string_view digits = absl::StripAsciiWhitespace(text);
  if (!digits.empty() && (digits.front() == '-' || digits.front() == '+')) digits.remove_prefix(1);
  if (digits.empty() || !std::all_of(digits.begin(), digits.end(), absl::ascii_isdigit)) {
    return BadValue(flag, text, "not an integer", remedy);
  }
  Int value{};
  if (!absl::SimpleAtoi(text, &value) || value < min || value > max) {
    return BadValue(flag, text, "out of range", remedy);
  }
  return value;
}

// `text`, the value of `flag`, read as a finite double for which
// `in_range` holds (`range` says it); BadValue otherwise. A NaN or infinite
// number would go out as JSON null (read as "absent": --temperature nan
// sampled at temperature 1), one below double's range as 0.
absl::StatusOr<double> RealValue(absl::string_view flag, const std::string& text,
                                 bool (*in_range)(double), absl::string_view range) {
  const std::string remedy = absl::StrCat("a number in ", range);
  double value = 0;
  switch (ReadRealText(text, &value)) {
    case RealText::kFinite:
      if (in_range(value)) return value;
      return BadValue(flag, text, "out of range", remedy);
    case RealText::kNotANumber: return BadValue(flag, text, "not a number", remedy);
    case RealText::kNotFinite: return BadValue(flag, text, "not a finite number", remedy);
    case RealText::kUnderflow: break;
  }
  return BadValue(flag, text, "too small for a double (it would be read as 0)", remedy);
}

// Reads every value flag from its text (SampleFlags), refusing a bad one
// as BadValue before anything is loaded or connected to, and lower-cases
// --weights and --kv-cache.
absl::Status ValidateFlags(SampleFlags* f) {
  if (f->max_tokens_text) {
    absl::StatusOr<int> n =
        IntegerValue("--max-tokens", *f->max_tokens_text, 1, CompletionRequest::kMaxTokens);
    if (!n.ok()) return n.status();
    f->max_tokens = *n;
  }
  if (f->top_k_text) {
    absl::StatusOr<int> k = IntegerValue("--top-k", *f->top_k_text, -1,
                                         std::numeric_limits<int>::max(), " (0 or -1: off)");
    if (!k.ok()) return k.status();
    f->top_k = *k;
  }
  const std::string temperature_range =
      absl::StrCat("[0, ", CompletionRequest::kMaxTemperature, "] (0: greedy)");
  for (const auto& [flag, text, value, in_range, range] :
       {std::tuple{"--temperature", &f->temperature_text, &f->temperature,
                   +[](double t) { return t >= 0.0 && t <= CompletionRequest::kMaxTemperature; },
                   temperature_range.c_str()},
        // OpenAI's range: a nucleus of mass 0 holds no token.
        std::tuple{"--top-p", &f->top_p_text, &f->top_p,
                   +[](double p) { return p > 0.0 && p <= 1.0; }, "(0, 1]"}}) {
    if (!text->has_value()) continue;
    absl::StatusOr<double> parsed = RealValue(flag, **text, in_range, range);
    if (!parsed.ok()) return parsed.status();
    *value = *parsed;
  }
  if (f->seed_text) {
    absl::StatusOr<uint64_t> seed =
        IntegerValue<uint64_t>("--seed", *f->seed_text, 0, std::numeric_limits<uint64_t>::max());
    if (!seed.ok()) return seed.status();
    f->seed = *seed;
  }
  absl::StatusOr<int> timeout = IntegerValue("--timeout", f->timeout_text, 1, 86400, " (seconds)");
  if (!timeout.ok()) return timeout.status();
  f->timeout_s = *timeout;
  absl::StatusOr<int> threads =
      IntegerValue("--threads", f->threads_text, 0, 1024, " (0: all cores)");
  if (!threads.ok()) return threads.status();
  f->threads = *threads;
  for (const auto& [flag, value] :
       {std::pair{"--weights", &f->weights}, {"--kv-cache", &f->kv_cache}}) {
    const std::string lower = absl::AsciiStrToLower(*value);
    if (lower != "fp32" && lower != "bf16") {
      return BadValue(flag, *value, "no such setting", "fp32 or bf16");
    }
    *value = lower;
  }
  return absl::OkStatus();
}

// The /v1/completions body for the flags. JSON text must be UTF-8, so a
// prompt that is not is an error naming --prompt (it was an uncaught
// exception: an abort). No 'model': the server's, whichever it serves (it
// refuses a model it does not serve, as "dropk" was).
absl::StatusOr<std::string> RequestBody(const SampleFlags& f) {
  json j = {{"prompt", f.prompt}, {"stream", f.stream}};
  if (f.max_tokens) j["max_tokens"] = *f.max_tokens;
  if (f.temperature) j["temperature"] = *f.temperature;
  if (f.top_k) j["top_k"] = *f.top_k;
  if (f.top_p) j["top_p"] = *f.top_p;
  if (f.seed) j["seed"] = *f.seed;
  try {
    return j.dump();
  } catch (const json::type_error& e) {
    // e.what() is "[json.exception.type_error.316] invalid UTF-8 byte at ...".
    const std::string what = e.what();
    const size_t at = what.find("] ");
    return absl::InvalidArgumentError(
        absl::StrCat("--prompt is not valid UTF-8, which a completion request must be (",
                     at == std::string::npos ? what : what.substr(at + 2), ")"));
  }
}

// The text of choices[0] of a completion answer (a body or one streamed
// chunk), or an error quoting the answer: whatever answers at --url (a
// proxy, another server) may send 200 with any JSON, which aborted dropk.
absl::StatusOr<std::string> ChoiceText(const json& j) {
  if (j.is_object()) {
    const auto choices = j.find("choices");
    if (choices != j.end() && choices->is_array() && !choices->empty() &&
        choices->front().is_object()) {
      const auto text = choices->front().find("text");
      if (text != choices->front().end() && text->is_string()) return text->get<std::string>();
    }
  }
  const std::string shown = j.is_discarded() ? "not JSON" : JsonForMessage(j, 80);
  return absl::DataLossError(
      absl::StrCat("the server's answer has no choices[0].text (", shown, ")"));
}

// The message of an OpenAI error object ({"error": {"message": ...}}) in
// `j`, or nullopt when `j` is not one.
std::optional<std::string> ErrorMessage(const json& j) {
  if (!j.is_object()) return std::nullopt;
  const auto error = j.find("error");
  if (error == j.end() || !error->is_object()) return std::nullopt;
  const auto message = error->find("message");
  if (message == error->end() || !message->is_string()) return std::nullopt;
  return message->get<std::string>();
}

// Server-sent events as the WHATWG HTML standard (9.2.6) reads them, from
// bytes as they arrive: lines end in CRLF, LF or CR; an empty line ends an
// event; a "data:" line (one space after the colon optional) adds its value
// to the event's data, joined by LF; comments (":") and other fields are
// let be. dropk looked for "data: " and "\n\n" only: a stream whose lines
// ended in CRLF, or whose fields had no space after the colon (both valid,
// and what some servers and proxies send), was "the stream ended before its
// last event", its text never printed.
//
// An event is kept only until it is complete: what it holds (a line and
// the data so far) is at most kMaxEventBytes.
class SseReader {
 public:
  // Reads `bytes`; returns the data of each event they complete, in order,
  // or DataLoss once an event grows past kMaxEventBytes.
  absl::StatusOr<std::vector<std::string>> Feed(std::string_view bytes) {
    std::vector<std::string> events;
    for (const char c : bytes) {
      const bool lf_of_crlf = c == '\n' && after_cr_;
      after_cr_ = c == '\r';
      if (lf_of_crlf) continue;
      if (c != '\r' && c != '\n') {
        if ((line_.empty() ? c : line_.front()) != ':') progressed_ = true;
        if (line_.size() + data_.size() >= kMaxEventBytes) {
          return absl::DataLossError(absl::StrCat("the server sent a stream event longer than the ",
                                                  kMaxEventBytes >> 20, " MiB dropk reads"));
        }
        line_ += c;
        continue;
      }
      if (line_.empty()) {
        if (has_data_) events.push_back(std::move(data_));
        data_.clear();
        has_data_ = false;
      } else if (line_.rfind("data", 0) == 0 && (line_.size() == 4 || line_[4] == ':')) {
        std::string_view value = std::string_view(line_).substr(std::min<size_t>(5, line_.size()));
        if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
        if (has_data_) data_ += '\n';
        data_ += value;
        has_data_ = true;
      }
      line_.clear();
    }
    return events;
  }

  // True when the bytes fed since the last call held more than comments
  // (": keep-alive") and blank lines: some part of an event.
  bool TakeProgress() { return std::exchange(progressed_, false); }

 private:
  std::string line_;  // the line read so far
  std::string data_;  // the event's data so far
  bool has_data_ = false;
  bool progressed_ = false;  // a byte of a field line was read since TakeProgress
  bool after_cr_ = false;  // the last byte was CR: an LF next ends no other line
};

// Prints the text of one SSE event, given as its data; returns false at
// [DONE], and an error for an event that is not a completion chunk. A chunk
// without choices (OpenAI's usage chunk, sent before [DONE] to a client
// that asks stream_options.include_usage, and by some servers unasked) is
// let be: it was "the server's answer has no choices[0].text".
absl::StatusOr<bool> PrintEvent(const std::string& data, json* last) {
  if (data == "[DONE]") return false;
  json j = json::parse(data, nullptr, false);
  if (j.is_object() && j.contains("choices") && j["choices"].is_array() && j["choices"].empty()) {
    return true;
  }
  // A stream whose 200 was sent reports a failure as an error event
  // (dropk-serve's when its GPU fails): it was "the server's answer has no
  // choices[0].text ({"error":{"code":"device_failed","message":"the GPU
  // fail...)", the reason cut off.
  if (std::optional<std::string> message = ErrorMessage(j)) {
    return absl::UnavailableError(
        absl::StrCat("the server ended the stream with an error: ", OneLine(*message)));
  }
  absl::StatusOr<std::string> text = ChoiceText(j);
  if (!text.ok()) return text.status();
  std::cout << *text << std::flush;
  *last = std::move(j);
  return true;
}

// An error when the answer `j` (a body, or a stream's last chunk) says its
// text was cut short: finish_reason "cancelled", which dropk-serve sends
// when it stops before a choice is done (SIGTERM's drain deadline, a failed
// GPU). The text printed before read as a complete one, exit 0.
absl::Status CheckFinished(const json& j) {
  if (!j.is_object()) return absl::OkStatus();
  const auto choices = j.find("choices");
  if (choices == j.end() || !choices->is_array() || choices->empty() ||
      !choices->front().is_object()) {
    return absl::OkStatus();
  }
  const auto reason = choices->front().find("finish_reason");
  if (reason == choices->front().end() || *reason != "cancelled") return absl::OkStatus();
  return absl::UnavailableError(
      "the server stopped generating before the completion was finished (finish_reason "
      "\"cancelled\": it shut down or its device failed); the text above is cut short");
}

// The line after the text, on stderr: the seed and checkpoint step of
// answer j, and `offline_engine` (how an offline run held the model, which
// decides its text as the seed does) in parentheses when not empty.
void PrintFooter(const json& j, const std::string& offline_engine = "") {
  if (j.is_object() && j.contains("seed")) {
    const auto step = j.find("checkpoint_step");
    // Quoted as errors quote a server's JSON: whatever answers at --url may
    // send any value here, and printing one nested 2,000,000 deep whole
    // overflowed the stack.
    std::cerr << "seed " << JsonForMessage(j["seed"], 40) << ", checkpoint step "
              << (step == j.end() ? "-1" : JsonForMessage(*step, 40))
              << (offline_engine.empty() ? "" : " (" + offline_engine + ")") << "\n";
  }
}

// `message`, an error of the completion request's validator about field
// `param`, with the field named as the flag that set it: the validator is
// the server's, and `dropk sample --max-tokens 100000` said
// "'max_tokens' must be an integer in [1, 8192]".
std::string InFlagTerms(const std::string& message, const std::string& param) {
  static const auto* const kFlags = new std::vector<std::pair<std::string, std::string>>{
      {"max_tokens", "--max-tokens"}, {"temperature", "--temperature"}, {"top_p", "--top-p"},
      {"top_k", "--top-k"},           {"seed", "--seed"},               {"prompt", "--prompt"}};
  for (const auto& [field, flag] : *kFlags) {
    if (field != param) continue;
    // The checks against the model name a prompt by its index, as a request
    // may list several: "prompt 0 is 40 tokens; the model's context is 32".
    // dropk sends one, --prompt.
    if (field == "prompt" && absl::StartsWith(message, "prompt 0") &&
        (message.size() == 8 || message[8] == ' ' || message[8] == ':')) {
      return absl::StrCat(flag, message.substr(8));
    }
    return absl::StrReplaceAll(message, {{"'" + field + "'", flag}});
  }
  return message;
}

// The error for an answer with `status` (not 200) and `body` to the POST of
// `url`: a redirect's target (`location`), else the body's OpenAI error
// message, else the body as one line, else (an empty body: "HTTP 404: "
// said nothing) the status's reason and the URL asked, as a --url with a
// wrong path or port gets from another server.
absl::Status ErrorFromBody(int status, const std::string& reason, const std::string& body,
                           const std::string& url, const std::string& location) {
  // A redirect (a proxy moving the service, http:// to https://) was its
  // body, often an HTML page, or "the answer has no body": where it points
  // went unsaid. dropk does not follow it: a POST's body is not re-sent to
  // an address the user did not give.
  if (status / 100 == 3) {
    return absl::UnavailableError(absl::StrCat(
        "HTTP ", status, ": POST ", url, " is redirected ",
        location.empty() ? "(with no Location)" : "to " + OneLine(location),
        ", which dropk does not follow", location.empty() ? "" : "; give that address as --url"));
  }
  json j = json::parse(body, nullptr, false);
  std::string message = body;
  if (OneLine(body).empty()) {
    message = absl::StrCat(reason.empty() ? "" : absl::StrCat(reason, ": "), "the answer to POST ",
                           url, " has no body");
  }
  if (std::optional<std::string> error_message = ErrorMessage(j)) {
    message = *std::move(error_message);
    const json& param = j["error"]["param"];
    if (param.is_string()) message = InFlagTerms(message, param.get<std::string>());
  }
  // The server refusing the request itself (a prompt outside the vocabulary,
  // too long, a bad value) is a usage error, as the same flags are offline.
  const std::string text = absl::StrCat("HTTP ", status, ": ", OneLine(message));
  if (status == 400 || status == 413 || status == 422) return absl::InvalidArgumentError(text);
  return absl::UnavailableError(text);
}

absl::Status SampleOffline(const SampleFlags& f) {
  // A run's checkpoints directory gives what dropk-serve would serve.
  std::vector<std::string> skipped;
  absl::StatusOr<std::string> dir = ResolveCheckpointFlag(f.checkpoint, "--checkpoint", &skipped);
  if (!dir.ok()) return dir.status();
  absl::StatusOr<std::shared_ptr<const ModelSnapshot>> snapshot = LoadCheckpointSnapshot(*dir);
  if (!snapshot.ok()) return snapshot.status();
  // A directory of checkpoints was named: which one is used (and which
  // newer ones were not, and why), before the text.
  if (*dir != f.checkpoint) {
    std::cerr << "dropk: " << PickedCheckpointLine((*snapshot)->step, *dir, skipped) << "\n";
  }
  ServiceMetrics metrics;
  const SchedulerOptions options{.weights = EngineWeightsFromName(f.weights),
                                 .kv_cache = EngineKvCacheFromName(f.kv_cache),
                                 .max_batch = 1,
                                 .max_queue = 1,
                                 .num_threads = f.threads};
  absl::StatusOr<std::unique_ptr<Scheduler>> scheduler = Scheduler::Create(options, &metrics);
  if (!scheduler.ok()) return scheduler.status();
  if (absl::Status s = (*scheduler)->SetModel(*snapshot); !s.ok()) return s;
  absl::StatusOr<std::string> body = RequestBody(f);
  if (!body.ok()) return body.status();
  auto parsed = ParseCompletionRequest(*body);
  if (auto* e = std::get_if<ApiError>(&parsed)) {
    return absl::InvalidArgumentError(InFlagTerms(e->message, e->param));
  }
  json last;
  SseReader events;
  auto out = RunCompletion(std::get<CompletionRequest>(parsed), scheduler->get(),
                           [&last, &events](const std::string& e) {
                             // dropk's own chunks: each has its text, and
                             // none nears kMaxEventBytes.
                             absl::StatusOr<std::vector<std::string>> datas = events.Feed(e);
                             if (!datas.ok()) return;
                             for (const std::string& data : *datas) {
                               PrintEvent(data, &last).status().IgnoreError();
                             }
                           });
  if (auto* e = std::get_if<ApiError>(&out)) {
    return absl::InvalidArgumentError(InFlagTerms(e->message, e->param));
  }
  if (!f.stream) {
    last = json::parse(std::get<std::string>(out));
    absl::StatusOr<std::string> text = ChoiceText(last);
    if (!text.ok()) return text.status();
    std::cout << *text;
  }
  std::cout << "\n";
  PrintFooter(last, absl::StrCat("offline: weights ", EngineWeightsName(options.weights),
                                 ", KV cache ", EngineKvCacheName(options.kv_cache)));
  return CheckFinished(last);
}

// SampleHttp without --url's name in its errors about what answered.
absl::Status AskServer(const SampleFlags& f) {
  absl::StatusOr<ServerUrl> url = ParseServerUrl(f.url);
  if (!url.ok()) return url.status();
  absl::StatusOr<std::string> body = RequestBody(f);
  if (!body.ok()) return body.status();
  const std::string& host = url->host;
  const std::string& hostport = url->hostport;
  std::string api_key;
  if (!f.api_key_file.empty()) {
    // ReadSmallFile refuses what is not a regular file: fopen on a FIFO
    // waited for a writer for good, and a directory gave an empty key.
    absl::StatusOr<std::string> key = ReadSmallFile(Env::Default(), f.api_key_file, 4096);
    if (!key.ok()) {
      const std::string message =
          absl::StrCat("--api-key-file ", f.api_key_file, ": ", key.status().message());
      return absl::IsNotFound(key.status()) ? absl::NotFoundError(message)
                                            : absl::InvalidArgumentError(message);
    }
    api_key = std::string(absl::StripAsciiWhitespace(*key));
    if (api_key.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--api-key-file ", f.api_key_file, ": empty key"));
    }
  }
  std::string on_timeout;
  try {
    net::io_context ioc;
    beast::tcp_stream stream(ioc);
    // Beast's deadlines (expires_after) bind asynchronous operations only:
    // with the blocking calls, a server that accepted and never answered
    // kept dropk waiting for good. Each step is therefore started
    // asynchronously and run to completion here; `allowed` is an error that
    // is no failure (a full body buffer), returned instead of thrown.
    auto run = [&ioc](auto start, beast::error_code allowed = {}) {
      beast::error_code ec;
      start([&ec](beast::error_code e, auto&&...) { ec = e; });
      ioc.restart();
      ioc.run();
      if (ec && ec != allowed) throw boost::system::system_error(ec);
      return ec;
    };
    // The lookup and the connection share one deadline: at most
    // kConnectTimeoutS, and no longer than --timeout. A --timeout 5 still
    // waited 30 s for a host that did not answer, and the message named no
    // flag; the lookup was bound by the system resolver alone (10 s and more
    // a try with DNS dead).
    const int connect_timeout_s = std::min(kConnectTimeoutS, f.timeout_s);
    const auto connect_deadline =
        std::chrono::steady_clock::now() + std::chrono::seconds(connect_timeout_s);
    const std::string connect_limit = absl::StrCat(connect_timeout_s, " s (--timeout, at most ",
                                                   kConnectTimeoutS, " s for the connection)");
    absl::StatusOr<std::vector<tcp::endpoint>> endpoints =
        LookUpWithin(host, url->port, std::chrono::seconds(connect_timeout_s));
    if (absl::IsDeadlineExceeded(endpoints.status())) {
      return absl::UnavailableError(absl::StrCat("the name lookup of ", host,
                                                 " gave no answer within ", connect_limit,
                                                 "; is a DNS server reachable from here?"));
    }
    if (!endpoints.ok()) {
      return absl::UnavailableError(
          absl::StrCat("cannot look up the host ", endpoints.status().message()));
    }
    stream.expires_at(connect_deadline);
    on_timeout = absl::StrCat("no connection within ", connect_limit);
    run([&](auto done) { stream.async_connect(*endpoints, done); });
    http::request<http::string_body> req{http::verb::post, url->target, 11};
    req.set(http::field::host, hostport);
    req.set(http::field::content_type, "application/json");
    if (!api_key.empty()) req.set(http::field::authorization, "Bearer " + api_key);
    // dropk decodes no content coding (CheckCodings).
    req.set(http::field::accept_encoding, "identity");
    req.body() = *std::move(body);
    req.prepare_payload();
    // An idle limit, renewed before each step: a total one cut off long
    // streamed generations, and a server that stalls is still noticed.
    const auto timeout = std::chrono::seconds(f.timeout_s);
    const std::string silent = absl::StrCat("the server sent nothing for ", f.timeout_s,
                                            " s (--timeout); it is stalled or still busy");
    on_timeout = silent;
    stream.expires_after(timeout);
    run([&](auto done) { http::async_write(stream, req, done); });
    beast::flat_buffer buffer;
    // RFC 9110 15.2: a client must accept 1xx answers before the final one
    // (dropk-serve sends "100 Continue" to a client it probes, proxies send
    // them too); each is a header alone, skipped. "HTTP 100: " was the error.
    // A parser reads one message, so each answer gets a fresh one. The
    // header is read alone: what it says decides whether the body is kept.
    // Interim answers are no progress: they share one --timeout with the
    // final header (each renewed it, so a server sending "100 Continue"
    // every few seconds kept dropk waiting for good), and past
    // kMaxInterimAnswers the server is given up on.
    std::optional<http::response_parser<http::empty_body>> header;
    stream.expires_after(timeout);
    for (int interim = 0;; ++interim) {
      header.emplace();
      // Checked below, once it is known what is kept. Not boost::none:
      // Boost 1.74's parser compares a Content-Length with it as greater.
      header->body_limit(kNoBodyLimit);
      header->header_limit(kMaxHeaderBytes);
      run([&](auto done) { http::async_read_header(stream, buffer, *header, done); });
      const int status = header->get().result_int();
      // 101 answers an Upgrade, which dropk never asks for; what followed
      // was read as HTTP.
      if (status == 101) {
        return absl::UnavailableError(absl::StrCat(
            "the server switched protocols (HTTP 101, Upgrade: ",
            OneLine(std::string(header->get()[http::field::upgrade]), 80),
            "), which dropk did not ask for"));
      }
      if (status / 100 != 1) break;
      if (interim == kMaxInterimAnswers) {
        return absl::UnavailableError(absl::StrCat("the server sent more than ",
                                                   kMaxInterimAnswers,
                                                   " interim (1xx) answers before its answer"));
      }
      on_timeout = absl::StrCat("the server sent only interim (1xx) answers, no answer, for ",
                                f.timeout_s, " s (--timeout); it is stalled or still busy");
    }
    const int status = header->get().result_int();
    if (absl::Status s = CheckCodings(*header); !s.ok()) return s;
    if (status != 200 || !f.stream) {
      // Kept whole: at most kMaxAnswerBytes, a declared length too.
      if (header->content_length().value_or(0) > kMaxAnswerBytes) {
        throw boost::system::system_error(http::error::body_limit);
      }
      http::response_parser<http::string_body> parser(std::move(*header));
      parser.body_limit(kMaxAnswerBytes);
      stream.expires_after(timeout);
      run([&](auto done) { http::async_read(stream, buffer, parser, done); });
      const std::string body = parser.get().body();
      if (status != 200) {
        return ErrorFromBody(status, std::string(parser.get().reason()), body,
                             absl::StrCat("http://", hostport, url->target),
                             std::string(parser.get()[http::field::location]));
      }
      const json j = json::parse(body, nullptr, false);
      absl::StatusOr<std::string> text = ChoiceText(j);
      if (!text.ok()) return text.status();
      std::cout << *text << "\n";
      PrintFooter(j);
      return CheckFinished(j);
    }
    // Streamed: read piece by piece into one buffer, each event printed as
    // it is complete and its bytes let go, so memory stays bounded by one
    // event whatever the stream's length.
    http::response_parser<http::buffer_body> parser(std::move(*header));
    parser.body_limit(kNoBodyLimit);
    std::vector<char> piece(kStreamPieceBytes);
    json last;
    SseReader events;
    bool more = true;
    // Ends the line of text printed so far before an error line follows.
    struct EndLine {
      ~EndLine() { std::cout << "\n" << std::flush; }
    };
    std::optional<EndLine> end_line;
    // Comments (": keep-alive") do not renew the deadline: a server that
    // sent nothing else kept dropk waiting for good.
    auto progress_at = std::chrono::steady_clock::now();
    while (more && !parser.is_done()) {
      parser.get().body().data = piece.data();
      parser.get().body().size = piece.size();
      stream.expires_at(progress_at + timeout);
      // need_buffer: the piece is full, which is no failure.
      run([&](auto done) { http::async_read_some(stream, buffer, parser, done); },
          http::error::need_buffer);
      const size_t got = piece.size() - parser.get().body().size;
      absl::StatusOr<std::vector<std::string>> datas =
          events.Feed(std::string_view(piece.data(), got));
      if (!datas.ok()) return datas.status();
      if (events.TakeProgress()) {
        progress_at = std::chrono::steady_clock::now();
        on_timeout = silent;
      } else {
        on_timeout = absl::StrCat("the server sent only keep-alive comments, no event, for ",
                                  f.timeout_s, " s (--timeout); it is stalled or still busy");
      }
      for (size_t i = 0; more && i < datas->size(); ++i) {
        if (!end_line) end_line.emplace();
        absl::StatusOr<bool> printed = PrintEvent((*datas)[i], &last);
        if (!printed.ok()) return printed.status();
        more = *printed;
      }
    }
    end_line.reset();
    if (more) {
      return absl::DataLossError(
          "the stream ended before its last event, data: [DONE] (the server stopped, or "
          "what answered is not a completions stream)");
    }
    PrintFooter(last);
    return CheckFinished(last);
  } catch (const boost::system::system_error& e) {
    return absl::UnavailableError(DescribeHttpError(e.code(), on_timeout));
  }
}

// Asks the server at f.url; an error about what answered (a 500, an answer
// that is not a completion, a stream cut short) names f.url first, as one
// about the connection did: "HTTP 502: <html>..." named no server. Errors
// about the request (a flag, a 400 naming one) are left as they are.
absl::Status SampleHttp(const SampleFlags& f) {
  absl::Status s = AskServer(f);
  if (s.ok() || absl::IsInvalidArgument(s) || absl::IsNotFound(s)) return s;
  return absl::Status(s.code(), absl::StrCat(f.url, ": ", s.message()));
}

}  // namespace

void RegisterSampleCommand(CLI::App& app, std::function<absl::Status()>& action) {
  CLI::App* sample = app.add_subcommand(
      "sample", "Complete a prompt: from dropk-serve (--url) or offline (--checkpoint)");
  auto f = std::make_shared<SampleFlags>();
  auto* url =
      sample->add_option("--url", f->url, "dropk-serve base URL, e.g. http://127.0.0.1:8080");
  auto* ckpt = sample->add_option("--checkpoint", f->checkpoint,
                                  "A checkpoint directory, or a run's checkpoints directory");
  url->excludes(ckpt);
  sample->add_option("--prompt", f->prompt, "The prompt")->required();
  // Value flags are taken as typed and read by ValidateFlags, which refuses
  // a bad one as "--flag=VALUE: what is wrong; what to do".
  sample
      ->add_option("--max-tokens", f->max_tokens_text,
                   absl::StrCat("Tokens to generate (default 16; at most ",
                                CompletionRequest::kMaxTokens, ")"))
      ->type_name("INT");
  sample->add_option("--temperature", f->temperature_text, "0 = greedy (default 1)")
      ->type_name("FLOAT");
  sample->add_option("--top-k", f->top_k_text, "Keep the k most likely tokens; 0 or -1: off")
      ->type_name("INT");
  sample->add_option("--top-p", f->top_p_text, "Nucleus mass in (0, 1]")->type_name("FLOAT");
  sample->add_option("--seed", f->seed_text, "Sampling seed (drawn and printed when absent)")
      ->type_name("UINT");
  sample->add_flag("--stream", f->stream, "Print tokens as they are generated");
  // --url only, as --threads is --checkpoint only: offline both were
  // accepted and ignored.
  sample->add_option("--api-key-file", f->api_key_file, "File with the server's API key (--url)")
      ->excludes(ckpt)
      ->check(NonEmptyFlagValue("the file that holds the server's API key"));
  sample
      ->add_option("--timeout", f->timeout_text,
                   "--url: seconds to wait for the server's next bytes before giving up (1 to "
                   "86400)")
      ->capture_default_str()
      ->type_name("INT")
      ->excludes(ckpt);
  // Offline only: with --url the server's settings count, and the flags
  // were accepted and ignored. Refused in the callback, saying why (CLI11's
  // "--url excludes --threads" did not).
  CLI::Option* threads =
      sample
          ->add_option("--threads", f->threads_text,
                       "--checkpoint: compute threads (0 = all cores; at most 1024)")
          ->capture_default_str()
          ->type_name("INT");
  CLI::Option* weights =
      sample
          ->add_option(
              "--weights", f->weights,
              "--checkpoint: fp32, or bf16 weights, as dropk-serve --weights (the same text "
              "as a server with that setting)")
          ->capture_default_str()
          ->type_name("TEXT:{fp32,bf16}");
  CLI::Option* kv_cache =
      sample
          ->add_option(
              "--kv-cache", f->kv_cache,
              "--checkpoint: fp32, or a bf16 KV cache, as dropk-serve --kv-cache (the same "
              "text as a server with that setting)")
          ->capture_default_str()
          ->type_name("TEXT:{fp32,bf16}");
  sample->callback([&action, f, offline_only = std::vector{threads, weights, kv_cache}] {
    action = [f, offline_only]() -> absl::Status {
      if (f->url.empty() == f->checkpoint.empty()) {
        return absl::InvalidArgumentError(
            "no --url or --checkpoint given; give --url http://HOST:PORT (a dropk-serve) or "
            "--checkpoint DIR (sample offline)");
      }
      for (const CLI::Option* flag : offline_only) {
        if (!f->url.empty() && flag->count() > 0) {
          return absl::InvalidArgumentError(
              absl::StrCat(flag->get_name(),
                           " is for offline sampling (--checkpoint); with --url the server "
                           "decides it (dropk-serve ",
                           flag->get_name(), ")"));
        }
      }
      if (absl::Status s = ValidateFlags(f.get()); !s.ok()) return s;
      return f->url.empty() ? SampleOffline(*f) : SampleHttp(*f);
    };
  });
}

}  // namespace dropk
