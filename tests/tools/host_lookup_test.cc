// dropk sample's host lookup (tools/host_lookup.h): a lookup that never
// answers (DNS dead) is given up on at the deadline; one that answers is
// passed through, its error too.
#include "tools/host_lookup.h"

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>

namespace dropk {
namespace {

using boost::asio::ip::tcp;
using Endpoints = std::vector<tcp::endpoint>;

// A lookup that blocks until Release, as getaddrinfo does with no DNS
// server answering.
class HangingLookup {
 public:
  HostLookup Lookup() {
    return [state = state_](const std::string&, const std::string&) -> absl::StatusOr<Endpoints> {
      std::unique_lock<std::mutex> lock(state->mu);
      state->cv.wait(lock, [&] { return state->released; });
      return Endpoints{tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 1)};
    };
  }
  void Release() {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->released = true;
    state_->cv.notify_all();
  }

 private:
  struct State {
    std::mutex mu;
    std::condition_variable cv;
    bool released = false;
  };
  std::shared_ptr<State> state_ = std::make_shared<State>();
};

TEST(HostLookupTest, ALookupThatNeverAnswersEndsAtTheDeadline) {
  HangingLookup hanging;
  const auto start = std::chrono::steady_clock::now();
  const absl::StatusOr<Endpoints> got =
      LookUpWithin("dns.example", "80", std::chrono::milliseconds(300), hanging.Lookup());
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_TRUE(absl::IsDeadlineExceeded(got.status())) << got.status();
  EXPECT_EQ(got.status().message(), "dns.example: no answer from the name lookup within 300 ms");
  EXPECT_GE(took, std::chrono::milliseconds(300));
  EXPECT_LT(took, std::chrono::seconds(3));
  hanging.Release();  // its late answer is dropped
}

TEST(HostLookupTest, AnAnswerOrAnErrorIsPassedThrough) {
  const absl::StatusOr<Endpoints> got = LookUpWithin(
      "h", "7", std::chrono::seconds(10),
      [](const std::string& host, const std::string& port) -> absl::StatusOr<Endpoints> {
        if (host != "h" || port != "7") return absl::InternalError("wrong arguments");
        return Endpoints{tcp::endpoint(boost::asio::ip::make_address("::1"), 7)};
      });
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, Endpoints{tcp::endpoint(boost::asio::ip::make_address("::1"), 7)});
  const absl::StatusOr<Endpoints> refused =
      LookUpWithin("h", "7", std::chrono::seconds(10),
                   [](const std::string&, const std::string&) -> absl::StatusOr<Endpoints> {
                     return absl::NotFoundError("h: Host not found");
                   });
  EXPECT_EQ(refused.status(), absl::NotFoundError("h: Host not found"));
}

// Address literals need no DNS; a name with no address is NotFound naming
// it.
TEST(HostLookupTest, TheSystemLookupReadsLiteralsAndNamesTheHost) {
  absl::StatusOr<Endpoints> v4 = LookUpWithin("127.0.0.1", "8080", std::chrono::seconds(10));
  ASSERT_TRUE(v4.ok()) << v4.status();
  EXPECT_EQ(v4->front(), tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 8080));
  absl::StatusOr<Endpoints> v6 = SystemHostLookup("::1", "8080");
  ASSERT_TRUE(v6.ok()) << v6.status();
  EXPECT_EQ(v6->front(), tcp::endpoint(boost::asio::ip::make_address("::1"), 8080));
}

}  // namespace
}  // namespace dropk
