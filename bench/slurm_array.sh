#!/usr/bin/env bash
# A real Slurm on this machine, running idl-predict as job arrays with --shard auto.
#
#   bench/slurm_array.sh MODEL_2D IMAGES MODEL_3D VOLUME [WORK]
#
# Starts a one-node Slurm (Debian's slurm-wlm and munge, installed when missing, configured for this
# host in WORK; nothing under /etc/slurm is touched), then submits
#   1. a 4-task array over the folder IMAGES with MODEL_2D (each task: every 4th file), and
#   2. a 4-task array over the blocks of one VOLUME written to OME-Zarr with MODEL_3D (each task:
#      every 4th block; the task that finishes the last block writes the mask and the metadata),
# waits for both, and checks each result against single-process idl-predict (files and volume
# identical), printing idl-predict --status of both folders. Where dask-jobqueue is installed, it
# also predicts the volume with --dask on a SLURMCluster of two worker jobs (docs/cluster.md's
# example). The daemons are stopped at the end.
# Needs root (the daemons, apt). Output: docs/cluster.md, "A real Slurm".
set -euo pipefail
if [ $# -lt 4 ]; then
    sed -n '2,14p' "$0"
    exit 2
fi
MODEL_2D=$(realpath "$1")
IMAGES=$(realpath "$2")
MODEL_3D=$(realpath "$3")
VOLUME=$(realpath "$4")
WORK=$(realpath "${5:-$(mktemp -d /tmp/idl-slurm.XXXX)}")
PREDICT=${IDL_PREDICT:-$(command -v idl-predict || true)}
if [ -z "$PREDICT" ]; then
    echo "idl-predict is not on PATH: activate idl's environment, or set IDL_PREDICT" >&2
    exit 2
fi
PYTHON=$(dirname "$(realpath "$PREDICT")")/python
BLOCK=${IDL_BLOCK_SIZE:-64}
mkdir -p "$WORK"
say() { echo "[slurm_array] ${SECONDS} s: $*"; }

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    say "installing slurm-wlm and munge"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurm-wlm munge > "$WORK/apt.log"
fi

cleanup() {
    say "stopping Slurm and munge"
    scontrol shutdown >/dev/null 2>&1 || true
    [ -f "$WORK/munged.pid" ] && kill "$(cat "$WORK/munged.pid")" 2>/dev/null || true
}
trap cleanup EXIT

# munge: a key of this run, a daemon of this run (its socket in WORK)
mkdir -p "$WORK/munge"
dd if=/dev/urandom of="$WORK/munge/munge.key" bs=1 count=1024 status=none
chmod 700 "$WORK/munge" && chmod 400 "$WORK/munge/munge.key"
SOCKET="$WORK/munge/munge.socket"
munged --force --key-file="$WORK/munge/munge.key" --socket="$SOCKET" --pid-file="$WORK/munged.pid" \
    --log-file="$WORK/munge/munged.log" --seed-file="$WORK/munge/seed"

HOST=$(hostname -s)
CPUS=$(nproc)
MEMORY=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024))
mkdir -p "$WORK/state" "$WORK/spool"
cat > "$WORK/slurm.conf" <<EOF
ClusterName=idl
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$SOCKET
CredType=cred/munge
StateSaveLocation=$WORK/state
SlurmdSpoolDir=$WORK/spool
SlurmctldPidFile=$WORK/slurmctld.pid
SlurmdPidFile=$WORK/slurmd.pid
SlurmctldLogFile=$WORK/slurmctld.log
SlurmdLogFile=$WORK/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MinJobAge=3600
NodeName=$HOST CPUs=$CPUS RealMemory=$MEMORY State=UNKNOWN
PartitionName=idl Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$WORK/slurm.conf"
slurmctld
slurmd
for _ in $(seq 60); do
    sinfo -h -o %T 2>/dev/null | grep -q idle && break
    sleep 1
done
sinfo
say "Slurm is up: $CPUS CPUs, one task per CPU"

say "single-process references"
"$PREDICT" "$MODEL_2D" "$IMAGES" --out "$WORK/one-files" --threads 1 --quiet
"$PREDICT" "$MODEL_3D" "$VOLUME" --out "$WORK/one-volume" --out-format zarr --block-size "$BLOCK" \
    --threads 1 --quiet

