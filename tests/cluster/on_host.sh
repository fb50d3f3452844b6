#!/bin/sh
# on_host.sh I COMMAND...: runs COMMAND on simulated host I of the cluster
# that lib.sh made (DROPK_CLUSTER_ID, DROPK_CLUSTER_DIR in the environment):
# in the host's network namespace, in a fresh mount namespace (`ip netns
# exec` makes one, slave to the root) where the host's own disk directory
# is bind-mounted over $DROPK_CLUSTER_DIR/local, and in a UTS namespace
# with its own hostname (h0, h1, ...), as separate machines would have:
# Open MPI tells nodes apart by name too.
set -e
i=$1
shift
exec ip netns exec "${DROPK_CLUSTER_ID}h$i" unshare --uts sh -c \
  'hostname "$1" && mount --bind "$2" "$3" && shift 3 && exec "$@"' \
  sh "h$i" "$DROPK_CLUSTER_DIR/disk/h$i" "$DROPK_CLUSTER_DIR/local" "$@"
