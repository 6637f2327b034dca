package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"

	"github.com/heapd/heapd/heap"
	"github.com/heapd/heapd/internal/daemon"
)

const usage = `usage: heapd [flags]

heapd hands DMA-BUF file descriptors to unprivileged clients over a
SOCK_SEQPACKET Unix socket, after identifying them from the socket.

It listens on --socket, or on the socket systemd passes (socket activation,
ListenSequentialPacket=), and runs in the foreground. Under systemd it
reports READY=1 and STOPPING=1; elsewhere (openrc, runit, a container) it
just runs. SIGTERM or SIGINT: stop accepting, finish requests in progress,
exit. SIGHUP: re-discover heaps and tell subscribed clients.

flags:
`

func version() string {
	v := "(devel)"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		v = bi.Main.Version
	}
	return "heapd " + v
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("heapd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	var (
		socket      = fs.String("socket", daemon.DefaultSocket, "socket `path` (ignored under socket activation)")
		logLevel    = fs.String("log-level", "info", "log `level`: debug, info, warn or error")
		maxConns    = fs.Int("max-connections", 256, "most open connections")
		maxPerUID   = fs.Int("max-connections-per-uid", 64, "most open connections of one uid")
		maxInFlight = fs.Int("max-inflight", 4, "most requests in progress per connection")
		showVersion = fs.Bool("version", false, "print the version and exit")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (see heapd --help)", fs.Args())
	}
	if *showVersion {
		fmt.Fprintln(stdout, version())
		return nil
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", *logLevel)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	// SIGHUP before anything slow, so an early one is not fatal.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	ln, err := daemon.Activated()
	if err != nil {
		return err
	}
	if ln == nil {
		if ln, err = daemon.Listen(*socket, log); err != nil {
			return err
		}
	}
	defer ln.Close()
	where := ln.Path
	if ln.Activated {
		where = "socket passed by systemd"
	}

	reg, err := heap.Open(&heap.Config{Logger: log})
	if err != nil {
		return err
	}
	defer reg.Close()
	srv, err := daemon.New(daemon.Config{
		Heaps:          reg,
		Logger:         log,
		Version:        version(),
		MaxConns:       *maxConns,
		MaxConnsPerUID: *maxPerUID,
		MaxInFlight:    *maxInFlight,
		Stopping: func() {
			log.Info("stopping: finishing requests in progress")
			if _, err := daemon.Notify("STOPPING=1"); err != nil {
				log.Warn("sd_notify failed", "err", err)
			}
		},
	})
	if err != nil {
		return err
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	hctx, stopHup := context.WithCancel(ctx)
	defer stopHup()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-hup:
				log.Info("SIGHUP: re-discovering heaps")
				if err := srv.Rescan(); err != nil {
					log.Error("re-discovering heaps failed", "err", err)
				}
			case <-hctx.Done():
				return
			}
		}
	}()

	var names []string
	for _, h := range reg.List() {
		names = append(names, h.Name)
	}
	log.Info("serving", "version", version(), "socket", where, "heaps", strings.Join(names, ","), "pid", os.Getpid())
	if _, err := daemon.Notify("READY=1\nSTATUS=serving on " + where); err != nil {
		log.Warn("sd_notify failed", "err", err)
	}
	err = srv.Serve(ctx, ln.UnixListener)
	stopHup()
	if err == nil {
		log.Info("stopped")
	}
	return err
}
