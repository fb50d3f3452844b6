// Reading a text-format TrainConfig file: MergeTrainConfigFile, and the
// diagnostics that name the file, line, column and field at fault where
// protobuf's own messages name none of them.
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/closest_name.h"
#include "absl/strings/strip.h"
#include "base/number_text.h"
#include "config_text.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/text_format.h"
#include "trainer/config.h"

namespace dropk {
namespace {

namespace pb = google::protobuf;

// The largest config file read, in bytes.
constexpr uintmax_t kMaxConfigFileBytes = 16u << 20;

// How far a tab advances protobuf's tokenizer's column: to the next
// multiple of this.
constexpr int kTabWidth = 8;

// The field of dropk.TrainConfig whose value text format was reading at
// (line, column) of `text`, both counted from zero as protobuf's tokenizer
// counts them: the last `name:` on that line before that point, outside
// comments and strings. nullptr when there is none or the name is not a
// field (an unknown field's error already names it). Only the error's own
// line is searched, so an error in a line without a colon never blames the
// field of the line before.
const pb::FieldDescriptor* FieldBeingRead(const std::string& text, int line, int column) {
  size_t begin = 0;
  for (int l = 0; l < line && begin != std::string::npos; ++l) {
    begin = text.find('\n', begin);
    if (begin != std::string::npos) ++begin;
  }
  if (begin == std::string::npos) return nullptr;
  std::string name, last_name;
  bool name_ended = false;  // whitespace after a name: "n_layer : 4"
  char quote = 0;
  int current_column = 0;
  for (size_t i = begin; i < text.size() && text[i] != '\n' && current_column < column; ++i) {
    const char c = text[i];
    current_column += c == '\t' ? kTabWidth - current_column % kTabWidth : 1;
    if (quote != 0) {
      if (c == '\\') {
        ++i;
        ++current_column;
      } else if (c == quote) {
        quote = 0;
      }
    } else if (c == '#') {
      break;
    } else if (c == '"' || c == '\'') {
      quote = c;
      name.clear();
    } else if (absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_') {
      if (name_ended) name.clear();
      name_ended = false;
      name.push_back(c);
    } else if (c == ':') {
      if (!name.empty()) last_name = name;
      name.clear();
      name_ended = false;
    } else if (c == ' ' || c == '\t' || c == '\r') {
      name_ended = !name.empty();
    } else {
      name.clear();
      name_ended = false;
    }
  }
  if (last_name.empty()) return nullptr;
  return TrainConfig::descriptor()->FindFieldByName(last_name);
}

// The field of dropk.TrainConfig a protobuf message names as `field "x"`
// (its bool and enum value errors do), or nullptr.
const pb::FieldDescriptor* FieldQuotedIn(const std::string& message) {
  const std::string marker = "field \"";
  const size_t begin = message.find(marker);
  if (begin == std::string::npos) return nullptr;
  const size_t name_begin = begin + marker.size();
  const size_t end = message.find('"', name_begin);
  if (end == std::string::npos) return nullptr;
  return TrainConfig::descriptor()->FindFieldByName(message.substr(name_begin, end - name_begin));
}

// Drops the tokenizer's errors: FieldSetTwice reads only text that parsed.
class IgnoreErrors : public pb::io::ErrorCollector {
 public:
  void AddError(int, pb::io::ColumnNumber, const std::string&) override {}
};

// Where the value of the last `name:` before (line, column) of `text`
// starts, counted from zero as protobuf's tokenizer counts; nullopt when
// there is none.
std::optional<std::pair<int, int>> ValueStartBefore(const std::string& text,
                                                    const std::string& name, int line, int column) {
  pb::io::ArrayInputStream input(text.data(), static_cast<int>(text.size()));
  IgnoreErrors ignore;
  pb::io::Tokenizer tokenizer(&input, &ignore);
  tokenizer.set_comment_style(pb::io::Tokenizer::SH_COMMENT_STYLE);
  std::optional<std::pair<int, int>> start;
  pb::io::Tokenizer::Token before_previous, previous;
  while (tokenizer.Next()) {
    const pb::io::Tokenizer::Token& token = tokenizer.current();
    if (std::make_pair(token.line, token.column) >= std::make_pair(line, column)) break;
    if (previous.type == pb::io::Tokenizer::TYPE_SYMBOL && previous.text == ":" &&
        before_previous.type == pb::io::Tokenizer::TYPE_IDENTIFIER &&
        before_previous.text == name) {
      start = std::make_pair(token.line, token.column);
    }
    before_previous = previous;
    previous = token;
  }
  return start;
}

// Collects text-format parse errors as "path:line:column: message" lines,
// naming the field whose value is at fault and what it must look like
// (protobuf's own messages say only "Expected integer, got: four").
class ConfigErrorCollector : public pb::io::ErrorCollector {
 public:
  ConfigErrorCollector(std::string path, const std::string* text)
      : path_(std::move(path)), text_(text) {}

