// How TrainConfig values read and are named in messages: shared by the
// flag parser and validation (config.cc) and the config file reader
// (config_file.cc). Private to trainer/.
#ifndef DROPK_TRAINER_CONFIG_TEXT_H_
#define DROPK_TRAINER_CONFIG_TEXT_H_

#include <string>

#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"

namespace dropk {

// The largest gradient bucket cap, in MiB (1 TiB).
inline constexpr float kMaxBucketCapMb = 1 << 20;

// The values of `type` a user can choose (all but the zero one, which means
// unset), in lower case, joined by `separator`: "cpu, cuda".
std::string EnumNames(const google::protobuf::EnumDescriptor* type, const char* separator);

// The value of `field` in `message` as a flag takes it: an enum by its
// lower-case name ("bf16", as --precision=bf16 takes it; its zero value,
// *_UNSPECIFIED, "unset"), anything else in text format ("0.001",
// "\"out\""). For --help's defaults and a resume's config changes.
std::string FieldValueAsFlagged(const google::protobuf::Message& message,
                                const google::protobuf::FieldDescriptor* field);

// What a value of `field` must look like, for error messages: the type and,
// for numbers, the range the type allows ("an integer in [0, 4294967295]").
std::string ExpectedValue(const google::protobuf::FieldDescriptor* field);

// Why the number `text` (as typed; text format's trailing f allowed), read
// into the float field `field` as `value`, crossed one of the field's
// bounds in the rounding, or "" when it did not: "0.99999999 (1 as a
// float) must be in [0, 1); the largest float below 1 is 0.99999994".
std::string RoundedAcrossBound(const std::string& field, const std::string& text, float value);

}  // namespace dropk

#endif  // DROPK_TRAINER_CONFIG_TEXT_H_
