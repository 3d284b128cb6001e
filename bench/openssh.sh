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

# Each transfer: row ROUND LABEL SECONDS [NOTE] prints it and adds its time
# to its label's total. LABEL_WIDTH is the label column's width.
declare -A total
LABEL_WIDTH=${LABEL_WIDTH:-36}
row() {
  printf "%-6s %-${LABEL_WIDTH}s %8.2f %8.0f %s\n" "$1" "$2" "$3" "$(echo "$BYTES / 1048576 / $3" | bc -l)" "${4:-}"
  total[$2]=$(echo "${total[$2]:-0} + $3" | bc -l)
}

# rss_mark PID, the transfer, then rss_growth PID: sets growth (MiB, the
# peak during the transfer over the RSS before it) and growth_max.
growth_max=0
rss_mark() { rss_before=$(rss_kib "$1"); echo 5 > "/proc/$1/clear_refs"; }
rss_growth() {
  growth=$(( ($(hwm_kib "$1") - rss_before) / 1024 ))
  if [ "$growth" -gt "$growth_max" ]; then growth_max=$growth; fi
}

# summary THEIRS: the mean of each label, then upgrade-server's ratios each
# way to "<way> THEIRS" (OpenSSH, client defaults) and to "<way> openssh
# sshd, aes128-gcm" (the same cipher as upgrade-server's).
summary() {
  local k dir
  echo
  printf "%-$((LABEL_WIDTH + 2))s %8s\n" target "MiB/s (mean)"
  for k in "${!total[@]}"; do
    printf "%-$((LABEL_WIDTH + 2))s %8.0f\n" "$k" "$(echo "$BYTES * $ROUNDS / 1048576 / ${total[$k]}" | bc -l)"
  done | sort
  for dir in "upload  " "download"; do
    printf '%s upgrade-server / openssh (client defaults): %.2fx (target >= 0.90); / openssh with aes128-gcm: %.2fx\n' "$dir" \
      "$(echo "${total[$dir $1]} / ${total[$dir upgrade-server]}" | bc -l)" \
      "$(echo "${total[$dir openssh sshd, aes128-gcm]} / ${total[$dir upgrade-server]}" | bc -l)"
  done
}
