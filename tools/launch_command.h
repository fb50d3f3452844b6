// `dropk launch`: a supervisor around mpirun that survives the loss of a
// host (tools/launch_command.cc).
#ifndef DROPK_TOOLS_LAUNCH_COMMAND_H_
#define DROPK_TOOLS_LAUNCH_COMMAND_H_

#include <functional>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"

namespace dropk {

// Registers `dropk launch --hostfile H [--max-restarts N] [--mpirun-args
// "..."] [--mpirun PATH] -- dropk-train ARGS`. It runs mpirun over the
// hostfile's hosts (one rank per slot); when the job fails because a host
// was lost (FindLostHost), it drops that host and runs the job again on the
// rest from the newest checkpoint (--resume=latest), with
// gradient_accumulation_steps raised so the global batch stays the same, up
// to --max-restarts times, logging each restart's cause and lost host.
// Any other failure ends it with mpirun's status (Aborted). SIGINT/SIGTERM
// reach the ranks as SIGUSR1: they save a checkpoint and stop; where there
// is nothing to save (no rank of the attempt started yet, hosts being tried
// with mpirun alone, between attempts) the first ends the launch within
// about a second, Aborted, naming what it stopped. mpirun runs
// in a process group of its own, stdin from /dev/null; once a rank has
// recorded a failure (trainer/failure_record.h), mpirun gets
// --failure-grace-s (60) to end, or --lost-host-grace-s (5) when the record
// names a host lost, before that group is killed and the launch goes on as
// if mpirun had ended (a lost host named in the records is dropped and the
// job relaunched), saying so.
void RegisterLaunchCommand(CLI::App& app, std::function<absl::Status()>& action);

}  // namespace dropk

#endif  // DROPK_TOOLS_LAUNCH_COMMAND_H_