  void AddError(int line, pb::io::ColumnNumber column, const std::string& message) override {
    // A byte past ASCII where text format reads names and values (a binary
    // file, text in another encoding) was two lines: protobuf's "Interpreting
    // non ascii codepoint 255." and what its parser then expected. One line
    // saying what is wrong with the file, and nothing after it.
    if (non_text_) return;
    if (const std::optional<int> byte = NonAsciiByte(message)) {
      non_text_ = true;
      errors_ = {absl::StrFormat(
          "%s:%d:%d: byte 0x%02X is not text: outside quoted strings and comments a config file "
          "holds ASCII only (is it a binary file, or text in another encoding?)",
          path_, line + 1, column + 1, *byte)};
      return;
    }
    // Protobuf reports a bad bool or enum value (a message that quotes the
    // field) where the token after it starts: `device: GPU` followed by a
    // blank line and `n_layer: 2` was "4:1", n_layer's line. The value's own
    // place instead.
    if (const pb::FieldDescriptor* quoted = FieldQuotedIn(message); quoted != nullptr) {
      if (const auto value = ValueStartBefore(*text_, quoted->name(), line, column)) {
        std::tie(line, column) = *value;
      }
    }
    // The tokenizer counts from zero; editors count from one.
    std::string error = absl::StrCat(path_, ":", line + 1, ":", column + 1, ": ");
    const pb::FieldDescriptor* field = FieldBeingRead(*text_, line, column);
    if (field == nullptr) field = FieldQuotedIn(message);
    if (field != nullptr && absl::StrContains(message, absl::StrCat("\"", field->name(), "\""))) {
      // Protobuf named it already (bool and enum values): add what it takes.
      absl::StrAppend(&error, message, " (", field->name(), " takes ", ExpectedValue(field), ")");
    } else if (field != nullptr) {
      absl::StrAppend(&error, "field ", field->name(), ": ", message, " (", field->name(),
                      " takes ", ExpectedValue(field), ")");
    } else {
      absl::StrAppend(&error, message, UnknownFieldHint(message));
    }
    errors_.push_back(std::move(error));
  }

  std::string Errors() const { return absl::StrJoin(errors_, "\n"); }

 private:
  // " (did you mean max_iters?)" for protobuf's 'Message type
  // "dropk.TrainConfig" has no field named "max_iter".', naming the field
  // of TrainConfig it was likely meant as; "" for any other message.
  static std::string UnknownFieldHint(const std::string& message) {
    constexpr std::string_view kNoField = "has no field named \"";
    const size_t at = message.find(kNoField);
    if (at == std::string::npos) return "";
    const size_t start = at + kNoField.size();
    const size_t end = message.find('"', start);
    if (end == std::string::npos) return "";
    std::vector<std::string> names;
    const pb::Descriptor* config = TrainConfig::descriptor();
    for (int i = 0; i < config->field_count(); ++i) names.push_back(config->field(i)->name());
    const std::string meant = ClosestName(message.substr(start, end - start), names);
    return meant.empty() ? "" : absl::StrCat(" (did you mean ", meant, "?)");
  }

