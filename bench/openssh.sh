# Sourced by bench/sftp.sh and bench/rsync.sh: OpenSSH's sshd as their
# baseline, and what both measure with. Expects WORK (the run's folder) and
# the array pids (killed at exit).

if [ ! -x /usr/sbin/sshd ]; then
  echo "installing openssh-server (for the baseline)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server >/dev/null
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
fresh_cache() { sync; echo 1 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
secs() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc -l; }

# start_sshd PUBKEY [CONFIG LINE…]: OpenSSH's sshd on a spare loopback port
# ($SSHD_PORT) with a throwaway config in $WORK/sshd, letting root in with
# PUBKEY; waits until it accepts connections.
start_sshd() {
  local pub=$1; shift
  SSHD_PORT=$(free_port)
  mkdir -p /run/sshd "$WORK/sshd"
  ssh-keygen -q -t ed25519 -N '' -f "$WORK/sshd/host_key"
  cp "$pub" "$WORK/sshd/authorized_keys"
  cat > "$WORK/sshd/config" <<CFG
Port $SSHD_PORT
ListenAddress 127.0.0.1
HostKey $WORK/sshd/host_key
PidFile $WORK/sshd/pid
AuthorizedKeysFile $WORK/sshd/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
CFG
  local line
  for line in "$@"; do echo "$line" >> "$WORK/sshd/config"; done
  /usr/sbin/sshd -D -f "$WORK/sshd/config" -E "$WORK/sshd/log" &
  pids+=($!)
  for _ in $(seq 1 50); do (echo > "/dev/tcp/127.0.0.1/$SSHD_PORT") 2>/dev/null && break; sleep 0.1; done
}
