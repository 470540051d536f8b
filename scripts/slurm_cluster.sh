#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine (Debian's slurm-wlm 22.05 + munge), for the tests
# (tests/test_slurm_e2e.py) and to try the README's Slurm recipe without a cluster.
#
#   bash scripts/slurm_cluster.sh start    # install if missing, configure, start; prints `export SLURM_CONF=...`
#   bash scripts/slurm_cluster.sh status   # daemons, sinfo, squeue
#   bash scripts/slurm_cluster.sh stop     # cancel every job of this cluster, stop its daemons
#   bash scripts/slurm_cluster.sh env      # prints `export SLURM_CONF=...`
#
#   eval "$(bash scripts/slurm_cluster.sh start)"    # then sinfo, sbatch, sacct, glan-local -m hydra/launcher=slurm ...
#
# Needs root (slurmd runs jobs as their user) and, the first time, apt-get: it installs slurm-wlm,
# munge, slurmdbd and mariadb-server when missing (quietly; log in $GLAN_SLURM_DIR/log/apt.log).
# Re-runnable: `start` on a running cluster checks it and returns; state (job ids, accounting) is
# kept across stop/start. Everything it writes is under GLAN_SLURM_DIR (default
# /var/lib/glan-slurm); nothing in /etc is touched, so clients need SLURM_CONF (printed by start/env).
#
# What runs (each started here, each stopped by its pid file):
#   munged     own key and socket under $DIR/munge (the system munge, if any, is left alone)
#   mariadbd   own data directory under $DIR/mysql, on 127.0.0.1:$GLAN_SLURM_DB_PORT (3307)
#   slurmdbd   accounting: plain `sacct` works (hydra-submitit-launcher polls it to see a job end)
#   slurmctld  + slurmd: one node `localhost` with this machine's CPUs (nproc) and its memory
#              minus headroom, partition $GLAN_SLURM_PARTITION (default `local`)
# Plugins: select/cons_tres with CR_Core_Memory (CPUs and memory are scheduled), proctrack/linuxproc
# and task/none (no cgroups: nothing enforces a job's memory or pins its CPUs; scancel still
# reaches every process of the job), jobacct_gather/linux (sacct's MaxRSS), and jobcomp/filetxt
# beside slurmdbd ($DIR/log/jobcomp.txt, also readable with `sacct -c`). Why slurmdbd: with
# accounting_storage/none plain `sacct` prints nothing, so hydra-submitit-launcher never learns that
# a job was cancelled (it waits forever); jobcomp/filetxt alone only serves `sacct -c`.
# cgroup v1 controllers were writable in this machine's container, but nothing here relies on them.
set -euo pipefail

DIR=${GLAN_SLURM_DIR:-/var/lib/glan-slurm}
PARTITION=${GLAN_SLURM_PARTITION:-local}
CLUSTER=${GLAN_SLURM_CLUSTER:-glan}
PORT=${GLAN_SLURM_PORT:-6817}          # slurmctld; slurmd +1, slurmdbd +2
DB_PORT=${GLAN_SLURM_DB_PORT:-3307}
HEADROOM_MB=${GLAN_SLURM_HEADROOM_MB:-1024}   # memory kept back from Slurm for the OS and daemons
CONF=$DIR/etc/slurm.conf
MUNGE_SOCKET=$DIR/munge/munge.socket
DB_SOCKET=$DIR/mysql/mysqld.sock
export SLURM_CONF=$CONF

say() { echo "[slurm-cluster] $*" >&2; }
die() { echo "[slurm-cluster] error: $*" >&2; exit 1; }

# name -> pid file and the process name it must have (a stale pid file never kills another process)
pidfile() { echo "$DIR/run/$1.pid"; }
alive() {   # alive NAME COMM
  local f pid
  f=$(pidfile "$1")
  [ -s "$f" ] || return 1
  pid=$(tr -dc 0-9 <"$f")
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$2" ]
}
pid_of() { tr -dc 0-9 <"$(pidfile "$1")"; }

