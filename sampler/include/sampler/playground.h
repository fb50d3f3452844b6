// The playground page dropk-serve answers at GET /: a prompt box, sampling
// controls, streamed output, the seed and checkpoint step that produced it,
// and a side-by-side mode (k = 1 against k = 40). Source:
// sampler/playground/index.html, built into the binary, self-contained (no
// CDN); it uses only the public HTTP API, with the API key the user types.
#ifndef DROPK_SAMPLER_PLAYGROUND_H_
#define DROPK_SAMPLER_PLAYGROUND_H_

#include <string_view>

namespace dropk {

// The page's HTML (UTF-8), valid for the life of the program.
std::string_view PlaygroundHtml();

// The Content-Security-Policy sent with the page: it may load nothing but
// itself and talk only to its own origin.
inline constexpr char kPlaygroundContentSecurityPolicy[] =
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'";

}  // namespace dropk

#endif  // DROPK_SAMPLER_PLAYGROUND_H_
