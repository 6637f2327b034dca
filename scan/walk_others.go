//go:build !linux

package scan

import "context"

func (w *walk) run(ctx context.Context) error { return ErrNotSupported }
