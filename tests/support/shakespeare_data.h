// The bundled corpus, prepared for training tests.
#ifndef DROPK_TESTS_SUPPORT_SHAKESPEARE_DATA_H_
#define DROPK_TESTS_SUPPORT_SHAKESPEARE_DATA_H_

#include <cstddef>
#include <fstream>
#include <string>

#include "absl/status/status.h"
#include "trainer/prepare_data.h"
#include "trainer/token_file.h"

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

// Changes the one-byte token at `index` of the token file at `path`
// (Shakespeare's char tokenizer: one byte per token) into another valid
// token id, 0 or 1, in place: only a checksum can tell. False when the file
// could not be read and written.
inline bool ChangeOneByteToken(const std::string& path, size_t index) {
  const auto at = static_cast<std::streamoff>(kTokenFileHeaderSize + index);
  std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
  file.seekg(at);
  const int token = file.get();
  file.seekp(at);
  file.put(token == 0 ? 1 : 0);
  return file.good() && token != std::char_traits<char>::eof();
}

}  // namespace dropk::test_util

#endif  // DROPK_TESTS_SUPPORT_SHAKESPEARE_DATA_H_
