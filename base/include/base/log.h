// The logging seam of dropk's libraries: library code never prints; it
// writes lines to a LogSink its caller gives (in an options struct or a
// constructor), and the binaries hand in StderrLogSink(). Tests pass a sink
// that records lines, or none (null = DiscardLogSink()).
#ifndef DROPK_BASE_LOG_H_
#define DROPK_BASE_LOG_H_

#include <cstdio>
#include <mutex>
#include <ostream>
#include <string>
#include <string_view>

namespace dropk {

// Receives whole log lines (no trailing newline). Implementations must be
// thread-safe: a library may log from its own threads.
class LogSink {
 public:
  virtual ~LogSink() = default;
  virtual void Write(std::string_view line) = 0;
};

// Writes each line to stderr with one fwrite, so lines from different
// threads never interleave. Process-wide, never deleted.
inline LogSink* StderrLogSink() {
  class Stderr : public LogSink {
   public:
    void Write(std::string_view line) override {
      std::string text(line);
      text.push_back('\n');
      std::fwrite(text.data(), 1, text.size(), stderr);
      std::fflush(stderr);
    }
  };
  static Stderr* sink = new Stderr;
  return sink;
}

// Drops every line. Process-wide, never deleted.
inline LogSink* DiscardLogSink() {
  class Discard : public LogSink {
   public:
    void Write(std::string_view) override {}
  };
  static Discard* sink = new Discard;
  return sink;
}

// `sink`, or the discarding sink when it is null.
inline LogSink* OrDiscard(LogSink* sink) { return sink != nullptr ? sink : DiscardLogSink(); }

// Writes lines to a std::ostream the caller owns (which must outlive it),
// one line at a time under a mutex, each with its newline in one insertion:
// on std::cerr (unbuffered) that is one write(2), so the lines of processes
// that share a pipe (the ranks under mpirun) never run into each other.
class OstreamLogSink : public LogSink {
 public:
  explicit OstreamLogSink(std::ostream& out) : out_(out) {}
  void Write(std::string_view line) override {
    std::string text(line);
    text.push_back('\n');
    std::lock_guard<std::mutex> lock(mu_);
    out_ << text << std::flush;
  }

 private:
  std::mutex mu_;
  std::ostream& out_;
};

}  // namespace dropk

#endif  // DROPK_BASE_LOG_H_
