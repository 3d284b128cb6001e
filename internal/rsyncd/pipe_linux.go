package rsyncd

import (
	"os"

	"golang.org/x/sys/unix"
)

// growPipe asks for a 1 MiB pipe buffer (Linux's default is 64 KiB, and
// 1 MiB is the most an unprivileged process may ask: /proc/sys/fs/pipe-max-size),
// so that rsync writes on while the server encrypts what it wrote
// before, and each read takes more. Failing, the pipe keeps its size.
func growPipe(f *os.File) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) { unix.FcntlInt(fd, unix.F_SETPIPE_SZ, 1<<20) })
}
