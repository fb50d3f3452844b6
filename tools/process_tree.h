// The processes a launched command leaves behind. Open MPI's helpers (the
// ssh agents that start daemons on other hosts) run in process groups of
// their own, so killing mpirun's group missed them, and once mpirun ended
// they were init's: they ran on after the launcher, holding connections to
// hosts the job had left.
#ifndef DROPK_TOOLS_PROCESS_TREE_H_
#define DROPK_TOOLS_PROCESS_TREE_H_

#include <sys/types.h>

#include <vector>

namespace dropk {

// The pids of every process below `root` (its children, theirs, ...) as
// /proc shows them now, parents before their children. A process that
// ends meanwhile may be left out. Never throws beyond std::bad_alloc.
std::vector<pid_t> DescendantsOf(pid_t root);

// Makes this process the one that inherits the processes its descendants
// leave orphaned (Linux's child subreaper), so that what a command it ran
// left behind stays below it, for KillDescendants. Returns false where the
// kernel refused.
bool AdoptOrphansOfDescendants();

// SIGKILLs every process below this one (DescendantsOf) and reaps those that
// become its children, waiting up to 1 s for them to end. Call only when no
// child of this process is still wanted: another part's child would be
// killed and reaped too.
void KillDescendants();

}  // namespace dropk

#endif  // DROPK_TOOLS_PROCESS_TREE_H_
