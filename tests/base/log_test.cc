// base/log.h: the log sinks.
#include "base/log.h"

#include <ostream>
#include <streambuf>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace dropk {
namespace {

// A stream buffer that keeps each write it is handed (as an unbuffered
// std::cerr hands each insertion to write(2)).
class WriteRecorder : public std::streambuf {
 public:
  std::vector<std::string> writes;

 protected:
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    writes.emplace_back(s, n);
    return n;
  }
  int_type overflow(int_type c) override {
    if (c != traits_type::eof()) writes.emplace_back(1, traits_type::to_char_type(c));
    return c;
  }
};

// The line and its newline went out as two writes: the ranks of a job
// sharing mpirun's output ran into each other ("...No space left on
// devicedropk checkpoint: rank 1: ...").
TEST(OstreamLogSinkTest, WritesEachLineWithItsNewlineAtOnce) {
  WriteRecorder recorder;
  std::ostream out(&recorder);
  OstreamLogSink sink(out);
  sink.Write("dropk checkpoint: rank 0: write: No space left on device");
  sink.Write("second");
  EXPECT_EQ(recorder.writes,
            (std::vector<std::string>{"dropk checkpoint: rank 0: write: No space left on device\n",
                                      "second\n"}));
}

}  // namespace
}  // namespace dropk
