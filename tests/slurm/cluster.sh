#!/usr/bin/env bash
# A single-node Slurm for the batch test, all of its state under one directory:
#   cluster.sh start DIR   starts munged, slurmctld and slurmd (config, state, logs and pid files
#                          in DIR) and waits until the node is idle; prints the SLURM_CONF path
#   cluster.sh stop DIR    stops the three daemons by their PIDs and waits for them to exit
# Needs root (slurmd runs jobs as their user) and Debian's slurmctld, slurmd, slurm-client, munge.
set -euo pipefail
command=$1
dir=$(realpath -m "$2")

stop() {
  for pid_file in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
    [ -s "$pid_file" ] || continue
    pid=$(cat "$pid_file")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pid_file"
  done
}

case $command in
start)
  mkdir -p "$dir"/{munge,state,spool,log}
  chown munge:munge "$dir/munge"
  chmod 0755 "$dir/munge"
  runuser -u munge -- munged --socket="$dir/munge/munge.socket" --pid-file="$dir/munge/munged.pid" \
    --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed"
  host=$(hostname -s)
  memory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 3 / 4 ))
  # Ports of our own, so that another Slurm on the machine is not disturbed.
  base=$(( 20000 + RANDOM % 20000 ))
  cat > "$dir/slurm.conf" <<CONF
ClusterName=impasto-test
SlurmctldHost=$host
SlurmUser=root
SlurmctldPort=$base
SlurmdPort=$(( base + 1 ))
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
NodeName=$host CPUs=$(nproc) RealMemory=$memory State=UNKNOWN
PartitionName=main Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
  export SLURM_CONF="$dir/slurm.conf"
  slurmctld -i
  slurmd
  for _ in $(seq 300); do
    if sinfo -h -o '%T' 2>/dev/null | grep -qx idle; then
      echo "$SLURM_CONF"
      exit 0
    fi
    sleep 0.2
  done
  echo "cluster.sh: the node did not become idle; logs in $dir/log" >&2
  stop
  exit 1
  ;;
stop) stop ;;
*) echo "usage: cluster.sh start|stop DIR" >&2; exit 2 ;;
esac