  // The byte of protobuf's tokenizer error "Interpreting non ascii codepoint
  // N.", or nullopt for another message.
  static std::optional<int> NonAsciiByte(const std::string& message) {
    constexpr absl::string_view kPrefix = "Interpreting non ascii codepoint ";
    if (!absl::StartsWith(message, kPrefix)) return std::nullopt;
    int byte = 0;
    const absl::string_view number = absl::StripSuffix(message.substr(kPrefix.size()), ".");
    if (!absl::SimpleAtoi(number, &byte)) return std::nullopt;
    return byte;
  }

  std::string path_;
  const std::string* text_;  // the file's contents; outlives the collector
  std::vector<std::string> errors_;
  bool non_text_ = false;  // errors_ holds the one line for a byte past ASCII
};

// "path:line:column: field NAME is set twice (first on line N)..." for the
// first singular field `text` sets a second time; empty when none is. Text
// format lets the later value win, so a file with `n_layer: 1` and, further
// down, `n_layer: 3` trained a model the first line did not describe.
// Protobuf's own check (TextFormat::Parser::ParseFromString) misses a first
// value of zero (`dropout: 0.0` then `dropout: 0.1`): a proto3 field without
// presence is not "set" by a zero. So the names are counted here, on text
// that has parsed already (a field name is the identifier before a ':' at
// the top level).
std::string FieldSetTwice(const std::string& path, const std::string& text) {
  pb::io::ArrayInputStream input(text.data(), static_cast<int>(text.size()));
  IgnoreErrors ignore;
  pb::io::Tokenizer tokenizer(&input, &ignore);
  tokenizer.set_comment_style(pb::io::Tokenizer::SH_COMMENT_STYLE);
  std::map<const pb::FieldDescriptor*, int> first_line;  // zero-based
  pb::io::Tokenizer::Token previous;
  int depth = 0;  // inside [] lists, {} or <> messages
  while (tokenizer.Next()) {
    const pb::io::Tokenizer::Token& token = tokenizer.current();
    if (token.type == pb::io::Tokenizer::TYPE_SYMBOL) {
      if (token.text == "[" || token.text == "{" || token.text == "<") ++depth;
      if (token.text == "]" || token.text == "}" || token.text == ">") --depth;
      const pb::FieldDescriptor* field =
          depth == 0 && token.text == ":" && previous.type == pb::io::Tokenizer::TYPE_IDENTIFIER
              ? TrainConfig::descriptor()->FindFieldByName(previous.text)
              : nullptr;
      if (field != nullptr && !field->is_repeated()) {
        const auto [it, first] = first_line.emplace(field, previous.line);
        if (!first) {
          return absl::StrCat(path, ":", previous.line + 1, ":", previous.column + 1, ": field ",
                              field->name(), " is set twice (first on line ", it->second + 1,
                              "); a config file sets each field once");
        }
      }
    }
    previous = token;
  }
  return "";
}

// Why the number or identifier `written` (the value token `token`, after
// a minus sign when `written` starts with one), read into the float or
// double field `field` of `merged`, is not the number the file says, or ""
// when it is: past the type's range (text format reads 1e400 or, for a
// float, 1e39 as inf), a nonzero number below it (1e-50 reads as 0), a
// number the float rounding carries across a bound of the field's range
// (RoundedAcrossBound), or not finite as written (nan, inf, infinity: text
// format reads them, a config never wants them).
std::string FloatValueProblem(const pb::FieldDescriptor* field,
                              const pb::io::Tokenizer::Token& token, const std::string& written,
                              const TrainConfig& merged) {
  const std::string takes = absl::StrCat(" (", field->name(), " takes ", ExpectedValue(field), ")");
  if (token.type == pb::io::Tokenizer::TYPE_IDENTIFIER) {
    const std::string word = absl::AsciiStrToLower(token.text);
    if (word == "nan" || word == "inf" || word == "infinity") {
      return absl::StrCat(written, " is not a finite number", takes);
    }
    return "";
  }
  // Text format also reads a whole number into a float field, and one of
  // 40 digits is past float's range too.
  if (token.type != pb::io::Tokenizer::TYPE_FLOAT &&
      token.type != pb::io::Tokenizer::TYPE_INTEGER) {
    return "";
  }
  const pb::Reflection* reflection = merged.GetReflection();
  const bool is_float = field->cpp_type() == pb::FieldDescriptor::CPPTYPE_FLOAT;
  const double value =
      is_float ? reflection->GetFloat(merged, field) : reflection->GetDouble(merged, field);
  if (std::isinf(value)) return absl::StrCat(written, " is out of range", takes);
  const std::string why = is_float ? UnderflowProblem(written, static_cast<float>(value))
                                   : UnderflowProblem(written, value);
  if (!why.empty() || !is_float) return why;
  return RoundedAcrossBound(field->name(), written, static_cast<float>(value));
}

// The byte of `text` at (line, column), both counted from zero as protobuf's
// tokenizer counts them; std::string::npos when there is none.
size_t ByteAt(const std::string& text, int line, int column) {
  size_t at = 0;
  for (int l = 0; l < line; ++l) {
    at = text.find('\n', at);
    if (at == std::string::npos) return at;
    ++at;
  }
  for (int c = 0; c < column; ++at) {
    if (at >= text.size() || text[at] == '\n') return std::string::npos;
    c += text[at] == '\t' ? kTabWidth - c % kTabWidth : 1;
  }
  return at;
}

// `text` with every enum value of a top-level field that names a value in
// another case than the schema's (`device: cuda`, `precision: Bf16`)
// written as the schema writes it (CUDA, BF16): the command line takes any
// case (--device=cuda) and --help writes them in lower case, which text
// format refused as "Unknown enumeration value". Only the case changes, so
// every line and column an error names stays as the file has it. A name
// that is no value of the field is left for the parser to refuse.
void EnumValuesInSchemaCase(std::string* text) {
  pb::io::ArrayInputStream input(text->data(), static_cast<int>(text->size()));
  IgnoreErrors ignore;
  pb::io::Tokenizer tokenizer(&input, &ignore);
  tokenizer.set_comment_style(pb::io::Tokenizer::SH_COMMENT_STYLE);
  std::vector<std::pair<size_t, std::string>> changes;  // byte, value as the schema writes it
  pb::io::Tokenizer::Token previous;
  const pb::FieldDescriptor* field = nullptr;  // an enum field whose value comes next
  int depth = 0;                               // inside [] lists, {} or <> messages
  while (tokenizer.Next()) {
    const pb::io::Tokenizer::Token& token = tokenizer.current();
    if (field != nullptr && token.type == pb::io::Tokenizer::TYPE_IDENTIFIER) {
      const pb::EnumValueDescriptor* value =
          field->enum_type()->FindValueByName(absl::AsciiStrToUpper(token.text));
      if (value != nullptr && value->name() != token.text) {
        changes.emplace_back(ByteAt(*text, token.line, token.column), value->name());
      }
    }
    field = nullptr;
    if (token.type == pb::io::Tokenizer::TYPE_SYMBOL) {
      if (token.text == "[" || token.text == "{" || token.text == "<") ++depth;
      if (token.text == "]" || token.text == "}" || token.text == ">") --depth;
      if (depth == 0 && token.text == ":" && previous.type == pb::io::Tokenizer::TYPE_IDENTIFIER) {
        field = TrainConfig::descriptor()->FindFieldByName(previous.text);
        if (field != nullptr &&
            (field->is_repeated() || field->cpp_type() != pb::FieldDescriptor::CPPTYPE_ENUM)) {
          field = nullptr;
        }
      }
    }
    previous = token;
  }
  // After the tokenizer, which reads `text` in place.
  for (const auto& [at, name] : changes) {
    if (at != std::string::npos &&
        absl::EqualsIgnoreCase(absl::string_view(*text).substr(at, name.size()), name)) {
      text->replace(at, name.size(), name);
    }
  }
}

// Why the integer `written` (the value token `token`, after a minus sign
// when `written` starts with one) is no value of the enum field `field`, or
// "" when it is one. Text format takes any number into a proto3 enum, and
// validation then named the field but not where the file set it.
std::string EnumValueProblem(const pb::FieldDescriptor* field,
                             const pb::io::Tokenizer::Token& token, const std::string& written) {
  if (token.type != pb::io::Tokenizer::TYPE_INTEGER) return "";
  errno = 0;
  char* end = nullptr;
  const long long number = std::strtoll(written.c_str(), &end, 0);  // 0x7 and 07 too
  if (errno == 0 && *end == '\0' && number >= std::numeric_limits<int>::min() &&
      number <= std::numeric_limits<int>::max() &&
      field->enum_type()->FindValueByNumber(static_cast<int>(number)) != nullptr) {
    return "";
  }
  return absl::StrCat(written, " names no ", field->enum_type()->name(), " (", field->name(),
                      " takes ", ExpectedValue(field), ")");
}

// Why the integer `written` (the value token `token`, after a minus sign
// when `written` starts with one) in the integer field `field` is not the
// number it reads as in decimal, or "" when it is: text format reads a
// leading zero as octal, so "max_iters: 0100" trained 64 steps where the
// flag --max_iters=0100 trains 100. Hexadecimal (0x...) says what it is.
std::string IntegerValueProblem(const pb::FieldDescriptor* field,
                                const pb::io::Tokenizer::Token& token, const std::string& written) {
  const std::string& digits = token.text;
  if (token.type != pb::io::Tokenizer::TYPE_INTEGER || digits.size() < 2 || digits[0] != '0' ||
      digits[1] == 'x' || digits[1] == 'X') {
    return "";
  }
  uint64_t octal = 0, decimal = 0;
  if (!pb::io::Tokenizer::ParseInteger(digits, std::numeric_limits<uint64_t>::max(), &octal)) {
    return "";  // text format has refused it already
  }
  const size_t first = digits.find_first_not_of('0');
  const std::string stripped = first == std::string::npos ? "0" : digits.substr(first);
  if (absl::SimpleAtoi(stripped, &decimal) && decimal == octal) return "";  // 00 to 07
  const std::string sign = written[0] == '-' ? "-" : "";
  return absl::StrCat(written, " has a leading zero, which text format reads as octal: ", sign,
                      octal, ", not ", sign, stripped, "; write the number without the zero (",
                      field->name(), " takes ", ExpectedValue(field), ")");
}

// "path:line:column: field NAME: ..." for the first number or enum field
// `text` sets to a value that does not mean what the file says
// (FloatValueProblem, EnumValueProblem, IntegerValueProblem). Empty when there is none.
// `merged` is what `text` parsed into. Validation would report the value
// as read ("learning_rate=0: must be > 0", "learning_rate=inf") and where
// it came from no more than a flag's.
std::string ValueNotAsWritten(const std::string& path, const std::string& text,
                              const TrainConfig& merged) {
  pb::io::ArrayInputStream input(text.data(), static_cast<int>(text.size()));
  IgnoreErrors ignore;
  pb::io::Tokenizer tokenizer(&input, &ignore);
  tokenizer.set_comment_style(pb::io::Tokenizer::SH_COMMENT_STYLE);
  tokenizer.set_allow_f_after_float(true);  // as text format reads 1e-50f
  pb::io::Tokenizer::Token previous;
  const pb::FieldDescriptor* field = nullptr;     // a number or enum field whose value comes next
  std::optional<pb::io::Tokenizer::Token> minus;  // before the value: -1e-50, -inf
  int depth = 0;                                  // inside [] lists, {} or <> messages
  while (tokenizer.Next()) {
    const pb::io::Tokenizer::Token& token = tokenizer.current();
    if (field != nullptr && token.type == pb::io::Tokenizer::TYPE_SYMBOL && token.text == "-" &&
        !minus.has_value()) {
      minus = token;
      continue;
    }
    if (field != nullptr) {
      const std::string written = absl::StrCat(minus.has_value() ? "-" : "", token.text);
      const pb::FieldDescriptor::CppType type = field->cpp_type();
      const std::string problem = type == pb::FieldDescriptor::CPPTYPE_ENUM
                                      ? EnumValueProblem(field, token, written)
                                  : type == pb::FieldDescriptor::CPPTYPE_FLOAT ||
                                          type == pb::FieldDescriptor::CPPTYPE_DOUBLE
                                      ? FloatValueProblem(field, token, written, merged)
                                      : IntegerValueProblem(field, token, written);
      if (!problem.empty()) {
        const pb::io::Tokenizer::Token& first = minus.has_value() ? *minus : token;
        return absl::StrCat(path, ":", first.line + 1, ":", first.column + 1, ": field ",
                            field->name(), ": ", problem);
      }
    }
    field = nullptr;
    minus.reset();
    if (token.type == pb::io::Tokenizer::TYPE_SYMBOL) {
      if (token.text == "[" || token.text == "{" || token.text == "<") ++depth;
      if (token.text == "]" || token.text == "}" || token.text == ">") --depth;
      if (depth == 0 && token.text == ":" && previous.type == pb::io::Tokenizer::TYPE_IDENTIFIER) {
        field = TrainConfig::descriptor()->FindFieldByName(previous.text);
        const bool checked = field != nullptr && !field->is_repeated() &&
                             field->cpp_type() != pb::FieldDescriptor::CPPTYPE_STRING &&
                             field->cpp_type() != pb::FieldDescriptor::CPPTYPE_BOOL &&
                             field->cpp_type() != pb::FieldDescriptor::CPPTYPE_MESSAGE;
        if (!checked) field = nullptr;
      }
    }
    previous = token;
  }
  return "";
}

}  // namespace

absl::Status MergeTrainConfigFile(const std::string& path, TrainConfig* config) {
  // An ifstream opens a directory without complaint and reads nothing, which
  // would merge an empty config: only a regular file (or a link to one) is
  // a config.
  std::error_code ec;
  const std::filesystem::file_status status = std::filesystem::status(path, ec);
  if (std::filesystem::exists(status) && !std::filesystem::is_regular_file(status)) {
    return absl::NotFoundError(
        absl::StrCat("config file ", path, ": not a regular file (",
                     std::filesystem::is_directory(status) ? "a directory" : "a special file",
                     "); --config must name a text-format dropk.TrainConfig file"));
  }
  // A config is a page of text; a huge file (a sparse 3 GB one) was read
  // whole and ended in "out of memory", naming neither the file nor why.
  if (std::filesystem::is_regular_file(status)) {
    const uintmax_t size = std::filesystem::file_size(path, ec);
    if (!ec && size > kMaxConfigFileBytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "config file ", path, ": ", size, " bytes, more than the ", kMaxConfigFileBytes >> 20,
          " MiB a config file may have; --config must name a text-format dropk.TrainConfig "
          "file"));
    }
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("config file ", path, ": cannot open: ", std::strerror(errno)));
  }
  std::stringstream contents;
  contents << in.rdbuf();
  if (in.bad()) {
    return absl::NotFoundError(
        absl::StrCat("config file ", path, ": cannot read: ", std::strerror(errno)));
  }
  // Parse into a copy so a failed parse leaves *config untouched. Merging
  // parses straight into the message, so a file's explicit zero (n_layer: 0)
  // does replace the default, unlike Message::MergeFrom.
  TrainConfig merged = *config;
  std::string text = contents.str();
  // Editors on Windows start UTF-8 files with a byte-order mark, which text
  // format rejects as "non ascii codepoint 239"; it is not content.
  if (text.starts_with("\xEF\xBB\xBF")) text.erase(0, 3);
  EnumValuesInSchemaCase(&text);
  ConfigErrorCollector errors(path, &text);
  pb::TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  if (!parser.MergeFromString(text, &merged)) {
    std::string message = errors.Errors();
    if (message.empty()) message = absl::StrCat(path, ": not a TrainConfig");
    return absl::InvalidArgumentError(message);
  }
  if (std::string twice = FieldSetTwice(path, text); !twice.empty()) {
    return absl::InvalidArgumentError(twice);
  }
  if (std::string not_as_written = ValueNotAsWritten(path, text, merged); !not_as_written.empty()) {
    return absl::InvalidArgumentError(not_as_written);
  }
  *config = std::move(merged);
  return absl::OkStatus();
}

}  // namespace dropk
