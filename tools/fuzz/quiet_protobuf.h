// Shared by the fuzzers that parse protobufs: protobuf logs every string
// field with invalid UTF-8 and every text-format error it meets, which is the
// expected fate of most fuzz inputs; silencing it keeps libFuzzer's output
// readable.
#ifndef DROPK_TOOLS_FUZZ_QUIET_PROTOBUF_H_
#define DROPK_TOOLS_FUZZ_QUIET_PROTOBUF_H_

#include <string>

#include "google/protobuf/stubs/logging.h"

// libFuzzer calls this once before the first input.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(
      [](google::protobuf::LogLevel, const char*, int, const std::string&) {});
  return 0;
}

#endif  // DROPK_TOOLS_FUZZ_QUIET_PROTOBUF_H_
