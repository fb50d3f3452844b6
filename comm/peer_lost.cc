#include "comm/peer_lost.h"

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

namespace dropk {
namespace {

constexpr absl::string_view kPeerLostPayload = "dropk.comm/peer_lost";

}  // namespace

absl::Status PeerLostError(const std::string& message) {
  absl::Status status = absl::UnavailableError(message);
  status.SetPayload(kPeerLostPayload, absl::Cord());
  return status;
}

bool IsPeerLost(const absl::Status& status) {
  return absl::IsUnavailable(status) && status.GetPayload(kPeerLostPayload).has_value();
}

absl::Status WithContext(const absl::Status& status, const std::string& context) {
  if (status.ok()) return status;
  return WithContext(status, context, status.code());
}

absl::Status WithContext(const absl::Status& status, const std::string& context,
                         absl::StatusCode code) {
  absl::Status wrapped(code, absl::StrCat(context, ": ", status.message()));
  status.ForEachPayload([&wrapped](absl::string_view type_url, const absl::Cord& payload) {
    wrapped.SetPayload(type_url, payload);
  });
  return wrapped;
}

}  // namespace dropk
