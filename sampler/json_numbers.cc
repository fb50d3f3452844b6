#include "json_numbers.h"

#include <cstddef>

#include "base/cut_for_message.h"
#include "base/number_text.h"
#include "nlohmann/json.hpp"

namespace dropk {
namespace {

using json = nlohmann::json;

// nlohmann's id of "number overflow parsing '...'" (an out_of_range error).
constexpr int kNumberOverflowId = 406;

std::string Cut(std::string_view text) { return CutForMessage(text, 40); }

// A walk over a parse that knows the top-level field it is in; what it
// does with numbers and errors is the subclass's.
class FieldTrackingSax : public json::json_sax_t {
 public:
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(json::number_integer_t) override { return true; }
  bool number_unsigned(json::number_unsigned_t) override { return true; }
  bool string(json::string_t&) override { return true; }
  bool binary(json::binary_t&) override { return true; }
  bool start_object(std::size_t) override {
    ++depth_;
    return true;
  }
  bool key(json::string_t& key) override {
    if (depth_ == 1) field_ = key;
    return true;
  }
  bool end_object() override {
    if (--depth_ == 0) field_.clear();
    return true;
  }
  bool start_array(std::size_t) override {
    ++depth_;
    return true;
  }
  bool end_array() override {
    if (--depth_ == 0) field_.clear();
    return true;
  }

 protected:
  // The top-level key being read; "" outside the top object.
  const std::string& field() const { return field_; }

 private:
  int depth_ = 0;  // arrays and objects open around the current value
  std::string field_;
};

// Walks the parse, remembering the top-level field it is in: keeps the
// first number below double's range and goes on, since one past the range
// may follow (and only that one explains why the parse failed).
class NumberFinder final : public FieldTrackingSax {
 public:
  explicit NumberFinder(bool (*counts)(const std::string&)) : counts_(counts) {}

  bool number_float(json::number_float_t value, const json::string_t& text) override {
    if (underflow_.has_value() || value != 0 || !SpellsNonZero(text) || !counts_(field())) {
      return true;
    }
    const std::string shown = Cut(text);
    underflow_ = UnreadableNumber{field(), shown, /*overflow=*/false,
                                  shown + UnderflowProblem(text, 0.0).substr(text.size())};
    return true;
  }
  bool parse_error(std::size_t, const std::string& last_token,
                   const json::exception& error) override {
    failed_ = true;
    if (error.id == kNumberOverflowId) {
      overflow_ = UnreadableNumber{field(), Cut(last_token), /*overflow=*/true, ""};
    }
    return false;
  }

  // What FindUnreadableNumbers returns, once the parse is over.
  std::vector<UnreadableNumber> Found() const {
    std::vector<UnreadableNumber> found;
    if (failed_ && !overflow_.has_value()) return found;  // broken for another reason
    if (underflow_.has_value()) found.push_back(*underflow_);
    if (overflow_.has_value()) found.push_back(*overflow_);
    return found;
  }

 private:
  bool (*counts_)(const std::string&);
  bool failed_ = false;  // the parse ended in an error
  std::optional<UnreadableNumber> underflow_, overflow_;
};

// Walks the parse to the first float in one top-level field that reads as
// one value, and keeps its text, whole.
class FloatTextFinder final : public FieldTrackingSax {
 public:
  FloatTextFinder(const std::string& field, double value) : wanted_field_(field), value_(value) {}

  bool number_float(json::number_float_t value, const json::string_t& text) override {
    if (field() != wanted_field_ || value != value_) return true;
    found_ = text;
    return false;  // found: the rest of the body does not matter
  }
  bool parse_error(std::size_t, const std::string&, const json::exception&) override {
    return false;
  }

  const std::optional<std::string>& Found() const { return found_; }

 private:
  const std::string wanted_field_;
  const double value_;
  std::optional<std::string> found_;
};

// The text of the first float in the top-level field `field` of `body` that
// reads as `value`, whole; nullopt when there is none.
std::optional<std::string> FloatText(std::string_view body, const std::string& field,
                                     double value) {
  FloatTextFinder finder(field, value);
  json::sax_parse(body.begin(), body.end(), &finder);
  return finder.Found();
}

}  // namespace

std::optional<std::string> FloatAsWritten(std::string_view body, const std::string& field,
                                          double value) {
  const std::optional<std::string> text = FloatText(body, field, value);
  if (!text.has_value()) return std::nullopt;
  return Cut(*text);
}

bool WrittenAsInteger(std::string_view body, const std::string& field, double value) {
  const std::optional<std::string> text = FloatText(body, field, value);
  // JSON's grammar leaves a number without '.', 'e' or 'E' an optional
  // minus and digits.
  return text.has_value() && text->find_first_of(".eE") == std::string::npos;
}

std::vector<UnreadableNumber> FindUnreadableNumbers(std::string_view body,
                                                    bool (*counts)(const std::string& field)) {
  NumberFinder finder(counts);
  json::sax_parse(body.begin(), body.end(), &finder);
  return finder.Found();
}

}  // namespace dropk
