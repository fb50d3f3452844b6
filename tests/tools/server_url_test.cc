// tools/server_url.h: what `dropk sample --url` reads from its URL, and the
// one-line error naming --url for what it refuses (end to end, with a
// server, in sample_cli_test.cc).
#include "tools/server_url.h"

#include <gtest/gtest.h>

#include <string>

namespace dropk {
namespace {

ServerUrl Parsed(const std::string& url) {
  absl::StatusOr<ServerUrl> parsed = ParseServerUrl(url);
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  return parsed.value_or(ServerUrl{});
}

// The error message for `url`, which must be refused as a usage error.
std::string Refusal(const std::string& url) {
  absl::StatusOr<ServerUrl> parsed = ParseServerUrl(url);
  EXPECT_TRUE(absl::IsInvalidArgument(parsed.status())) << url << ": " << parsed.status();
  return std::string(parsed.status().message());
}

TEST(ServerUrlTest, ANameAPortAPathAndAQuery) {
  const ServerUrl url = Parsed("HTTP://Example.com:8080/api?x=1#top");
  EXPECT_EQ(url.host, "Example.com");
  EXPECT_EQ(url.port, "8080");
  EXPECT_EQ(url.hostport, "Example.com:8080");
  EXPECT_EQ(url.target, "/api/v1/completions?x=1");
  const ServerUrl plain = Parsed("http://10.0.0.1");
  EXPECT_EQ(plain.host, "10.0.0.1");
  EXPECT_EQ(plain.port, "80");
  EXPECT_EQ(plain.hostport, "10.0.0.1");
  EXPECT_EQ(plain.target, "/v1/completions");
}

// An IPv6 zone ID ([fe80::1%25eth0], RFC 6874) went to the resolver as
// written, "fe80::1%25eth0": Host not found. The resolver gets "%eth0"; the
// Host header leaves the zone out (RFC 6874 4: it is this machine's own).
TEST(ServerUrlTest, AnIpv6ZoneIdIsDecodedForTheLookupAndNotSent) {
  for (const std::string written : {"%25eth0", "%eth0"}) {
    SCOPED_TRACE(written);
    const ServerUrl url = Parsed("http://[fe80::1" + written + "]:8080/v1");
    EXPECT_EQ(url.host, "fe80::1%eth0");
    EXPECT_EQ(url.port, "8080");
    EXPECT_EQ(url.hostport, "[fe80::1]:8080");
    EXPECT_EQ(url.target, "/v1/completions");
  }
  EXPECT_EQ(Parsed("http://[fe80::1%252]").host, "fe80::1%2");
  const ServerUrl loopback = Parsed("http://[::1]");
  EXPECT_EQ(loopback.host, "::1");
  EXPECT_EQ(loopback.hostport, "[::1]");
}

TEST(ServerUrlTest, AZoneIdThatIsNoInterfaceOrABracketedNonAddressIsRefused) {
  for (const std::string url : {"http://[fe80::1%25]:8080", "http://[fe80::1%]",
                                "http://[fe80::1%25a%2Fb]", "http://[fe80::1%25%zz]"}) {
    EXPECT_EQ(Refusal(url), "--url=" + url +
                                ": the IPv6 zone ID is not an interface name or number; write it "
                                "after %25, as in http://[fe80::1%25eth0]:8080");
  }
  EXPECT_EQ(Refusal("http://[localhost]:80"),
            "--url=http://[localhost]:80: [localhost] is not an IPv6 address");
  EXPECT_EQ(Refusal("http://[::1]x"),
            "--url=http://[::1]x: not http://HOST[:PORT][/PATH] (HOST a name, an IPv4 address "
            "or [IPv6], PORT 1 to 65535)");
}

// %XX escapes in a host (RFC 3986 3.2.2) were looked up as written.
TEST(ServerUrlTest, PercentEscapesInAHostAreDecodedOrRefused) {
  const ServerUrl url = Parsed("http://loc%61lhost:8080");
  EXPECT_EQ(url.host, "localhost");
  EXPECT_EQ(url.hostport, "localhost:8080");
  EXPECT_EQ(Parsed("http://127.0.0.%31").host, "127.0.0.1");
  EXPECT_EQ(Refusal("http://a%2fb:80"),
            "--url=http://a%2fb:80: the host (decoded) a/b holds '/', which a host name may not "
            "(letters, digits, '-', '.', '_')");
  EXPECT_EQ(Refusal("http://a%0Ab"),
            "--url=http://a%0Ab: the host (decoded) a\\nb holds byte 0x0a, which a host name may "
            "not (letters, digits, '-', '.', '_')");
  EXPECT_EQ(Refusal("http://a%zzb"),
            "--url=http://a%zzb: the host a%zzb holds a '%' that "
            "begins no %XX escape");
  EXPECT_EQ(Refusal("http://ab%4"),
            "--url=http://ab%4: the host ab%4 holds a '%' that begins no %XX escape");
  EXPECT_EQ(Refusal("http://a!b"),
            "--url=http://a!b: the host a!b holds '!', which a host name "
            "may not (letters, digits, '-', '.', '_')");
}

// getaddrinfo does not convert an internationalized name: it was "Host not
// found", with no word of the xn-- form a resolver can look up.
TEST(ServerUrlTest, ANonAsciiHostIsRefusedWithTheXnHint) {
  for (const std::string url : {"http://bücher.example:8080", "http://b%C3%BCcher.example"}) {
    EXPECT_EQ(Refusal(url), "--url=" + url +
                                ": the host is not ASCII; give an internationalized name in its "
                                "ASCII (xn--, punycode) form, as `idn2 NAME` prints it");
  }
}

}  // namespace
}  // namespace dropk
