// base/json_for_message.h: what an error message quotes of a JSON value.
#include "base/json_for_message.h"

#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace dropk {
namespace {

using nlohmann::json;

TEST(JsonForMessageTest, SmallValuesAreTheirCompactJson) {
  for (const char* text : {"5", "-1", "1.5", "null", "true", R"("a\nb")", "[]", "{}", "[1,[2,3]]",
                           R"({"a":[1,{"b":null}],"c":"d"})"}) {
    SCOPED_TRACE(text);
    EXPECT_EQ(JsonForMessage(json::parse(text), 80), json::parse(text).dump());
  }
  EXPECT_EQ(JsonForMessage(nlohmann::ordered_json::parse(R"({"z":1,"a":2})"), 80),
            R"({"z":1,"a":2})");
}

TEST(JsonForMessageTest, LargeValuesAreCutAndSaySo) {
  json many = json::array();
  for (int i = 0; i < 100000; ++i) many.push_back(i);
  const std::string shown = JsonForMessage(many, 20);
  EXPECT_EQ(shown, many.dump().substr(0, 20) + "...");
  EXPECT_EQ(JsonForMessage(json(std::string(1000, 'x')), 5), "\"xxxx...");
}

// dump() recursed once a level: a value nested 200,000 deep, which the
// parser takes, overflowed the stack (a segfault) instead of being quoted.
TEST(JsonForMessageTest, DeepNestingIsCutNotAStackOverflow) {
  constexpr int kDepth = 200000;
  const json deep = json::parse(std::string(kDepth, '[') + std::string(kDepth, ']'));
  EXPECT_EQ(JsonForMessage(deep, 10), "[[[[[[[[[[...");
  const json deep_objects = json::parse([] {
    std::string text;
    for (int i = 0; i < kDepth; ++i) text += "{\"a\":";
    return text + "1" + std::string(kDepth, '}');
  }());
  EXPECT_EQ(JsonForMessage(deep_objects, 12), R"({"a":{"a":{"...)");
}

TEST(JsonForMessageTest, ControlCharactersAndInvalidUtf8StayOneLine) {
  const std::string right_to_left_override = "\xe2\x80\xae";  // U+202E
  EXPECT_EQ(JsonForMessage(json("a" + right_to_left_override + "b"), 80), "\"a\\u202eb\"");
  EXPECT_EQ(JsonForMessage(json("a\xff"), 80), "\"a\xef\xbf\xbd\"");  // U+FFFD
}

}  // namespace
}  // namespace dropk
