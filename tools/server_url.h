// The URL `dropk sample --url` is given (tools/sample_command.cc), read into
// what the connection and the request need. Parsing only: no lookup, no I/O.
#ifndef DROPK_TOOLS_SERVER_URL_H_
#define DROPK_TOOLS_SERVER_URL_H_

#include <string>

#include "absl/status/statusor.h"

namespace dropk {

// Where --url points.
struct ServerUrl {
  // For the Host header: the host as sent (escapes decoded, an IPv6 zone ID
  // left out, RFC 6874 4), and the port when the URL gave one: "[fe80::1]:8080".
  std::string hostport;
  // For the lookup: a name or an IPv4 address, or an IPv6 literal bare with
  // its zone ID: "fe80::1%eth0".
  std::string host;
  std::string port;    // digits, 1 to 65535
  std::string target;  // the request's path and query: "/v1/completions?x=1"
};

// Reads `url`, http://HOST[:PORT][/PATH][?QUERY][#FRAGMENT]: HOST a name
// (%XX escapes decoded; ASCII only, an internationalized name in its xn--
// form), an IPv4 address or [IPv6] with an optional zone ID
// ([fe80::1%25eth0], RFC 6874; [fe80::1%eth0] too). The path defaults to
// /v1/completions, and one that does not end in it gets it added before the
// query; a fragment is dropped. InvalidArgument "--url=URL: why" for what the
// resolver or the server would misread.
absl::StatusOr<ServerUrl> ParseServerUrl(const std::string& url);

}  // namespace dropk

#endif  // DROPK_TOOLS_SERVER_URL_H_
