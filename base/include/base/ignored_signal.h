// The rule dropk's binaries share for stop signals: one that the launcher
// set to be ignored stays ignored. `nohup` ignores SIGHUP and a shell
// script's background job SIGINT, meaning the process should outlive them.
#ifndef DROPK_BASE_IGNORED_SIGNAL_H_
#define DROPK_BASE_IGNORED_SIGNAL_H_

#include <signal.h>

namespace dropk {

// True when `sig`'s disposition is SIG_IGN now (as inherited at start,
// before the process installs its own handlers).
inline bool SignalIgnoredAtStart(int sig) {
  struct sigaction current = {};
  return sigaction(sig, nullptr, &current) == 0 && current.sa_handler == SIG_IGN;
}

}  // namespace dropk

#endif  // DROPK_BASE_IGNORED_SIGNAL_H_