submit() {  # NAME ARGS...: a 4-task array of idl-predict ARGS --shard auto; prints its job id
    local name=$1
    shift
    sbatch --parsable --array=1-4 --cpus-per-task=1 --job-name="idl-$name" \
        --output="$WORK/$name-%a.log" \
        --wrap="$PREDICT $* --shard auto --threads 1 --quiet; echo \$? > $WORK/$name-\$SLURM_ARRAY_TASK_ID.rc"
}
start=$SECONDS
files=$(submit files "$MODEL_2D" "$IMAGES" --out "$WORK/array-files")
volume=$(submit volume "$MODEL_3D" "$VOLUME" --out "$WORK/array-volume" --out-format zarr --block-size "$BLOCK")
say "submitted job arrays $files (files) and $volume (blocks of one volume)"
squeue
while [ -n "$(squeue -h -j "$files,$volume" 2>/dev/null)" ]; do
    sleep 2
done
say "both arrays finished in $((SECONDS - start)) s"
for name in files volume; do
    for task in 1 2 3 4; do
        rc=$(cat "$WORK/$name-$task.rc" 2>/dev/null || echo missing)
        echo "  $name task $task: exit $rc; $(grep -c . "$WORK/$name-$task.log" || true) log line(s)"
        [ "$rc" = 0 ] || { cat "$WORK/$name-$task.log"; exit 1; }
    done
done
"$PREDICT" --status "$WORK/array-files"
"$PREDICT" --status "$WORK/array-volume"

if "$PYTHON" -c "import dask_jobqueue" 2>/dev/null; then
    say "dask-jobqueue: the volume on a SLURMCluster of two worker jobs"
    "$PYTHON" - "$PREDICT" "$MODEL_3D" "$VOLUME" "$WORK" "$BLOCK" <<'EOF'
import subprocess
import sys
import time

from dask_jobqueue import SLURMCluster
from distributed import Client

predict, model, volume, work, block = sys.argv[1:]
cluster = SLURMCluster(
    cores=1, processes=1, memory="4GB", walltime="00:30:00", python=sys.executable,
    job_extra_directives=[f"--output={work}/jobqueue-%j.log"], scheduler_options={"dashboard_address": None},
)
cluster.scale(jobs=2)
with Client(cluster) as client:
    start = time.perf_counter()
    client.wait_for_workers(2, timeout=300)
    print(f"  2 workers up in {time.perf_counter() - start:.0f} s, as Slurm jobs:")
    subprocess.run(["squeue"], check=True)
    subprocess.run(
        [predict, model, volume, "--out", f"{work}/jobqueue-volume", "--out-format", "zarr", "--block-size", block,
         "--dask", cluster.scheduler_address, "--threads", "1"],
        check=True,
    )
cluster.close()
EOF
fi

"$PYTHON" - "$WORK" <<'EOF'
import sys
from pathlib import Path

import numpy as np
import tifffile

from idl.infer.io.formats.ome_zarr import read_ome_zarr

work = Path(sys.argv[1])
one, array = sorted((work / "one-files").glob("*.tif")), sorted((work / "array-files").glob("*.tif"))
assert [p.name for p in one] == [p.name for p in array] and one, "the arrays wrote other files"
differ = [p.name for p, q in zip(one, array) if not np.array_equal(tifffile.imread(p), tifffile.imread(q))]
print(f"files: {len(array)} predictions of the 4-task array, {len(differ)} differ from one process")
for run in ("array-volume", "jobqueue-volume"):
    if not (work / run).is_dir():
        continue
    for name in sorted(p.name for p in (work / "one-volume").glob("*.ome.zarr")):
        a, b = read_ome_zarr(work / "one-volume" / name), read_ome_zarr(work / run / name)
        same = a.shape == b.shape and np.array_equal(a, b)
        print(f"{run}: {name} {a.shape} {a.dtype}: {'identical to' if same else 'DIFFERS from'} one process")
        differ += [] if same else [f"{run}/{name}"]
sys.exit(1 if differ else 0)
EOF
say "done: every result equals single-process idl-predict"
