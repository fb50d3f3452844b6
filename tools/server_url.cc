#include "tools/server_url.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <optional>
#include <string_view>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace dropk {
namespace {

constexpr char kForm[] =
    "not http://HOST[:PORT][/PATH] (HOST a name, an IPv4 address or [IPv6], PORT 1 to 65535)";

// `text` with its %XX escapes decoded, or nullopt when a '%' begins none.
std::optional<std::string> PercentDecoded(std::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out += text[i];
      continue;
    }
    if (i + 2 >= text.size()) return std::nullopt;
    const char high = text[i + 1], low = text[i + 2];
    if (!absl::ascii_isxdigit(high) || !absl::ascii_isxdigit(low)) return std::nullopt;
    const auto digit = [](char c) {
      return absl::ascii_isdigit(c) ? c - '0' : absl::ascii_tolower(c) - 'a' + 10;
    };
    out += static_cast<char>(digit(high) * 16 + digit(low));
    i += 2;
  }
  return out;
}

bool IsAscii(std::string_view text) {
  return std::all_of(text.begin(), text.end(),
                     [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

// The first character of `text` outside `allowed`, shown for a message
// ("'/'", or "byte 0x0A" for one that does not print); empty when none.
std::string FirstOutside(std::string_view text, bool (*allowed)(char)) {
  for (const char c : text) {
    if (allowed(c)) continue;
    const auto u = static_cast<unsigned char>(c);
    return absl::ascii_isgraph(c) ? absl::StrCat("'", std::string(1, c), "'")
                                  : absl::StrCat("byte 0x", absl::Hex(u, absl::kZeroPad2));
  }
  return "";
}

// A host name's characters (letters, digits, '-', '.', '_'), as DNS and
// /etc/hosts have them.
bool IsHostNameChar(char c) { return absl::ascii_isalnum(c) || c == '-' || c == '.' || c == '_'; }

// An IPv6 zone ID's characters: RFC 6874's unreserved.
bool IsZoneChar(char c) { return IsHostNameChar(c) || c == '~'; }

}  // namespace

absl::StatusOr<ServerUrl> ParseServerUrl(const std::string& url) {
  const auto refused = [&url](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat("--url=", url, ": ", why));
  };
  // A scheme is case-insensitive (RFC 3986 3.1): HTTP:// was refused.
  if (!absl::StartsWithIgnoreCase(url, "http://")) {
    return refused("does not start with http://; give a dropk-serve's address, http://HOST[:PORT]");
  }
  // A space or a control character went out raw in the request line, which
  // the server then refused (400) or misread.
  if (std::any_of(url.begin(), url.end(),
                  [](char c) { return static_cast<unsigned char>(c) <= 0x20 || c == 0x7f; })) {
    return refused(
        "holds a space or a control character, which a URL may not (write a space "
        "as %20)");
  }
  // The authority ends at the first '/', '?' or '#' (RFC 3986 3.2): a query
  // right after it (http://host:8080?key=v) was read as part of the port,
  // and a query after a path got /v1/completions added after it
  // (/v1?x=1/v1/completions). A fragment is the client's own, never sent
  // (RFC 9110 7.1).
  std::string rest = url.substr(7);
  rest.resize(std::min(rest.find('#'), rest.size()));
  const size_t authority_end = std::min(rest.find_first_of("/?"), rest.size());
  const std::string authority = rest.substr(0, authority_end);
  std::string path = rest.substr(authority_end);
  const size_t question = std::min(path.find('?'), path.size());
  const std::string query = path.substr(question);
  path.resize(question);
  // http://user:password@host was looked up as the host "user:password@host"
  // ("Host not found"); dropk sends a key with --api-key-file, never one in
  // the URL.
  if (authority.find('@') != std::string::npos) {
    return refused(
        "holds user information (USER@HOST), which dropk does not send; give the key with "
        "--api-key-file and the URL as http://HOST[:PORT][/PATH]");
  }
  ServerUrl out;
  while (!path.empty() && path.back() == '/') path.pop_back();
  if (path.size() < 15 || path.compare(path.size() - 15, 15, "/v1/completions") != 0) {
    path += path.ends_with("/v1") ? "/completions" : "/v1/completions";
  }
  out.target = path + query;
  // The host as sent in the Host header, and what follows it (":PORT").
  std::string host_sent, after_host;
  if (absl::StartsWith(authority, "[")) {
    // An IPv6 literal is bracketed ([::1]:8080); the resolver wants it bare.
    const size_t close = authority.find(']');
    if (close == std::string::npos) return refused(kForm);
    const std::string literal = authority.substr(1, close - 1);
    after_host = authority.substr(close + 1);
    if (!after_host.empty() && after_host.front() != ':') return refused(kForm);
    const size_t percent = std::min(literal.find('%'), literal.size());
    const std::string address = literal.substr(0, percent);
    in6_addr parsed;
    if (inet_pton(AF_INET6, address.c_str(), &parsed) != 1) {
      return refused(absl::StrCat("[", address, "] is not an IPv6 address"));
    }
    host_sent = absl::StrCat("[", address, "]");
    out.host = address;
    if (percent < literal.size()) {
      // A zone ID (the interface of a link-local address) is written %25ZONE
      // (RFC 6874), or, as curl takes it, %ZONE. It was handed to the
      // resolver as written: [fe80::1%25eth0] was "Host not found". It is
      // this machine's own, so it is not sent (RFC 6874 4).
      std::string_view written = std::string_view(literal).substr(percent + 1);
      std::optional<std::string> zone = std::string(written);
      if (written.starts_with("25")) zone = PercentDecoded(written.substr(2));
      if (!zone || zone->empty() || !FirstOutside(*zone, IsZoneChar).empty()) {
        return refused(
            "the IPv6 zone ID is not an interface name or number; write it after %25, as in "
            "http://[fe80::1%25eth0]:8080");
      }
      out.host = absl::StrCat(address, "%", *zone);
    }
  } else {
    const size_t colon = std::min(authority.find(':'), authority.size());
    const std::string written = authority.substr(0, colon);
    after_host = authority.substr(colon);
    // A name the resolver would look up as UTF-8 bytes: getaddrinfo does not
    // convert an internationalized name, which then was "Host not found".
    const auto not_ascii = [&] {
      return refused(
          "the host is not ASCII; give an internationalized name in its ASCII (xn--, "
          "punycode) form, as `idn2 NAME` prints it");
    };
    if (!IsAscii(written)) return not_ascii();
    // %XX escapes in a name (RFC 3986 3.2.2) were looked up as written.
    std::optional<std::string> host = PercentDecoded(written);
    if (!host) {
      return refused(absl::StrCat("the host ", written, " holds a '%' that begins no %XX escape"));
    }
    if (!IsAscii(*host)) return not_ascii();
    if (host->empty()) return refused(kForm);
    if (const std::string bad = FirstOutside(*host, IsHostNameChar); !bad.empty()) {
      return refused(absl::StrCat("the host ", written == *host ? "" : "(decoded) ",
                                  absl::CHexEscape(*host), " holds ", bad,
                                  ", which a host name may not (letters, digits, '-', '.', '_')"));
    }
    host_sent = *host;
    out.host = *std::move(host);
  }
  // What the resolver would misread is refused naming --url: an empty host
  // reached this machine, port 99999 was "Connection refused", "[::1" was
  // "Service not found". A port is digits alone (RFC 3986 3.2.3): "+80"
  // was read as 80, and sent as it was in the Host header.
  out.port = after_host.empty() ? "80" : after_host.substr(1);
  int port_number = 0;
  if (out.port.empty() || !std::all_of(out.port.begin(), out.port.end(), absl::ascii_isdigit) ||
      !absl::SimpleAtoi(out.port, &port_number) || port_number < 1 || port_number > 65535) {
    return refused(kForm);
  }
  out.hostport = host_sent + after_host;
  return out;
}

}  // namespace dropk