stop_daemon() {   # stop_daemon NAME COMM
  alive "$1" "$2" || { rm -f "$(pidfile "$1")"; return 0; }
  local pid i
  pid=$(pid_of "$1")
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do
    [ -d "/proc/$pid" ] || break
    sleep 0.2
  done
  if [ -d "/proc/$pid" ]; then
    say "$1 (pid $pid) did not stop in 20 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$(pidfile "$1")"
  say "stopped $1 (pid $pid)"
}

need_install() {
  local c
  for c in munged mungekey slurmctld slurmd slurmdbd sbatch sacct sacctmgr mariadbd mariadb-install-db mariadb; do
    command -v "$c" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin command -v "$c" >/dev/null 2>&1 || return 0
  done
  [ -e /usr/lib/x86_64-linux-gnu/slurm-wlm/accounting_storage_mysql.so ] || \
    ls /usr/lib/*/slurm-wlm/accounting_storage_mysql.so >/dev/null 2>&1 || return 0
  return 1
}

install() {
  need_install || return 0
  [ "$(id -u)" = 0 ] || die "slurm-wlm, munge, slurmdbd and mariadb-server are missing and this is not root: install them, or run as root"
  command -v apt-get >/dev/null 2>&1 || die "slurm-wlm, munge, slurmdbd and mariadb-server are missing and there is no apt-get: install them with your package manager"
  say "installing slurm-wlm, munge, slurmdbd, mariadb-server with apt-get (log: $DIR/log/apt.log)"
  mkdir -p "$DIR/log"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      slurm-wlm slurm-client munge slurmdbd slurm-wlm-mysql-plugin mariadb-server mariadb-client; } \
    >"$DIR/log/apt.log" 2>&1 || { tail -20 "$DIR/log/apt.log" >&2; die "apt-get install failed (log above)"; }
  export PATH=$PATH:/usr/sbin:/sbin
  need_install && die "installed, but a command is still missing (see $DIR/log/apt.log)"
  return 0
}

mem_mb() { awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo; }

node_line() {
  # This machine's CPUs as Slurm sees them (slurmd -C: sockets, cores, threads), when they agree
  # with nproc; RealMemory from /proc/meminfo minus headroom.
  local cpus real hw
  cpus=$(nproc)
  real=$(( $(mem_mb) - HEADROOM_MB ))
  [ "$real" -gt 512 ] || real=$(( $(mem_mb) / 2 ))
  hw=$(slurmd -C 2>/dev/null | head -1 | tr ' ' '\n' | grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=' | tr '\n' ' ' || true)
  if ! echo "$hw" | grep -q "CPUs=$cpus "; then hw="CPUs=$cpus "; fi
  echo "NodeName=localhost NodeAddr=127.0.0.1 ${hw}RealMemory=$real State=UNKNOWN"
}

write_if_changed() {   # write_if_changed FILE MODE < content; returns 0 when it changed
  local f=$1 mode=$2 tmp
  tmp=$(mktemp "$f.XXXXXX")
  cat >"$tmp"
  chmod "$mode" "$tmp"
  if [ -f "$f" ] && cmp -s "$tmp" "$f"; then rm -f "$tmp"; return 1; fi
  mv "$tmp" "$f"
  return 0
}

configure() {
  mkdir -p "$DIR"/{etc,run,log,spool/ctld,spool/d,munge,mysql}
  chmod 0700 "$DIR/munge" "$DIR/mysql"
  [ -s "$DIR/etc/db.pass" ] || { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/etc/db.pass"; }
  chmod 0600 "$DIR/etc/db.pass"
  local changed=1
  write_if_changed "$CONF" 0644 <<EOF && changed=0
# Written by scripts/slurm_cluster.sh: a one-node cluster on this machine. Do not edit (rewritten at start).
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$DIR/spool/ctld
SlurmdSpoolDir=$DIR/spool/d
SlurmctldPidFile=$(pidfile slurmctld)
SlurmdPidFile=$(pidfile slurmd)
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
KillWait=30
MinJobAge=300
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=10
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$((PORT + 2))
AccountingStoragePass=$MUNGE_SOCKET
# ^ with slurmdbd this is the munge socket that clients use to talk to it (AuthInfo is not used there)
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.txt
$(node_line)
PartitionName=$PARTITION Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
  write_if_changed "$DIR/etc/slurmdbd.conf" 0600 <<EOF && changed=0
# Written by scripts/slurm_cluster.sh. Do not edit (rewritten at start).
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdPort=$((PORT + 2))
SlurmUser=root
LogFile=$DIR/log/slurmdbd.log
PidFile=$(pidfile slurmdbd)
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$(cat "$DIR/etc/db.pass")
StorageLoc=glan_slurm_acct
EOF
  return $changed
}

start_munge() {
  alive munged munged && return 0
  [ -s "$DIR/munge/munge.key" ] || mungekey -c -k "$DIR/munge/munge.key" >/dev/null 2>&1 \
    || dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
  chmod 0400 "$DIR/munge/munge.key"
  rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
  munged --force --num-threads=10 --key-file="$DIR/munge/munge.key" --socket="$MUNGE_SOCKET" --pid-file="$(pidfile munged)" \
    --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed" </dev/null >>"$DIR/log/munged.log" 2>&1 \
    || die "munged did not start: $(tail -3 "$DIR/log/munged.log")"
  say "started munged (pid $(pid_of munged))"
}

db() { mariadb --no-defaults --connect-timeout=5 --socket="$DB_SOCKET" -uroot "$@"; }

start_db() {
  if ! alive mariadbd mariadbd; then
    if [ ! -d "$DIR/mysql/data/mysql" ]; then
      say "creating the accounting database in $DIR/mysql/data"
      mariadb-install-db --no-defaults --datadir="$DIR/mysql/data" --user=root --skip-test-db \
        --auth-root-authentication-method=socket >"$DIR/log/mariadb-install.log" 2>&1 \
        || die "mariadb-install-db failed: see $DIR/log/mariadb-install.log"
    fi
    rm -f "$DB_SOCKET"
    setsid mariadbd --no-defaults --user=root --datadir="$DIR/mysql/data" --socket="$DB_SOCKET" \
      --port="$DB_PORT" --bind-address=127.0.0.1 --pid-file="$(pidfile mariadbd)" --log-error="$DIR/log/mariadbd.log" \
      --innodb-buffer-pool-size=128M --innodb-log-file-size=64M --innodb-lock-wait-timeout=900 --skip-name-resolve \
      </dev/null >>"$DIR/log/mariadbd.log" 2>&1 &
    wait_for 60 db -e 'SELECT 1' || die "mariadbd did not start: $(tail -5 "$DIR/log/mariadbd.log")"
    say "started mariadbd (pid $(pid_of mariadbd), 127.0.0.1:$DB_PORT)"
  fi
  local pass
  pass=$(cat "$DIR/etc/db.pass")
  db -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$pass';
         ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$pass';
         GRANT ALL ON glan_slurm_acct.* TO 'slurm'@'127.0.0.1';" \
    || die "could not create the accounting database user"
}

wait_for() {   # wait_for SECONDS COMMAND...: until COMMAND succeeds
  local end=$((SECONDS + $1))
  shift
  while [ $SECONDS -lt $end ]; do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.3
  done
  return 1
}

start_slurm() {
  if ! alive slurmdbd slurmdbd; then
    slurmdbd </dev/null >>"$DIR/log/slurmdbd.log" 2>&1 || die "slurmdbd did not start: $(tail -5 "$DIR/log/slurmdbd.log")"
    wait_for 60 timeout 10 sacctmgr -n list cluster || die "slurmdbd does not answer: $(tail -5 "$DIR/log/slurmdbd.log")"
    say "started slurmdbd (pid $(pid_of slurmdbd))"
  fi
  if [ -z "$(sacctmgr -n -P list cluster "$CLUSTER" format=cluster 2>/dev/null)" ]; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "sacctmgr could not add cluster $CLUSTER"
  fi
  if ! alive slurmctld slurmctld; then
    slurmctld -f "$CONF" </dev/null >>"$DIR/log/slurmctld.log" 2>&1 || die "slurmctld did not start: $(tail -5 "$DIR/log/slurmctld.log")"
    wait_for 60 timeout 10 scontrol ping || die "slurmctld does not answer: $(tail -5 "$DIR/log/slurmctld.log")"
    say "started slurmctld (pid $(pid_of slurmctld))"
  fi
  if ! alive slurmd slurmd; then
    slurmd -f "$CONF" -N localhost </dev/null >>"$DIR/log/slurmd.log" 2>&1 || die "slurmd did not start: $(tail -5 "$DIR/log/slurmd.log")"
    wait_for 30 test -s "$(pidfile slurmd)" || true
    say "started slurmd (pid $(pid_of slurmd 2>/dev/null || echo ?))"
  fi
  local state end=$((SECONDS + 60))
  while [ $SECONDS -lt $end ]; do
    state=$(timeout 10 sinfo -h -N -n localhost -o %T 2>/dev/null | head -1 || true)
    case "$state" in
      idle|mixed|allocated|completing) break ;;
      drain*|down*|fail*)
        # a node left down by an earlier unclean stop comes back; a real mismatch says why below
        scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.2
  done
  case "$state" in
    idle|mixed|allocated|completing) ;;
    *) die "node localhost is '${state:-unknown}' ($(sinfo -h -N -n localhost -o %E 2>/dev/null)); see $DIR/log/slurmd.log and slurmctld.log" ;;
  esac
}

start() {
  [ "$(id -u)" = 0 ] || die "needs root: slurmd runs every job as its user"
  mkdir -p "$DIR/log"
  install
  export PATH=$PATH:/usr/sbin:/sbin
  if configure && { alive slurmctld slurmctld || alive slurmd slurmd || alive slurmdbd slurmdbd; }; then
    say "configuration changed: restarting the daemons"
    stop_daemons
  fi
  start_munge
  start_db
  start_slurm
  say "up: $(sinfo -h -o '%P %a %D %T %c CPUs %m MB' | head -1) (SLURM_CONF=$CONF)"
  echo "export SLURM_CONF=$CONF"
}

stop_daemons() {
  stop_daemon slurmd slurmd
  stop_daemon slurmctld slurmctld
  stop_daemon slurmdbd slurmdbd
  stop_daemon mariadbd mariadbd
  stop_daemon munged munged
}

no_jobs() { [ -z "$(timeout 10 squeue -h -o %A 2>/dev/null)" ]; }

stop() {
  export PATH=$PATH:/usr/sbin:/sbin
  if alive slurmctld slurmctld; then
    local jobs
    jobs=$(timeout 10 squeue -h -o %A 2>/dev/null | tr '\n' ' ' || true)
    if [ -n "${jobs// /}" ]; then
      say "cancelling jobs: $jobs"
      # shellcheck disable=SC2086
      timeout 10 scancel $jobs 2>/dev/null || true
      wait_for 90 no_jobs || say "jobs still listed after 90 s: $(squeue -h 2>/dev/null)"
    fi
  fi
  stop_daemons
}

status() {
  export PATH=$PATH:/usr/sbin:/sbin
  local name up=0
  for name in munged mariadbd slurmdbd slurmctld slurmd; do
    if alive "$name" "$name"; then echo "$name: running (pid $(pid_of "$name"))"; else echo "$name: stopped"; up=1; fi
  done
  if [ $up = 0 ]; then
    echo "SLURM_CONF=$CONF"
    sinfo -N -o '%N %P %T %c %m %E'
    squeue
  fi
  return $up
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) echo "usage: $0 start|stop|status|env   (GLAN_SLURM_DIR=$DIR)" >&2; exit 2 ;;
esac
