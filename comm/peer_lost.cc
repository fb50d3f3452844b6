#include "comm/peer_lost.h"

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

namespace dropk {
namespace {

constexpr absl::string_view kPeerLostPayload = "dropk.comm/peer_lost";

// `wrapped` with every payload of `status` added.
absl::Status WithPayloadsOf(const absl::Status& status, absl::Status wrapped) {
  status.ForEachPayload([&wrapped](absl::string_view type_url, const absl::Cord& payload) {
    wrapped.SetPayload(type_url, payload);
  });
  return wrapped;
}

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
  return WithPayloadsOf(status, absl::Status(code, absl::StrCat(context, ": ", status.message())));
}

absl::Status WithMessage(const absl::Status& status, const std::string& message) {
  if (status.ok()) return status;
  return WithPayloadsOf(status, absl::Status(status.code(), message));
}

}  // namespace dropk
