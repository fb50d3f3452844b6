// The bundled corpus, prepared for training tests.
#ifndef DROPK_TESTS_SUPPORT_SHAKESPEARE_DATA_H_
#define DROPK_TESTS_SUPPORT_SHAKESPEARE_DATA_H_

#include <string>

#include "absl/status/status.h"
#include "trainer/prepare_data.h"

namespace dropk::test_util {

// Tiny Shakespeare (data/tinyshakespeare.txt) prepared with the character
// tokenizer into out_dir (tokenizer.pb, train.bin, val.bin), as `dropk data
// prepare --tokenizer char` does; the error of PrepareData otherwise.
inline absl::Status PrepareShakespeareData(const std::string& out_dir) {
  PrepareOptions options;
  options.inputs = {DROPK_SOURCE_DIR "/data/tinyshakespeare.txt"};
  options.out_dir = out_dir;
  return PrepareData(options).status();
}

}  // namespace dropk::test_util

#endif  // DROPK_TESTS_SUPPORT_SHAKESPEARE_DATA_H_
