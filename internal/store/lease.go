package store

import (
	"context"
	"errors"
	"time"
)

// KeepLease renews a lease every period until ctx ends: renew is one
// renewal (RenewUpload, Heartbeat); when it fails with ErrLeaseLost, lost
// is called once and the renewals stop; other errors (the database was
// briefly away) go to warn, and the next period tries again. Every lease
// of the server (uploads, SFTP writers, processing jobs) is kept this way.
func KeepLease(ctx context.Context, period time.Duration, renew func(context.Context) error, lost func(error), warn func(error)) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			err := renew(ctx)
			switch {
			case errors.Is(err, ErrLeaseLost):
				lost(err)
				return
			case err != nil && ctx.Err() == nil:
				warn(err)
			}
		}
	}
}
