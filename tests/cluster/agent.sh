#!/bin/sh
# Open MPI's launcher agent for the simulated hosts, used instead of ssh:
#   mpirun --mca plm_rsh_agent tests/cluster/agent.sh ...
# Open MPI runs `agent.sh [options] HOST COMMAND...` where COMMAND is a shell
# command line (as ssh would pass it). HOST is an address 10.77.0.N that
# lib.sh gave host N-1; the command runs there through on_host.sh.
while [ "${1#-}" != "$1" ]; do shift; done  # ssh-style options: none apply
host=$1
shift
i=$((${host##*.} - 1))
exec "$(dirname "$0")/on_host.sh" "$i" sh -c "$*"
