// A fresh temporary directory per test, removed with everything in it when
// the object goes away, so tests never share or leak files.
#ifndef DROPK_TESTS_SUPPORT_TEMP_DIR_H_
#define DROPK_TESTS_SUPPORT_TEMP_DIR_H_

#include <stdlib.h>

#include <filesystem>
#include <string>

#include "gtest/gtest.h"

namespace dropk::test_util {

class ScopedTempDir {
 public:
  // Creates TMPDIR/dropk_<prefix>_XXXXXX (mkdtemp: unique even across
  // processes running the same test).
  explicit ScopedTempDir(const std::string& prefix = "test") {
    std::string pattern =
        (std::filesystem::path(::testing::TempDir()) / ("dropk_" + prefix + "_XXXXXX")).string();
    if (mkdtemp(pattern.data()) == nullptr) {
      ADD_FAILURE() << "mkdtemp " << pattern << " failed";
    }
    path_ = pattern;
  }
  ~ScopedTempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScopedTempDir(const ScopedTempDir&) = delete;
  ScopedTempDir& operator=(const ScopedTempDir&) = delete;

  const std::string& path() const { return path_; }
  // path()/name
  std::string Path(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace dropk::test_util

#endif  // DROPK_TESTS_SUPPORT_TEMP_DIR_H_
