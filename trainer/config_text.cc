#include "config_text.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/number_text.h"
#include "google/protobuf/text_format.h"
#include "trainer/comm_timeout.h"

namespace dropk {
namespace {

namespace pb = google::protobuf;

// A bound of a float field's range that a number typed on one side of it
// can round onto as a float. 0.99999999 is 1 as a float: --dropout
// 0.99999999 was refused as "dropout=1: must be in [0, 1)", naming a number
// the user never typed; and --bucket_cap_mb=1048576.01 passed as the
// largest cap, 1048576. Lower bounds are 0, which only an underflow
// crosses (UnderflowProblem).
struct FloatBound {
  std::string field;
  double bound;
  bool inclusive;     // the field may equal the bound (an upper bound: at most)
  std::string range;  // what validation says of the field's values
};

const std::vector<FloatBound>& FloatBounds() {
  static const std::vector<FloatBound>* bounds = [] {
    auto* b = new std::vector<FloatBound>;
    for (const char* unit :
         {"beta1", "beta2", "dropout", "dropout_embedding", "dropout_attention_probs",
          "dropout_attention_output", "dropout_mlp_output"}) {
      b->push_back({unit, 1, false, "in [0, 1)"});
    }
    b->push_back({"bucket_cap_mb", kMaxBucketCapMb, true,
                  absl::StrCat("at most ", static_cast<int64_t>(kMaxBucketCapMb), " (1 TiB)")});
    b->push_back(
        {"comm_timeout_s", kCommTimeoutMaxS, true,
         absl::StrCat("at most ", static_cast<int64_t>(kCommTimeoutMaxS), " (30 days); 0 = auto")});
    return b;
  }();
  return *bounds;
}

}  // namespace

std::string FieldValueAsFlagged(const pb::Message& message, const pb::FieldDescriptor* field) {
  if (field->cpp_type() == pb::FieldDescriptor::CPPTYPE_ENUM) {
    const pb::EnumValueDescriptor* value = message.GetReflection()->GetEnum(message, field);
    return value->number() == 0 ? "unset" : absl::AsciiStrToLower(value->name());
  }
  std::string text;
  pb::TextFormat::PrintFieldValueToString(message, field, -1, &text);
  return text;
}

std::string EnumNames(const pb::EnumDescriptor* type, const char* separator) {
  std::vector<std::string> names;
  for (int i = 0; i < type->value_count(); ++i) {
    // The zero value of a proto3 enum means "unset", never a choice.
    if (type->value(i)->number() == 0) continue;
    names.push_back(absl::AsciiStrToLower(type->value(i)->name()));
  }
  return absl::StrJoin(names, separator);
}

std::string ExpectedValue(const pb::FieldDescriptor* field) {
  switch (field->cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_INT32:
      return absl::StrCat("an integer in [", std::numeric_limits<int32_t>::min(), ", ",
                          std::numeric_limits<int32_t>::max(), "]");
    case pb::FieldDescriptor::CPPTYPE_INT64:
      return absl::StrCat("an integer in [", std::numeric_limits<int64_t>::min(), ", ",
                          std::numeric_limits<int64_t>::max(), "]");
    case pb::FieldDescriptor::CPPTYPE_UINT32:
      return absl::StrCat("an integer in [0, ", std::numeric_limits<uint32_t>::max(), "]");
    case pb::FieldDescriptor::CPPTYPE_UINT64:
      return absl::StrCat("an integer in [0, ", std::numeric_limits<uint64_t>::max(), "]");
    case pb::FieldDescriptor::CPPTYPE_FLOAT:
      return absl::StrCat("a finite number (float, magnitude at most ",
                          std::numeric_limits<float>::max(), ")");
    case pb::FieldDescriptor::CPPTYPE_DOUBLE:
      return absl::StrCat("a finite number (double, magnitude at most ",
                          std::numeric_limits<double>::max(), ")");
    case pb::FieldDescriptor::CPPTYPE_BOOL: return "true or false";
    case pb::FieldDescriptor::CPPTYPE_STRING: return "a quoted string";
    case pb::FieldDescriptor::CPPTYPE_ENUM:
      return absl::StrCat("one of ", EnumNames(field->enum_type(), ", "));
    case pb::FieldDescriptor::CPPTYPE_MESSAGE: break;
  }
  return absl::StrCat("a ", field->type_name());
}

std::string RoundedAcrossBound(const std::string& field, const std::string& text, float value) {
  std::string number(absl::StripAsciiWhitespace(text));
  if (!number.empty() && (number.back() == 'f' || number.back() == 'F') &&
      !absl::StrContains(absl::AsciiStrToLower(number), "0x")) {
    number.pop_back();
  }
  double typed = 0;
  if (!absl::SimpleAtod(number, &typed) || !std::isfinite(typed)) return "";
  for (const FloatBound& b : FloatBounds()) {
    if (field != b.field) continue;
    // Compared as typed: 0.99999999999999999999 is 1 even as a double, and
    // "dropout=1: must be in [0, 1)" named a number the user never typed.
    const int order = CompareDecimalExactly(number, b.bound)
                          .value_or(typed < b.bound ? -1 : (typed > b.bound ? 1 : 0));
    const bool typed_inside = b.inclusive ? order <= 0 : order < 0;
    const bool read_inside = b.inclusive ? value <= b.bound : value < b.bound;
    if (typed_inside == read_inside) return "";
    std::string why = absl::StrCat(text, AsFloatNote(number, value), " must be ", b.range);
    if (!b.inclusive) {
      absl::StrAppend(&why, "; the largest float below ", b.bound, " is ",
                      ShortestFloatText(std::nextafter(static_cast<float>(b.bound), 0.0f)));
    }
    return why;
  }
  return "";
}

}  // namespace dropk
